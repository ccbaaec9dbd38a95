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
