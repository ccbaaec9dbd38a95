"""scripts/bench_scale.py keeps measurements in --store across runs and re-evaluates them --offline
(a real subprocess of the script; nothing is timed here)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = "resnet_basic:depth=10,resolution=96,width=32"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_scale.py"), *args], capture_output=True,
                          text=True, timeout=300)


def test_offline_needs_a_store_and_refuses_a_bad_one(tmp_path):
    res = _run("--offline")
    assert res.returncode == 2 and "--store" in res.stderr
    bad = tmp_path / "store.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    res = _run("--offline", "--store", str(bad), "--specs", SPEC, "--runtimes", "onnxruntime")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith("error: ") and "not a bench_scale store" in res.stderr


def test_offline_reports_the_stored_rows(tmp_path):
    store = tmp_path / "store.json"
    row = {"spec": SPEC, "runtime": "onnxruntime", "precision": "fp32", "resolution": 96, "params": 1, "macs": 1,
           "p50_ms": 0.8, "p90_ms": 0.9, "cv": 0.1, "error": None, "load": {"before": [1.0], "after": [1.0]}}
    store.write_text(json.dumps({"rows": [row]}), encoding="utf-8")
    res = _run("--offline", "--store", str(store), "--specs", SPEC, "--runtimes", "onnxruntime")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    rows = {(r["runtime"], r["precision"]): r for r in out["rows"]}
    assert rows[("onnxruntime", "fp32")]["p50_ms"] == 0.8
    assert rows[("onnxruntime", "int8")]["p50_ms"] is None and "not in --store" in rows[("onnxruntime", "int8")]["error"]
    assert out["int8_ratio"] == {"onnxruntime": None} and out["failed"] == 1
    assert out["measured_load"] == [json.dumps(row["load"])]


def test_offline_reports_the_repeatability_of_stored_rounds(tmp_path):
    """repeat_within_10pct compares the estimate from the first half of a row's rounds with the second's:
    the calm round (speed anchor near the floor) with the lowest p50 wins over a faster-looking disturbed one."""
    store = tmp_path / "store.json"
    other = "mobilenetv2:resolution=96,width=0.35"

    def row(spec: str, rounds: list[tuple[float, float]]) -> dict:
        return {"spec": spec, "runtime": "onnxruntime", "precision": "fp32", "resolution": 96, "params": 1, "macs": 1,
                "p50_ms": min(p for p, _ in rounds), "p90_ms": None, "error": None, "anchor_floor_ms": 0.01,
                "rounds": [{"p50_ms": p, "anchor_p50_ms": a, "anchor_ratio_p50": p / a} for p, a in rounds]}

    # SPEC: calm 1.00 / 1.05 in both halves -> agrees. other: half one calm 1.0; half two a disturbed 0.95
    # (anchor 1.8x the floor) and a calm 1.3 -> the calm 1.3 is its estimate: 30 % apart; raw 0.95 vs 1.0 agree
    rows = [row(SPEC, [(1.0, 0.01), (1.03, 0.0101), (1.05, 0.0102), (1.02, 0.01)]),
            row(other, [(1.0, 0.01), (1.1, 0.0105), (0.95, 0.018), (1.3, 0.0101)])]
    store.write_text(json.dumps({"rows": rows}), encoding="utf-8")
    res = _run("--offline", "--store", str(store), "--specs", SPEC, other, "--runtimes", "onnxruntime",
               "--precisions", "fp32")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["repeat_within_10pct"] == {"onnxruntime/fp32": 0.5}
    assert out["repeat_raw_within_10pct"] == {"onnxruntime/fp32": 1.0}
    # the machine's state per round (median over the rows of anchor / floor): round 3 was slow
    assert out["anchor_round_ratio"] == [1.0, 1.03, 1.41, 1.005] and out["slow_rounds"] == 1
    assert "slow (> 1.2x) in 1 of 4 rounds" in res.stdout and "slow most of the run" not in res.stdout


def test_offline_does_not_reuse_int8_rows_of_another_quantization_recipe(tmp_path):
    """A stored INT8 row measured another recipe's artifact (e.g. ONNX Runtime S8 activations, as every
    x86 export before U8 was) or records none: not this machine's export now, so it is not reported."""
    from edgekd.agent.fingerprint import device_fingerprint
    from edgekd.device.identity import hardware_identity
    from edgekd.runtimes.int8_settings import device_recipe

    here = device_recipe("onnxruntime", "int8", hardware_identity(device_fingerprint()))
    x86 = device_recipe("onnxruntime", "int8", {"arch": "x86_64", "isa": ["avx2", "avx512_vnni"]})
    arm = device_recipe("onnxruntime", "int8", {"arch": "aarch64", "isa": ["asimd", "asimddp"]})
    another = arm if here == x86 else x86
    other = SPEC.replace("width=32", "width=16")
    third = SPEC.replace("width=32", "width=8")

    def row(spec: str, recipe: str | None) -> dict:
        out = {"spec": spec, "runtime": "onnxruntime", "precision": "int8", "resolution": 96, "params": 1, "macs": 1,
               "p50_ms": 0.5, "p90_ms": 0.6, "error": None}
        return {**out, "recipe": recipe} if recipe else out

    store = tmp_path / "store.json"
    store.write_text(json.dumps({"rows": [row(SPEC, here), row(other, another),
                                          row(third, None)]}), encoding="utf-8")
    res = _run("--offline", "--store", str(store), "--specs", SPEC, other, third, "--runtimes", "onnxruntime",
               "--precisions", "int8")
    assert res.returncode == 0, res.stderr
    rows = {r["spec"]: r for r in json.loads(res.stdout.strip().splitlines()[-1])["rows"]}
    assert rows[SPEC]["p50_ms"] == 0.5
    assert rows[other]["p50_ms"] is None and rows[third]["p50_ms"] is None
    assert "2 INT8 rows of another quantization recipe" in res.stderr
    assert len(json.loads(store.read_text())["rows"]) == 3  # reported as unmeasured, kept in the file
