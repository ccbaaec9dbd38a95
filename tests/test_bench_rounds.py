"""scripts/bench_rounds.py: how it scores two measuring campaigns (offline, crafted rounds), a real
tiny run end to end, and its one-line refusals."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_rounds.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_rounds", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _round(p50: float, anchor: float) -> dict:
    return {"p50_ms": p50, "anchor_p50_ms": anchor, "anchor_ratio_p50": p50 / anchor}


def test_a_fast_round_late_in_a_campaign_makes_the_kept_estimate_agree_and_the_median_does_not(bench):
    """Student s is 1.0 ms undisturbed and 1.5 ms in a slow stretch, where the anchor slows 1.8x (more
    than the model, as measured on the Xeon VM). Campaign 1 is fast in rounds 1-2, campaign 2 only in
    round 3. Up to R = 2 campaign 2 has no calm round: its kept estimate is the anchor-rescaled one
    (1.5 / 1.8 = 0.83 ms, 1.2x off) and its lowest p50 1.5 ms; from R = 3 both agree with campaign 1.
    The median of the rounds stays 1.0 vs 1.5. Student t never changes."""
    fast, slow = _round(1.0, 0.01), _round(1.5, 0.018)
    steady = [_round(2.0, 0.01)] * 3
    first = {"ort-t1": {"s": [fast, fast, slow], "t": steady}}
    second = {"ort-t1": {"s": [slow, slow, fast], "t": steady}}
    res = bench.agreement(first, second, 3)
    share, worst = res["repeat_within_10pct"], res["worst_ratio"]
    assert share["kept"]["ort-t1"] == share["lowest"]["ort-t1"] == {1: 0.5, 2: 0.5, 3: 1.0, "all": 1.0}
    assert worst["kept"]["ort-t1"][1] == pytest.approx(1.2) and worst["lowest"]["ort-t1"][1] == 1.5
    assert worst["kept"]["ort-t1"][3] == worst["lowest"]["ort-t1"][3] == 1.0
    assert share["median"]["ort-t1"] == {1: 0.5, 2: 0.5, 3: 0.5, "all": 0.5} and worst["median"]["ort-t1"][3] == 1.5


def test_a_tiny_real_run_prints_a_table_and_a_json_line_and_reloads_the_same(tmp_path):
    saved = tmp_path / "rounds.json"
    cmd = [sys.executable, str(SCRIPT), "--space", "micro", "--students", "2", "--rounds", "2", "--min-s", "0.02",
           "--configs", "ort-t1", "--calm-s", "1", "--save", str(saved)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rounds"] == 2 and out["students"] == 2
    for est in ("kept", "lowest", "median"):
        shares = out["repeat_within_10pct"][est]["ort-t1"]
        assert set(shares) == {"1", "2", "all"} and all(0.0 <= v <= 1.0 for v in shares.values())
        assert all(v >= 1.0 for v in out["worst_ratio"][est]["ort-t1"].values())
    assert "campaign 2 round 2/2" in proc.stdout
    again = subprocess.run([sys.executable, str(SCRIPT), "--load", str(saved)], capture_output=True, text=True,
                           timeout=120, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    reloaded = json.loads(again.stdout.strip().splitlines()[-1])
    assert reloaded["repeat_within_10pct"] == out["repeat_within_10pct"]


@pytest.mark.parametrize("args,words", [
    (["--configs", "ort-t3"], "unknown --configs ort-t3; use some of ort-t1, ort-t2, ort-noopt, openvino"),
    (["--rounds", "0"], "--rounds must be >= 1, --students >= 2, --min-s > 0 and --calm-s >= 0"),
    (["--calm-s", "-1"], "--rounds must be >= 1, --students >= 2, --min-s > 0 and --calm-s >= 0"),
    (["--load", "MISSING"], "--load MISSING: not a file written by --save (FileNotFoundError"),
    (["--load", "GARBLED"], "--load GARBLED: not a file written by --save (JSONDecodeError"),
])
def test_bad_arguments_and_files_are_refused_in_one_line(args, words, tmp_path):
    (tmp_path / "GARBLED").write_text("{not json")
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and words in proc.stderr
    assert not proc.stdout
