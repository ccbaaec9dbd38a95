"""A small device profile built from REAL measurements, shared by the latency / select / deploy tests.

Untrained students are exported by the real ONNX Runtime adapter and benchmarked on this machine in
fresh runner processes (`--device inprocess`), through `edgekd.latency.calibrate.run_calibration` itself.
Built once per test session (the module-level memo survives being imported by several test files).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

# short timing loops: the tests check plumbing and sanity, scripts/bench_select.py checks accuracy
FAST_REQUEST = {"warmup_count": 5, "warmup_s": 0.05, "min_count": 50, "min_s": 0.15}
COUNT = 6

_built: dict[str, Any] = {}


def calibrated_profile(root: Path) -> dict[str, Any]:
    """{"path": profile.yaml, "work_dir": export cache, "report": calibration report}; built once."""
    if "report" not in _built:
        from edgekd.latency.calibrate import run_calibration

        root.mkdir(parents=True, exist_ok=True)
        work = root / "exports"
        path = root / "cpu-test.yaml"
        report = run_calibration(device="inprocess", target="cpu", profile=str(path), count=COUNT, threads=1,
                                 work_dir=str(work), request=FAST_REQUEST)
        _built.update(path=path, work_dir=work, report=report)
    return dict(_built)


def copy_profile(src: Path, dst_dir: Path) -> Path:
    """A private copy of a profile a test may change."""
    dst = dst_dir / src.name
    shutil.copy(src, dst)
    return dst
