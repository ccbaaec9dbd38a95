"""The same trainer under a real `torchrun --nproc_per_node 2` (gloo on CPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DDP_YAML = """
student: "mlp:hidden=16"
losses: [{key: kd, kwargs: {temperature: 4.0, alpha: 0.5}}]
train: {epochs: 2, batch_size: 32, threads: 1}
"""


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path: Path, tiny_teacher_ckpt: Path):
    pytest.importorskip("torch.distributed")
    (tmp_path / "run.yaml").write_text(DDP_YAML + f"teacher: {tiny_teacher_ckpt}\n")
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgekd", "distill", "--config", str(tmp_path / "run.yaml"), "-o", str(run), "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 alone prints, logs and writes: one summary on stdout, one metrics line per epoch
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2
    assert summary["soft_target_cache"]["train"] in ("hit", "miss")
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run / "summary.json").read_text())["world_size"] == 2
    assert (run / "student.pt").is_file() and (run / "checkpoints" / "last.pt").is_file()
    # each rank saw half of the training set per epoch; together they learned something
    assert summary["test_acc_last"] > 0.3
