"""scripts/bench_distill.py refuses bad data with one line and exit 2, before training anything."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _bench(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_distill.py"), "--work", str(tmp / "work"), *args],
                          capture_output=True, text=True, timeout=120)


def test_labels_that_skip_a_class_are_refused_clearly(tmp_path: Path):
    rng = np.random.default_rng(0)
    path = tmp_path / "gappy.npz"
    np.savez(path, x=rng.integers(0, 255, size=(30, 8, 8), dtype=np.uint8), y=np.array([0, 2, 5] * 10))
    res = _bench("--data", str(path), tmp=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "class 1 has no samples" in lines[0] and "0..5" in lines[0]
    assert not (tmp_path / "work" / "teachers").exists() or not any((tmp_path / "work" / "teachers").iterdir())


def test_missing_file_is_refused_clearly(tmp_path: Path):
    res = _bench("--data", str(tmp_path / "nope.npz"), tmp=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_run_key_is_what_the_run_does_not_how_it_was_spelled():
    """A run asked for with a relative shift reuses one asked for in pixels at the same image size,
    and a student spec's key order does not matter; anything that changes the run changes the key."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_distill import run_key

    from edgekd.config import config_from_dict, config_to_dict

    def cfg(student="cnn:width=8,depth=3", **augment):
        return config_to_dict(config_from_dict({"student": student, "augment": {"shift": 0, "draws": 8, **augment}}))

    pixels = run_key("t", "fp", cfg(shift=2), (28, 28))
    assert run_key("t", "fp", cfg(shift_fraction=0.075), (28, 28)) == pixels
    assert run_key("t", "fp", cfg("cnn:depth=3,width=8", shift=2), (28, 28)) == pixels
    assert run_key("t", "fp", cfg(shift_fraction=0.075), (8, 8)) != run_key("t", "fp", cfg(shift=2), (8, 8))
    assert run_key("t", "fp", cfg(shift=1), (28, 28)) != pixels
    assert run_key("other", "fp", cfg(shift=2), (28, 28)) != pixels
