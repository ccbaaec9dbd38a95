"""Run a chain of compression passes on a distilled student, each followed by KD fine-tuning.

    summary = run_compression({"source": "runs/s1", "output": "runs/s1-pruned",
                               "passes": [{"pass": "prune", "ratio": 0.5}], "finetune_epochs": 3})

The pass chain is read by `edgekd.compress.passes.parse_chain` (the same reader deploy's
``compress:`` list goes through); each pass runs as ``PASSES[name]().run(model, data, cfg)``.

The source is a distill run directory (its `student.pt`, and its `config.yaml` for the teacher, the
data, the losses and the optimizer) or a bare checkpoint (then `teacher` and `data` come from the
config, the data defaulting to `digits` at the checkpoint's image size). Fine-tuning is an ordinary
distillation run of the already-built compressed model (`edgekd.distill.run.prepare_run`), with the
same teacher, data and augmentation, so the teacher's soft targets come from the soft-target cache.

Output directory — the distill layout, so export, select and a further `compress` take it as is:
    config.yaml     the fine-tuning DistillConfig (teacher, data, losses, train) of the chain
    compress.yaml   the compression config (source, passes as [{pass: NAME, FIELD: VALUE}], epochs)
    metrics.jsonl   every fine-tuning epoch, tagged with its stage and pass
    stages/NN-name/ one per pass: the trainer's files and the model after that pass (student.pt)
    student.pt      the final model; its `surgery` records rebuild the structure on load
    summary.json    params, MACs, file size and test accuracy before/after each pass and overall
A failing run removes the output directory it created: nothing is left half-written. A run killed
outright leaves its directory marked incomplete (`INCOMPLETE_MARKER`): never read as a result, and
cleared by the next run to the same output.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import yaml
from torch import nn

from edgekd.compress.passes import PASSES, PassData, PassEntry, parse_chain
from edgekd.config import DataConfig, DistillConfig, LossEntry, config_from_dict, config_to_dict, dump_yaml
from edgekd.errors import ConfigError
from edgekd.fileio import atomic_write_json, atomic_write_text


@dataclass
class CompressConfig:
    """A compression run. `teacher`, `data`, `lr`, `batch_size` and `cache_dir` default to the source
    run's config.yaml; `finetune_epochs=0` skips fine-tuning (then no teacher is needed)."""

    source: str = ""
    passes: list[PassEntry] = field(default_factory=list)
    output: str = "runs/compressed"
    finetune_epochs: int = 2
    teacher: str | None = None
    data: DataConfig | None = None
    lr: float | None = None
    batch_size: int | None = None
    cache_dir: str | None = None


def passes_from_list(raw: Any, where: str = "passes") -> list[PassEntry]:
    """``[{pass: prune, ratio: 0.5}, "lowrank", ...]`` -> checked PassEntry list (`parse_chain`)."""
    return parse_chain(raw, where)


def compress_config_from_dict(raw: Mapping[str, Any], where: str = "compress config") -> CompressConfig:
    """Build a CompressConfig from a mapping (YAML layout), checking keys, passes and values."""
    if isinstance(raw, CompressConfig):
        raw = {f.name: getattr(raw, f.name) for f in dataclasses.fields(CompressConfig)}  # PassEntry kept
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    valid = [f.name for f in dataclasses.fields(CompressConfig)]
    for key in raw:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}; valid keys: {', '.join(valid)}")
    values = dict(raw)
    if not isinstance(values.get("source"), str) or not values.get("source"):
        raise ConfigError(f"{where}: 'source' must be a distill run directory or a .pt checkpoint")
    values["passes"] = passes_from_list(values.get("passes"), f"{where}.passes")
    epochs = values.get("finetune_epochs", 2)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ConfigError(f"{where}.finetune_epochs={epochs!r}: use an integer >= 0")
    for key in ("lr", "batch_size"):
        v = values.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise ConfigError(f"{where}.{key}={v!r}: must be a positive number")
    if values.get("data") is not None and not isinstance(values["data"], DataConfig):
        data = values["data"]
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}.data: expected a mapping like {{source: digits, image_size: 32}}")
        values["data"] = config_from_dict({"student": "x", "data": dict(data)}, where).data
    return CompressConfig(**values)


# ---- the source run ------------------------------------------------------------------------------
def resolve_source(source: str) -> tuple[Path, DistillConfig | None]:
    """(checkpoint path, the run's DistillConfig if there is one) for a run directory or a .pt file."""
    path = Path(source).expanduser()
    unfinished = (path if path.is_dir() else path.parent) / INCOMPLETE_MARKER
    if unfinished.exists():
        raise ConfigError(f"{source} belongs to a compress run that did not finish; run that compress again "
                          f"(it clears the leftover) or give another source")
    if path.is_dir():
        ckpt = path / "student.pt"
        if not ckpt.is_file():
            raise ConfigError(f"{path} is not a run directory: it has no student.pt; give a distill run "
                              f"directory or a .pt checkpoint")
        run_dir = path
    elif path.is_file():
        ckpt, run_dir = path, path.parent
    else:
        raise ConfigError(f"{source}: no such run directory or checkpoint; give a distill run directory "
                          f"(with student.pt) or a .pt checkpoint")
    cfg_path = run_dir / "config.yaml"
    if ckpt.name != "student.pt" or not cfg_path.is_file():
        return ckpt, None
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{cfg_path}: unreadable run config ({type(err).__name__}); fix it or pass the "
                          f"checkpoint with --teacher and --data") from None
    return ckpt, config_from_dict(raw or {}, str(cfg_path))


def finetune_config(cfg: CompressConfig, run_cfg: DistillConfig | None, info: Any) -> DistillConfig:
    """The DistillConfig every fine-tuning stage runs (its `output` is set per stage)."""
    if run_cfg is None:
        shape = tuple(info.input_shape)
        size = None if shape[1:] == (8, 8) else int(shape[-1])
        run_cfg = DistillConfig(student=info.spec, data=DataConfig(image_size=size))
    base = dataclasses.replace(run_cfg, role="student")
    if cfg.teacher is not None:
        if base.teacher is None:
            base.losses = [LossEntry("kd")]  # a run trained on labels alone gains a teacher: plain KD
        base.teacher = cfg.teacher
    if cfg.data is not None:
        base.data = cfg.data
    if cfg.cache_dir is not None:
        base.cache_dir = cfg.cache_dir
    train = dataclasses.replace(base.train, epochs=max(1, cfg.finetune_epochs), patience=0)
    if cfg.lr is not None:
        train.lr = float(cfg.lr)
    if cfg.batch_size is not None:
        train.batch_size = int(cfg.batch_size)
    base.train = train
    return config_from_dict(config_to_dict(base), "fine-tuning config")


# ---- measurement ---------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 512) -> float:
    """Top-1 accuracy of `model` (eval mode) on normalized arrays."""
    was = model.training
    model.eval()
    correct = 0
    for lo in range(0, len(y), batch):
        logits = model(torch.from_numpy(np.ascontiguousarray(x[lo : lo + batch])))
        correct += int((logits.argmax(1).numpy() == y[lo : lo + batch]).sum())
    model.train(was)
    return correct / max(len(y), 1)


def measure(model: nn.Module, checkpoint: Path, dataset: Any) -> dict[str, Any]:
    """params, MACs, checkpoint file size and val/test accuracy of `model` saved at `checkpoint`."""
    from edgekd.models import count_macs, count_params

    return {
        "params": int(count_params(model)),
        # one real sample, so token-id inputs (text students) are counted as well as images
        "macs": int(count_macs(model, example=torch.from_numpy(np.ascontiguousarray(dataset.test.x[:1])))),
        "file_bytes": int(checkpoint.stat().st_size),
        "val_acc": accuracy(model, dataset.val.x, dataset.val.y),
        "test_acc": accuracy(model, dataset.test.x, dataset.test.y),
    }


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        "params_ratio": after["params"] / max(before["params"], 1),
        "macs_ratio": after["macs"] / max(before["macs"], 1),
        "size_ratio": after["file_bytes"] / max(before["file_bytes"], 1),
        "acc_drop_pts": 100.0 * (before["test_acc"] - after["test_acc"]),
    }


# ---- fine-tuning ---------------------------------------------------------------------------------
def finetune(
    model: nn.Module, base: DistillConfig, stage_dir: Path, *, progress: bool, log: Callable[[str], None] | None
) -> dict[str, Any]:
    """KD fine-tuning of `model` in place (best-on-val or last weights per `base.train.keep`),
    writing the trainer's files to `stage_dir`. Returns epochs, best epoch and cache status."""
    from edgekd.distill.run import prepare_run
    from edgekd.distill.trainer import load_state

    cfg = dataclasses.replace(base, output=str(stage_dir))
    prep = prepare_run(cfg, progress=progress, log=log, student=model)
    try:
        start = time.perf_counter()
        result = prep.trainer.fit()
        elapsed = time.perf_counter() - start
        if cfg.train.keep == "best" and result.best_epoch and result.best_epoch != prep.trainer.epoch:
            model.load_state_dict(load_state(stage_dir / "checkpoints" / "best.pt")["student"])
    finally:
        prep.dist.close()
    return {
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "val_acc_best": result.best_val_acc,
        "kept": cfg.train.keep,
        "time_s": elapsed,
        "soft_target_cache": dict(prep.cache_status),
        "teacher_acc": prep.teacher_acc,
        "history": result.history,
    }


# ---- the chain -----------------------------------------------------------------------------------
# Written first into the output directory and removed last: a run killed outright (SIGKILL, power
# loss) cannot clean up, so its leftover says so, is never read as a result, and is cleared by the
# next run to the same output once the process that wrote it is gone.
INCOMPLETE_MARKER = ".compress-incomplete"


def is_complete_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a finished compress run (summary written, no incomplete marker)."""
    return (run_dir / "summary.json").is_file() and not (run_dir / INCOMPLETE_MARKER).exists()


def _writer_alive(marker: Path) -> tuple[bool, str]:
    """(is the run that left `marker` still running here?, a description of it)."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        pid, host = int(info["pid"]), str(info.get("host", ""))
    except (OSError, ValueError, KeyError, TypeError):
        return False, "an interrupted run"
    if host != socket.gethostname():
        return False, f"an interrupted run (pid {pid} on {host})"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False, f"an interrupted run (pid {pid}, no longer running)"
    except PermissionError:
        pass
    return True, f"pid {pid}"


def _empty_dir(path: Path) -> None:
    """Remove everything inside `path`, keeping the directory itself (it may be the user's)."""
    for child in path.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _prepare_output(out: Path, log: Callable[[str], None] | None = None) -> bool:
    """Refuse a non-empty output (clearing the leftover of an interrupted compress run instead); mark
    it incomplete; return whether we created the directory (so failure removes it)."""
    created = False
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"output {out} already exists and is not a directory; choose another -o or remove it")
        marker = out / INCOMPLETE_MARKER
        if marker.exists():
            alive, who = _writer_alive(marker)
            if alive:
                raise ConfigError(f"output {out} is being written by another compress ({who}); wait for it or "
                                  f"choose another -o")
            if log is not None:
                log(f"removing the unfinished output of {who} in {out}")
            _empty_dir(out)
        elif any(out.iterdir()):
            raise ConfigError(f"output {out} already exists and is not empty; choose another -o or remove it")
    else:
        out.mkdir(parents=True)
        created = True
    atomic_write_json(out / INCOMPLETE_MARKER, {"pid": os.getpid(), "host": socket.gethostname(),
                                                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return created


def run_compression(
    cfg: CompressConfig | Mapping[str, Any],
    *,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the pass chain of `cfg`; write the output run directory; return the summary dict."""
    from edgekd.data import load_dataset
    from edgekd.distill.trainer import stderr_is_tty
    from edgekd.models import load_model

    cfg = compress_config_from_dict(cfg)  # a CompressConfig is checked again, as a mapping is
    progress = stderr_is_tty() if progress is None else progress
    ckpt, run_cfg = resolve_source(cfg.source)
    model, info = load_model(ckpt)
    base = finetune_config(cfg, run_cfg, info)
    d = base.data
    dataset = load_dataset(**dataclasses.asdict(d))
    if tuple(dataset.input_shape) != tuple(info.input_shape) or dataset.num_classes != info.num_classes:
        raise ConfigError(
            f"{ckpt} takes inputs {list(info.input_shape)} with {info.num_classes} classes but data "
            f"{d.source!r} (image_size={d.image_size}) gives {list(dataset.input_shape)} with "
            f"{dataset.num_classes}; pass the data it was trained on (--data / --image-size)"
        )
    if cfg.finetune_epochs > 0 and base.teacher and not Path(base.teacher).expanduser().exists():
        raise ConfigError(f"teacher {base.teacher} (from {'--teacher' if cfg.teacher else 'the run config'}) "
                          f"does not exist; pass --teacher PATH")

    out = Path(cfg.output)
    created = _prepare_output(out, log)
    try:
        summary = _run_chain(cfg, base, ckpt, model, info, dataset, out, progress, log)
        (out / INCOMPLETE_MARKER).unlink()  # the last write: from here on the run is complete
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        else:
            _empty_dir(out)
        raise
    return summary


def _run_chain(cfg, base, ckpt, model, info, dataset, out, progress, log) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from edgekd.models import save_model

    def say(msg: str) -> None:
        if log is not None:
            log(msg)

    before = measure(model, ckpt, dataset)
    surgery = list(info.surgery)
    example = torch.from_numpy(np.ascontiguousarray(dataset.train.x[:2]))
    stages: list[dict[str, Any]] = []
    metrics: list[str] = []
    current = before
    data = PassData(example=example, dataset=dataset)
    for i, entry in enumerate(cfg.passes, start=1):
        stage_dir = out / "stages" / f"{i:02d}-{entry.name}"
        stage_dir.mkdir(parents=True)
        say(f"pass {i}/{len(cfg.passes)}: {entry.name} {json.dumps(entry.options, sort_keys=True)}")
        model.eval()
        result = PASSES.get(entry.name)().run(model, data, entry.config())
        model, records, details = result.model, result.records, result.details
        surgery += records
        acc_no_ft = accuracy(model, dataset.test.x, dataset.test.y)
        tuned = None
        if cfg.finetune_epochs > 0:
            say(f"  fine-tuning {cfg.finetune_epochs} epoch(s) with KD from {base.teacher or 'labels only'}")
            tuned = finetune(model, base, stage_dir, progress=progress, log=log)
            for row in tuned.pop("history"):
                metrics.append(json.dumps({"stage": i, "pass": entry.name, **row}, sort_keys=True))
        stage_info = _info(info, surgery, {"compress_stage": i, "pass": entry.name})
        save_model(stage_dir / "student.pt", model, stage_info)
        after = measure(model, stage_dir / "student.pt", dataset)
        stages.append({
            "stage": i, "pass": entry.name, "options": entry.options, "before": current, "after": after,
            **_delta(current, after), "test_acc_before_finetune": acc_no_ft,
            "finetune": tuned, "surgery": records, "details": details,
            "student_path": str(stage_dir / "student.pt"),
        })
        say(f"  params {current['params']} -> {after['params']}, MACs {current['macs']} -> {after['macs']}, "
            f"test acc {current['test_acc']:.4f} -> {acc_no_ft:.4f} (pass) -> {after['test_acc']:.4f} (fine-tuned)")
        current = after

    final = _info(info, surgery, {"compressed_from": str(ckpt), "passes": [p.as_dict() for p in cfg.passes],
                                  "test_acc": current["test_acc"], "teacher": base.teacher})
    save_model(out / "student.pt", model, final)
    after = measure(model, out / "student.pt", dataset)
    run_cfg = dataclasses.replace(base, output=str(out), train=dataclasses.replace(base.train, epochs=max(1, cfg.finetune_epochs)))
    atomic_write_text(out / "config.yaml", dump_yaml(run_cfg))
    atomic_write_text(out / "compress.yaml", yaml.safe_dump(_plain(cfg), sort_keys=False))
    atomic_write_text(out / "metrics.jsonl", "".join(line + "\n" for line in metrics))
    caches = {s["stage"]: (s["finetune"] or {}).get("soft_target_cache") for s in stages}
    summary: dict[str, Any] = {
        "role": "student",
        "kind": "compress",
        "source": str(ckpt),
        "student": info.spec,
        "teacher": base.teacher,
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint,
        "input_shape": list(dataset.input_shape),
        "passes": [p.as_dict() for p in cfg.passes],
        "finetune_epochs": cfg.finetune_epochs,
        "before": before,
        "after": after,
        **_delta(before, after),
        "stages": stages,
        "surgery": surgery,
        "test_acc": after["test_acc"],
        "params": after["params"],
        "macs": after["macs"],
        "file_bytes": after["file_bytes"],
        "soft_target_cache": caches,
        "student_path": str(out / "student.pt"),
        "run_dir": str(out),
    }
    atomic_write_json(out / "summary.json", summary)
    return summary


def _info(info: Any, surgery: list[dict[str, Any]], meta: dict[str, Any]) -> Any:
    return dataclasses.replace(info, surgery=list(surgery), meta={**info.meta, **meta})


def _plain(cfg: CompressConfig) -> dict[str, Any]:
    raw = {**dataclasses.asdict(cfg), "passes": [p.as_dict() for p in cfg.passes]}
    return json.loads(json.dumps(raw))


def summary_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per stage plus the overall row: what the CLI prints as a table."""
    rows = []
    for s in summary["stages"]:
        rows.append({"stage": f"{s['stage']}. {s['pass']}", "before": s["before"], "after": s["after"],
                     "acc_no_ft": s["test_acc_before_finetune"]})
    rows.append({"stage": "total", "before": summary["before"], "after": summary["after"], "acc_no_ft": None})
    return rows
