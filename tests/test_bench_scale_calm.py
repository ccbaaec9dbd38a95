"""scripts/bench_scale.py --calm-rounds: after --rounds it measures more full rounds until that many were
calm (the speed anchor's round median within 20 % of its floor) or --calm-wait-s is over, and says which.
A real subprocess measuring two real ONNX Runtime exports on this machine; the figures are not judged."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_calm_rounds_measures_more_rounds_until_enough_were_calm_or_the_wait_is_over(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--quick", "--runtimes",
                          "onnxruntime", "--precisions", "fp32", "--rounds", "1", "--calm-rounds", "2",
                          "--calm-wait-s", "5", "--min-s", "0.02", "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    ratios = out["anchor_round_ratio"]
    measured = [len(r["rounds"]) for r in out["rows"] if r.get("rounds")]
    # one round can hold at most one calm round: a second was always measured, every row in every round
    assert len(measured) == 2 and set(measured) == {len(ratios)} and len(ratios) >= 2
    assert out["calm_rounds"] + out["slow_rounds"] == len(ratios)
    assert out["calm_rounds"] == sum(v <= 1.2 for v in ratios)
    # it stopped for one of its two reasons, and says so when it was the wait
    assert out["calm_rounds"] >= 2 or "--calm-wait-s 5 is over" in res.stderr
    assert "rounds calm (want 2)" in res.stderr
