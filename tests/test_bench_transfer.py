"""scripts/bench_transfer.py's offline pieces (nothing is timed here): how it scores the agreement of two
measurement runs, the ceiling its within-10 % tables are read against."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_transfer", ROOT / "scripts" / "bench_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_repeatability_divides_out_the_runs_speed_ratio_and_scores_the_held_out_students(bench):
    run1 = {"ort-t2": {"s1": 1.0, "s2": 2.0, "s3": 4.0, "h1": 1.0, "h2": 3.0}}
    # run 2 is 2x slower overall; h2 is 1.5x further off (3 -> 9 instead of 6), s3 5 % (4 -> 8.4)
    run2 = {"ort-t2": {"s1": 2.0, "s2": 4.0, "s3": 8.4, "h1": 2.0, "h2": 9.0}, "other": {"s1": 1.0}}
    rep = bench.repeatability(run1, run2, held=["h1", "h2"])
    assert list(rep) == ["ort-t2"]  # only configurations both runs measured
    r = rep["ort-t2"]
    assert r["students"] == 5 and r["within_10pct"] == 0.8  # median ratio 2: ratios 1, 1, 1.05, 1, 1.5
    assert r["held_within_10pct"] == 0.5  # h1 agrees, h2 does not
    assert r["min"] == 1.0 and r["max"] == 1.5
