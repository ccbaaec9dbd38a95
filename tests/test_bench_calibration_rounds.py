"""scripts/bench_calibration_rounds.py: both calibration protocols run for real on tiny students (one
process per model and round vs one `bench_many` process per round), and its one-line refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_calibration_rounds.py"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_tiny_side_by_side_run_prints_both_protocols_and_a_json_line(tmp_path):
    out = _run("--space", "micro", "--count", "2", "--campaigns", "2", "--work", str(tmp_path / "w"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["students"] == 2 and res["rounds"] == {"per-model": 2, "bench-many": 8}
    for name in ("per-model", "bench-many"):
        assert len(res["agreement_within_10pct"][name]) == 1  # one pair of campaigns
        assert 0.0 <= res["agreement_median"][name] <= 1.0 and res["wall_s_median"][name] > 0
    assert "campaign 2/2 per-model" in out.stdout and "campaign 2/2 bench-many" in out.stdout


def test_too_few_campaigns_is_refused_in_one_line(tmp_path):
    out = _run("--campaigns", "1", cwd=tmp_path)
    assert out.returncode == 2 and "--campaigns must be >= 2" in out.stderr and not (tmp_path / "runs").exists()
