"""One training run from a DistillConfig: data -> teacher -> soft targets (cached) -> trainer ->
run directory. This is what `edgekd.api.distill` / `train_teacher` and the CLI call.

Run directory (written by rank 0 only):
    config.yaml      the resolved config
    metrics.jsonl    one JSON line per epoch
    checkpoints/     last.pt (full training state), best.pt (best-on-val weights)
    student.pt       the trained model as an edgekd checkpoint (`train.keep`: best or last weights)
    summary.json     accuracies, params, MACs, teacher accuracy, times, soft-target cache hit/miss
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

from edgekd.config import DistillConfig, config_from_dict, config_to_dict, dump_yaml
from edgekd.distill.augment import augment_record, mix_draws, shift_draws, shifted_views, tile_draws
from edgekd.distill.cache import SoftTargetCache
from edgekd.distill.ddp import DistContext
from edgekd.distill.losses import LossStack, build_loss_stack, uses_teacher
from edgekd.distill.taps import FeatureTaps
from edgekd.distill.teachers import Teacher, TorchTeacher, load_teacher
from edgekd.distill.trainer import StudentObjective, Tensors, Trainer, load_state, stderr_is_tty
from edgekd.errors import ConfigError
from edgekd.fileio import atomic_write_json, atomic_write_text


@dataclass
class PreparedRun:
    """Everything built for a run, before training (the benchmark drives `trainer` epoch by epoch)."""

    cfg: DistillConfig
    dataset: Any  # as the student sees it: resampled to the spec's resolution when it fixes one
    teacher: Teacher | None
    student: torch.nn.Module
    losses: LossStack
    trainer: Trainer
    run_dir: Path | None
    dist: DistContext
    cache_status: dict[str, str]
    teacher_acc: float | None
    teacher_logits_time_s: float
    augmented: bool = False  # the train split was shifted (copies or draws)
    shift_px: int = 0  # the shift in pixels the views were drawn with (augment.shift_pixels)


def _as_tensors(x: np.ndarray, y: np.ndarray, logits: np.ndarray | None = None,
                label_dist: np.ndarray | None = None) -> Tensors:
    def t(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

    return Tensors(t(x), t(y), t(logits), t(label_dist))


def _probe(student: torch.nn.Module, teacher: Teacher | None, input_shape: tuple[int, ...],
           student_shape: tuple[int, ...] | None = None):
    """Feature shapes (without batch) at a module path, from one forward pass in eval mode; the
    student at `student_shape` (its own resolution) when given, the teacher at `input_shape`."""

    def probe(role: str, path: str) -> tuple[int, ...]:
        if role == "teacher" and not isinstance(teacher, TorchTeacher):
            what = "no teacher was given" if teacher is None else f"teacher {teacher.path} is {teacher.kind}"
            raise ConfigError(f"the hint loss needs teacher features from an edgekd .pt teacher; {what}")
        model = student if role == "student" else teacher.module  # type: ignore[union-attr]
        was = model.training
        model.eval()
        with FeatureTaps(model, [path], role=role) as taps, torch.no_grad():
            model(torch.zeros((2, *(student_shape or input_shape if role == "student" else input_shape))))
            shape = tuple(taps.features[path].shape[1:])
        model.train(was)
        return shape

    return probe


def _online_teacher(teacher: Teacher, paths: tuple[str, ...]):
    """x -> (teacher logits, teacher features) run every step (features, or --online)."""
    if isinstance(teacher, TorchTeacher):
        taps = FeatureTaps(teacher.module, paths, role="teacher")

        def run_torch(x: torch.Tensor):
            taps.clear()
            return teacher.module(x), dict(taps.features)

        return run_torch

    def run_other(x: torch.Tensor):
        return torch.from_numpy(teacher.logits(x.numpy())), {}

    return run_other


def _check_run_dir(run_dir: Path, cfg: DistillConfig, resume: bool) -> None:
    last = run_dir / "checkpoints" / "last.pt"
    if resume:
        if not last.is_file():
            raise ConfigError(f"cannot resume {run_dir}: it holds no checkpoints/last.pt; run without --resume")
        old_path = run_dir / "config.yaml"
        old = yaml.safe_load(old_path.read_text(encoding="utf-8")) if old_path.is_file() else None
        if old is not None and config_to_dict(config_from_dict(old, str(old_path))) != config_to_dict(cfg):
            raise ConfigError(f"cannot resume {run_dir}: the options differ from its config.yaml; resume with the same options")
    elif last.is_file() or (run_dir / "summary.json").is_file():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another -o")


def prepare_run(
    cfg: DistillConfig,
    *,
    resume: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    write: bool = True,
    student: torch.nn.Module | None = None,
) -> PreparedRun:
    """Build data, teacher, soft targets, student, losses and trainer. `write=False` keeps all files
    (except the soft-target cache) out of the picture, for benchmarks. `student`: an already-built
    model to train instead of a fresh `cfg.student` (compression fine-tunes a pruned student)."""
    from edgekd.data import load_dataset
    from edgekd.models import create_for_dataset

    dist = DistContext.from_env()
    if cfg.family:  # a user's own family joins the registry before anything names it
        from edgekd.models.user_family import register_user_family

        register_user_family(cfg.family, cfg.family_grid)
    d = cfg.data
    dataset = load_dataset(d.source, image_size=d.image_size, seed=d.seed,
                           val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                           max_len=d.max_len, tokenizer=d.tokenizer)
    run_dir = Path(cfg.output) if write else None
    if run_dir is not None:
        _check_run_dir(run_dir, cfg, resume)
    teacher = load_teacher(cfg.teacher) if cfg.teacher else None
    if teacher is not None:
        teacher.check_compatible(dataset.input_shape, dataset.num_classes, f"dataset {dataset.name!r}")
        if dataset.task == "text":
            from edgekd.models.bert import check_text_teacher

            check_text_teacher(teacher, dataset)

    if cfg.family and student is None:
        from edgekd.models import parse_spec
        from edgekd.models.user_family import check_user_family, user_family_meta

        if user_family_meta(cfg.student):  # builds, gives logits of the right shape, exports: else one line
            check_user_family(parse_spec(cfg.student)[0], tuple(dataset.input_shape), int(dataset.num_classes))
    torch.manual_seed(cfg.train.seed)  # student init and loss projections come from this seed
    if student is None:
        student, _ = create_for_dataset(cfg.student, dataset)  # text: vocab/pad id from the tokenizer
    # a spec with resolution=r trains, validates and tests on the same samples resampled to r x r;
    # the teacher (and its cached soft targets) keep the data as loaded
    student_data = dataset
    if getattr(dataset, "task", "image") == "image":
        from edgekd.data.resolution import at_resolution
        from edgekd.models import spec_input_shape

        student_data = at_resolution(dataset, spec_input_shape(cfg.student, tuple(dataset.input_shape)))
    resized = student_data is not dataset
    losses = build_loss_stack(cfg.losses, _probe(student, teacher, tuple(dataset.input_shape),
                                                 tuple(student_data.input_shape)))
    if uses_teacher(losses) and teacher is None:
        raise ConfigError(f"losses {', '.join(losses.names)} need a teacher; pass --teacher PATH (.pt or .onnx) or use --loss ce")
    if resized and uses_teacher(losses) and (cfg.online or losses.teacher_taps):
        raise ConfigError(f"student {cfg.student} takes {tuple(student_data.input_shape)} inputs, the teacher "
                          f"{tuple(dataset.input_shape)}: online teaching and feature losses need both at one "
                          "resolution; use cached soft targets (no --online, logit losses) or drop resolution=")

    a = cfg.augment
    image = getattr(dataset, "task", "image") == "image"  # shifting applies to images only
    shift = a.shift_pixels(*dataset.train.x.shape[2:4]) if image else 0  # the recipe's fraction, in pixels
    mixup = a.mixup if image and a.draws > 1 else 0.0
    draws = a.draws if (shift > 0 or mixup > 0) and a.draws > 1 else 1
    label_dist = None
    if not image:
        train_x, train_y = dataset.train.x, dataset.train.y
    elif draws > 1:  # one view per epoch, cycled; the teacher labels every draw (cached)
        if shift > 0:
            train_x, train_y = shift_draws(dataset.train.x, dataset.train.y, shift=shift, draws=draws, seed=a.seed)
        else:
            train_x, train_y = tile_draws(dataset.train.x, dataset.train.y, draws)
        if mixup > 0:  # function matching: the teacher labels the mixed images, CE reads the mixed labels
            train_x, label_dist = mix_draws(train_x, train_y, int(dataset.num_classes), draws=draws, alpha=mixup, seed=a.seed)
    else:
        train_x, train_y = shifted_views(dataset.train.x, dataset.train.y, shift=shift, copies=a.copies, seed=a.seed)
    cache = SoftTargetCache(cfg.cache_dir)
    cache_status: dict[str, str] = {}
    train_logits = None
    online = None
    t0 = time.perf_counter()
    if teacher is not None:
        # rank 0 fills the cache first; the others then read it (one teacher pass in total)
        for rank_turn in (True, False):
            if dist.is_main == rank_turn:
                if losses.needs_teacher_logits and not cfg.online and not losses.teacher_taps:
                    train_logits, hit = cache.teacher_logits(
                        teacher, dataset, "train", x=train_x, augment=augment_record(shift, a.copies, a.seed, a.draws, mixup) if image else None)
                    cache_status["train"] = "hit" if hit else "miss"
                test_logits, hit = cache.teacher_logits(teacher, dataset, "test")
                cache_status["test"] = "hit" if hit else "miss"
            dist.barrier()
        if uses_teacher(losses) and "train" not in cache_status:
            cache_status["train"] = "online"
            online = _online_teacher(teacher, losses.teacher_taps)
        teacher_acc = float((test_logits.argmax(1) == dataset.test.y).mean())
    else:
        teacher_acc = None
    logits_time = time.perf_counter() - t0

    # a student at its own resolution: each train batch is resampled as it is used (StudentObjective)
    objective = StudentObjective(student, losses, input_size=int(student_data.input_shape[1]) if resized else None)
    trainer = Trainer(
        objective,
        _as_tensors(train_x, train_y, train_logits, label_dist),
        _as_tensors(student_data.val.x, student_data.val.y),
        cfg.train,
        run_dir=run_dir,
        dist=dist,
        online_teacher=online,
        draws=draws,
        progress=progress,
        log=log,
    )
    if run_dir is not None and dist.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
        if not resume:
            atomic_write_text(run_dir / "metrics.jsonl", "")
    # the run's dataset is the student's view (its input shape, test split and fingerprint)
    augmented = image and (shift > 0 or mixup > 0) and (draws > 1 or a.copies > 0)
    return PreparedRun(cfg, student_data, teacher, student, losses, trainer, run_dir, dist, cache_status,
                       teacher_acc, logits_time, augmented=augmented, shift_px=shift)


def run_training(
    cfg: DistillConfig, *, resume: bool = False, progress: bool | None = None, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Train per `cfg`, write the run directory, return the summary dict (also in summary.json)."""

    if progress is None:
        progress = stderr_is_tty()
    threads_before = torch.get_num_threads()
    if cfg.train.threads:
        # tiny models train faster on one thread, especially on a shared, loaded machine
        torch.set_num_threads(cfg.train.threads)
    try:
        return _train_and_report(cfg, resume, progress, log)
    finally:
        torch.set_num_threads(threads_before)


def _train_and_report(cfg: DistillConfig, resume: bool, progress: bool, log: Callable[[str], None] | None) -> dict[str, Any]:
    from edgekd.models import ModelInfo, count_macs, count_params, save_model

    prep = prepare_run(cfg, resume=resume, progress=progress, log=log)
    try:
        start = time.perf_counter()
        result = prep.trainer.fit(resume=resume)
        train_time = time.perf_counter() - start
        ds, student, trainer = prep.dataset, prep.student, prep.trainer
        test = _as_tensors(ds.test.x, ds.test.y)
        _, test_acc_last = trainer.evaluate(test)
        last_state = {k: v.clone() for k, v in student.state_dict().items()}
        test_acc_best = test_acc_last
        if prep.run_dir is not None and result.best_epoch and result.best_epoch != trainer.epoch:
            best = load_state(prep.run_dir / "checkpoints" / "best.pt")
            student.load_state_dict(best["student"])
            _, test_acc_best = trainer.evaluate(test)
            if cfg.train.keep == "last":
                student.load_state_dict(last_state)
        kept = test_acc_best if cfg.train.keep == "best" else test_acc_last
        params = count_params(student)
        teacher_params = getattr(prep.teacher, "params", None)
        times = [row["epoch_time_s"] for row in result.history]
        summary: dict[str, Any] = {
            "role": cfg.role,
            "student": cfg.student,
            "teacher": cfg.teacher,
            "teacher_identity": prep.teacher.identity if prep.teacher else None,
            "dataset": ds.name,
            "dataset_fingerprint": ds.fingerprint,
            "input_shape": list(ds.input_shape),
            "losses": [name for name in prep.losses.names],
            "seed": cfg.train.seed,
            "epochs_run": len(result.history),
            "stopped_early": result.stopped_early,
            "resumed_from_epoch": result.resumed_from,
            "best_epoch": result.best_epoch,
            "val_acc_best": result.best_val_acc,
            "val_acc_last": result.history[-1]["val_acc"] if result.history else None,
            "test_acc_last": test_acc_last,
            "test_acc_best": test_acc_best,
            "test_acc": kept,
            "kept": cfg.train.keep,
            "teacher_acc": prep.teacher_acc,
            "params": params,
            "macs": count_macs(student, tuple(ds.input_shape)),
            "teacher_params": teacher_params,
            "params_ratio": params / teacher_params if teacher_params else None,
            "train_time_s": train_time,
            "epoch_time_s_median": statistics.median(times) if times else None,
            "epoch_times_s": [round(t, 4) for t in times],  # every epoch's training time (no eval)
            "val_acc_per_epoch": [row["val_acc"] for row in result.history],
            "patience": cfg.train.patience,
            "augment": {**vars(cfg.augment), "shift_px": prep.shift_px} if prep.augmented else None,
            "teacher_logits_time_s": prep.teacher_logits_time_s,
            "soft_target_cache": prep.cache_status,
            "world_size": prep.dist.world_size,
            "threads": torch.get_num_threads(),
        }
        if prep.run_dir is not None and prep.dist.is_main:
            spec, text_meta = cfg.student, {}
            if ds.task == "text":  # the checkpoint must rebuild the same embedding table and tokenize later
                from edgekd.models.bert import dataset_meta, with_vocab

                spec, text_meta = with_vocab(cfg.student, ds.extra["vocab_size"]), dataset_meta(ds)
            info = ModelInfo(
                spec=spec, task=ds.task, input_shape=tuple(ds.input_shape), num_classes=ds.num_classes,
                class_names=list(ds.class_names), normalization=ds.normalization, surgery=[],
                meta={"test_acc": kept, "dataset_fingerprint": ds.fingerprint, "teacher": cfg.teacher,
                      "role": cfg.role, "losses": summary["losses"], **text_meta,
                      **({"input_resize": ds.preprocess["student_resize"]} if "student_resize" in ds.preprocess else {}),
                      **_user_family_meta(spec)},
            )
            save_model(prep.run_dir / "student.pt", student, info)
            summary["student_path"] = str(prep.run_dir / "student.pt")
            summary["run_dir"] = str(prep.run_dir)
            atomic_write_json(prep.run_dir / "summary.json", summary)
        return summary
    finally:
        prep.dist.close()


def _user_family_meta(spec: str) -> dict[str, Any]:
    from edgekd.models.user_family import user_family_meta

    return user_family_meta(spec)
