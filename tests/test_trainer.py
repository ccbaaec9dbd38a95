"""Trainer: determinism, run directory, NaN guard, early stop, hint loss online, resume after SIGKILL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from edgekd import api
from edgekd.config import config_from_dict, config_to_dict
from edgekd.errors import ConfigError, TrainingError
from edgekd.models import load_model

TIMES = ("epoch_time_s",)


def _cfg(tmp_path: Path, teacher: Path | None, name: str, **extra) -> dict:
    cfg = {"teacher": str(teacher) if teacher else None, "student": "mlp:hidden=16",
           "losses": [{"key": "kd", "kwargs": {"temperature": 4.0, "alpha": 0.5}}] if teacher else [{"key": "ce"}],
           "train": {"epochs": 2, "threads": 1, "batch_size": 64}, "output": str(tmp_path / name)}
    cfg.update(extra)
    return cfg


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMES} for r in rows]


def test_same_seed_same_metrics_and_the_run_directory(tmp_path: Path, tiny_teacher_ckpt: Path, digits_small):
    a = api.distill(_cfg(tmp_path, tiny_teacher_ckpt, "a"), progress=False)
    b = api.distill(_cfg(tmp_path, tiny_teacher_ckpt, "b"), progress=False)
    c = api.distill(_cfg(tmp_path, tiny_teacher_ckpt, "c", train={"epochs": 2, "threads": 1, "seed": 1}), progress=False)
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert (a["test_acc_last"], a["val_acc_best"]) == (b["test_acc_last"], b["val_acc_best"])
    assert _metrics(tmp_path / "a") != _metrics(tmp_path / "c")

    run = tmp_path / "a"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl", "student.pt", "summary.json"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert config_to_dict(config_from_dict(resolved)) == resolved  # the resolved config round-trips
    assert len(_metrics(run)) == 2
    summary = json.loads((run / "summary.json").read_text())
    for key in ("test_acc", "test_acc_last", "test_acc_best", "teacher_acc", "params", "macs", "teacher_params",
                "params_ratio", "train_time_s", "soft_target_cache", "best_epoch"):
        assert key in summary, key
    model, info = load_model(run / "student.pt")
    with torch.no_grad():
        acc = float((model(torch.from_numpy(digits_small.test.x)).argmax(1).numpy() == digits_small.test.y).mean())
    assert acc == pytest.approx(summary["test_acc"])
    assert info.meta["teacher"] == str(tiny_teacher_ckpt) and info.normalization == digits_small.normalization


def test_nan_loss_names_epoch_step_and_suggests_lower_lr(tmp_path: Path, tiny_teacher_ckpt: Path):
    cfg = _cfg(tmp_path, tiny_teacher_ckpt, "nan", train={"epochs": 1, "threads": 1, "optimizer": "sgd", "lr": 1e30})
    with pytest.raises(TrainingError, match=r"epoch 1, step \d+.*lower the learning rate"):
        api.distill(cfg, progress=False)


def test_early_stop_on_val(tmp_path: Path):
    # an lr so small nothing changes: val accuracy never improves after epoch 1 (mlp: no BN stats)
    cfg = _cfg(tmp_path, None, "es", role="teacher",
               train={"epochs": 6, "threads": 1, "lr": 1e-12, "patience": 1, "schedule": "constant"})
    summary = api.distill(cfg, progress=False)
    assert summary["stopped_early"] and summary["epochs_run"] == 2 and summary["best_epoch"] == 1


def test_existing_run_needs_resume(tmp_path: Path):
    cfg = _cfg(tmp_path, None, "r", train={"epochs": 1, "threads": 1})
    api.distill(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        api.distill(cfg, progress=False)
    with pytest.raises(ConfigError, match="options differ"):
        api.distill({**cfg, "student": "mlp:hidden=32"}, resume=True, progress=False)


def test_hint_loss_runs_the_teacher_online_and_trains_the_projection(tmp_path: Path, tiny_teacher_ckpt: Path):
    losses = [{"key": "kd"}, {"key": "hint", "weight": 0.5,
                              "kwargs": {"student_layer": "features.1", "teacher_layer": "features.1"}}]
    cfg = _cfg(tmp_path, tiny_teacher_ckpt, "hint", student="cnn:width=8,depth=2", losses=losses,
               train={"epochs": 1, "threads": 1, "optimizer": "sgd", "lr": 0.05})
    summary = api.distill(cfg, progress=False)
    assert summary["soft_target_cache"]["train"] == "online" and summary["losses"] == ["kd", "hint"]
    state = torch.load(tmp_path / "hint" / "checkpoints" / "last.pt", weights_only=True)
    proj = state["losses"]["parts.1.proj.weight"]
    torch.manual_seed(0)  # rebuild the untrained projection the way the run did: same seed, same order
    from edgekd.models import create_model

    create_model("cnn:width=8,depth=2", (1, 8, 8), 10)
    fresh = torch.nn.Conv2d(proj.shape[1], proj.shape[0], 1, bias=False).weight
    assert proj.shape == fresh.shape and not torch.allclose(proj, fresh)  # optimized with the student
    metrics = _metrics(tmp_path / "hint")[0]
    assert metrics["loss_hint"] > 0


def test_hint_loss_with_a_bad_layer_lists_valid_paths(tmp_path: Path, tiny_teacher_ckpt: Path):
    losses = [{"key": "hint", "kwargs": {"student_layer": "featurs.1", "teacher_layer": "features.1"}}]
    with pytest.raises(ConfigError, match="student has no module 'featurs.1'; nearby valid paths: features.1"):
        api.distill(_cfg(tmp_path, tiny_teacher_ckpt, "h1", student="cnn:width=8,depth=2", losses=losses), progress=False)


RESUME_YAML = """
student: "mlp:hidden=32"
losses: [{key: kd, kwargs: {temperature: 4.0, alpha: 0.3}}]
train: {epochs: 5, batch_size: 8, threads: 1, lr: 0.003}
"""


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_metrics(tmp_path: Path, tiny_teacher_ckpt: Path):
    (tmp_path / "run.yaml").write_text(RESUME_YAML + f"teacher: {tiny_teacher_ckpt}\n")
    cmd = [sys.executable, "-m", "edgekd", "distill", "--config", str(tmp_path / "run.yaml"), "-o", str(tmp_path / "killed"), "--json"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.communicate()}"
    time.sleep(0.05)  # into epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "summary.json").exists()

    # resume in this process (one interpreter start fewer); the CLI path of --resume is the same call
    cfg = {**yaml.safe_load((tmp_path / "run.yaml").read_text()), "output": str(tmp_path / "killed")}
    resumed = api.distill(cfg, resume=True, progress=False)
    assert resumed["resumed_from_epoch"] in (2, 3, 4)

    reference = api.distill({**yaml.safe_load((tmp_path / "run.yaml").read_text()), "output": str(tmp_path / "ref")},
                            progress=False)
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "ref")
    for key in ("test_acc_last", "test_acc_best", "val_acc_best", "best_epoch", "epochs_run"):
        assert resumed[key] == reference[key], key
