"""`edgekd bench` and `edgekd profile show` end to end: real artifacts, real runner processes, a
real agent subprocess for `--device local`, a real export from a checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.device.profiles import Profile

from bench_models import make_eval_npz, make_onnx_artifact

QUICK = ["--min-count", "5", "--min-seconds", "0.01", "--warmup", "1", "--warmup-seconds", "0"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    arts = root / "artifacts"
    make_onnx_artifact(arts / "a-small", hidden=8)
    make_onnx_artifact(arts / "b-wide", hidden=32, seed=1)
    broken = make_onnx_artifact(arts / "c-broken", hidden=16, seed=2)
    (broken / "model.onnx").write_bytes(b"torn copy")  # sha256 no longer matches the manifest
    data = make_eval_npz(root / "eval.npz", n=30)
    return arts, data


def _bench(args, tmp_path):
    result = CliRunner().invoke(main, ["bench", *args, *QUICK, "--profiles-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_one_broken_artifact_never_hides_the_others(models, tmp_path):
    arts, data = models
    report = _bench([str(arts), "--device", "inprocess", "--data", str(data), "--profile", "dev", "--threads", "1"],
                    tmp_path)
    rows = {Path(r["artifact"]).name: r for r in report["rows"]}
    assert set(rows) == {"a-small", "b-wide", "c-broken"}
    for name in ("a-small", "b-wide"):
        r = rows[name]
        assert r["status"] == "ok" and r["p50_ms"] > 0 and r["p90_ms"] >= r["p50_ms"]
        assert r["peak_rss_bytes"] > 0 and r["size_bytes"] > 0 and 0 <= r["accuracy"] <= 1
        assert r["result"]["settings"]["threads"] == 1
    assert rows["c-broken"]["status"] == "failed" and "sha256" in rows["c-broken"]["reason"]
    prof = Profile.load(tmp_path / "dev.yaml")
    assert len(prof.measurements) == 2
    assert all(m.accuracy_count == 30 and m.threads == 1 for m in prof.measurements.values())
    assert prof.device["arch"]

    # the same bench again: the same keys are replaced and counted, nothing is added
    _bench([str(arts / "a-small"), "--device", "inprocess", "--profile", "dev", "--threads", "1"], tmp_path)
    prof = Profile.load(tmp_path / "dev.yaml")
    assert len(prof.measurements) == 2 and sorted(m.count for m in prof.measurements.values()) == [1, 2]

    shown = CliRunner().invoke(main, ["profile", "show", "dev", "--profiles-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "tiny:hidden=8" in shown.output and "onnx" in shown.output and "p50 ms" in shown.output
    as_json = CliRunner().invoke(main, ["profile", "show", str(tmp_path / "dev.yaml"), "--json"])
    assert len(json.loads(as_json.stdout)["measurements"]) == 2


def test_bench_through_a_local_agent(models, tmp_path):
    arts, data = models
    report = _bench([str(arts / "a-small"), "--device", "local", "--data", str(data), "--profile", "agent"], tmp_path)
    (row,) = report["rows"]
    assert row["status"] == "ok" and row["accuracy"] is not None and row["peak_rss_bytes"] > 0
    assert report["device"]["runtimes"]["onnxruntime"]  # the fingerprint came from the agent's hello
    assert Profile.load(tmp_path / "agent.yaml").device == report["device"]


@pytest.mark.parametrize("args, message", [
    (["--formats", "onnxx"], "unknown format"),
    (["--precisions", "fp64"], "unknown precision"),
    (["--precisions", "fp16"], "nothing to benchmark"),
])
def test_user_errors_exit_2(models, tmp_path, args, message):
    arts, _ = models
    result = CliRunner().invoke(main, ["bench", str(arts), "--device", "inprocess", *args, "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output


def test_missing_source_and_corrupt_profile_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "nope"), "--device", "inprocess"])
    assert result.exit_code == 2 and "nope" in result.output
    (tmp_path / "broken.yaml").write_text("schema: [\n")
    result = CliRunner().invoke(main, ["profile", "show", "broken", "--profiles-dir", str(tmp_path)])
    assert result.exit_code == 2 and "broken.yaml" in result.output and "Traceback" not in result.output


@pytest.mark.slow  # ~20 s on 2 busy cores: torch import + ONNX export + parity gate in a subprocess
def test_bench_exports_what_is_missing_from_a_run(tiny_teacher_ckpt, tmp_path):
    """The whole tool in a real subprocess: checkpoint -> ONNX export -> measured -> profile."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_teacher_ckpt, run / "student.pt")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "edgekd", "bench", str(run), "--device", "inprocess", "--formats", "onnx",
           "--precisions", "fp32,int8", "--profiles-dir", str(tmp_path / "profiles"), "--profile", "cpu", *QUICK,
           "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row, int8_row = sorted(json.loads(proc.stdout)["rows"], key=lambda r: r["precision"] != "fp32")
    assert row["status"] == "ok" and int8_row["status"] == "ok", (row, int8_row)
    assert row["model"] == "cnn:depth=2,width=16" or row["model"].startswith("cnn:")
    assert row["accuracy"] > 0.5  # the run's own test split, on ONNX Runtime
    assert (run / "artifacts" / "onnx-fp32" / "manifest.json").is_file()
    prof = Profile.load(tmp_path / "profiles" / "cpu.yaml")
    m = next(m for m in prof.measurements.values() if m.precision == "fp32")
    assert m.spec == row["model"] and m.params and m.dataset_fingerprint.endswith(":test")
    # the INT8 export was made for the device measured (its ISA's rule), so its row is this device's
    from edgekd.latency.recipe import is_current
    from edgekd.runtimes import read_manifest

    settings = read_manifest(run / "artifacts" / "onnx-int8")["options"]["int8_settings"]
    assert settings["arch"] == prof.device["arch"]
    (q,) = [m for m in prof.measurements.values() if m.precision == "int8"]
    assert q.recipe and is_current(q, prof.device)
    # the export directory benched as it is (README: `edgekd bench out/s1`): its export summary names
    # the run's dataset, so accuracy is measured on its test split without --data (it was left blank)
    assert (run / "artifacts" / "export.json").is_file()
    cmd = [sys.executable, "-m", "edgekd", "bench", str(run / "artifacts"), "--device", "inprocess",
           "--profiles-dir", str(tmp_path / "profiles"), "--profile", "cpu2", *QUICK, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout)["rows"]
    assert len(rows) == 2 and all(r["status"] == "ok" and r["accuracy"] > 0.5 for r in rows), rows
