"""The training loop shared by teacher training and distillation.

Deterministic on CPU: the model is built after `torch.manual_seed(seed)`, every epoch's order is a
function of (seed, epoch) (a DistributedSampler, also with one process), and the global torch RNG
state is saved in the last checkpoint. So a run killed at any moment and resumed from
`checkpoints/last.pt` replays the interrupted epoch exactly and ends with the same metrics as a run
that was never interrupted.

Batches carry sample indices: the sampler yields indices into the in-memory train arrays, and the
same indices pick the cached teacher logits, so soft targets always line up with their images.

Files (rank 0 only): `checkpoints/last.pt` (weights + loss params + optimizer + scheduler + RNG +
epoch + history, written atomically every epoch), `checkpoints/best.pt` (weights of the best val
epoch), `metrics.jsonl` (one JSON line per epoch, rebuilt from the checkpoint on resume).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data.distributed import DistributedSampler

from edgekd.config import TrainConfig
from edgekd.distill.ddp import DistContext
from edgekd.distill.losses import LossInputs, LossStack
from edgekd.distill.taps import FeatureTaps
from edgekd.errors import ConfigError, TrainingError
from edgekd.fileio import atomic_write_text, atomic_write_with

STATE_FORMAT = "edgekd.trainstate/1"
# online teacher: x -> (logits, {tap path: feature})
OnlineTeacher = Callable[[Tensor], tuple[Tensor, dict[str, Tensor]]]


class StudentObjective(nn.Module):
    """Student + its loss modules in one module, so DDP also syncs the gradients of trainable loss
    parameters (hint projections). `forward` returns (total loss, per-loss values, student logits).

    `input_size`: a student with its own resolution (``resolution=r``) gets each batch resampled to
    r x r here (bilinear, half-pixel centres: what `edgekd.data.resolution` does to its val and test
    splits, equal to float precision), so the train views stay at the data's size in memory: the 8
    views of 7,000 28 px images held at 128 px were 3.7 GB (12.3 GB peak with copies), at 28 px 0.18 GB."""

    def __init__(self, student: nn.Module, losses: LossStack, input_size: int | None = None) -> None:
        super().__init__()
        self.student = student
        self.losses = losses
        self.input_size = input_size
        self.taps = FeatureTaps(student, losses.student_taps, role="student")

    def forward(self, x: Tensor, y: Tensor, teacher_logits: Tensor | None, teacher_features: dict[str, Tensor],
                teacher_targets: dict[str, Tensor], label_dist: Tensor | None = None):
        self.taps.clear()
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        logits = self.student(x)
        inputs = LossInputs(logits, y, teacher_logits, dict(self.taps.features), teacher_features, teacher_targets,
                            label_dist)
        total, parts = self.losses(inputs)
        return total, parts, logits


@dataclass
class Tensors:
    """In-memory split: inputs, labels and (cached) teacher logits aligned by row; `label_dist`: the
    mixed hard labels (N×K) of mixup views, `y` then their dominant class."""

    x: Tensor
    y: Tensor
    teacher_logits: Tensor | None = None
    label_dist: Tensor | None = None


@dataclass
class FitResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = -1.0
    stopped_early: bool = False
    resumed_from: int | None = None


class Trainer:
    def __init__(
        self,
        objective: StudentObjective,
        train: Tensors,
        val: Tensors,
        cfg: TrainConfig,
        *,
        run_dir: Path | None = None,
        dist: DistContext | None = None,
        online_teacher: OnlineTeacher | None = None,
        draws: int = 1,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.objective = objective
        self.train_data, self.val_data, self.cfg = train, val, cfg
        self.run_dir = run_dir
        self.dist = dist or DistContext()
        self.online_teacher = online_teacher
        # `draws` stacked views of the split (see edgekd.distill.augment.shift_draws): an epoch
        # samples the N images of one draw, rows [d·N, (d+1)·N)
        if draws < 1 or len(train.y) % draws:
            raise ConfigError(f"train split of {len(train.y)} rows cannot hold {draws} equal draws")
        self.draws = draws
        self.draw_rows = len(train.y) // draws
        self.progress = progress and self.dist.is_main
        self.log = log if self.dist.is_main else None
        self.model: nn.Module = objective
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            device_ids = [self.dist.local_rank] if self.dist.device.startswith("cuda") else None
            self.model = DDP(objective, device_ids=device_ids)
        self.sampler = DistributedSampler(
            range(self.draw_rows), num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True, seed=cfg.seed
        )
        self.steps_per_epoch = math.ceil(len(self.sampler) / cfg.batch_size)
        params = [p for p in objective.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        total_steps = max(1, cfg.epochs * self.steps_per_epoch)
        if cfg.schedule == "cosine":
            self.scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=total_steps
            )
        else:
            self.scheduler = torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)
        # per-sample teacher targets (e.g. p^T(t) for KD) derived once from the cached logits
        self.train_targets: dict[str, Tensor] = {}
        if train.teacher_logits is not None:
            with torch.no_grad():
                self.train_targets = objective.losses.teacher_targets(train.teacher_logits)
        self._gather_logits = train.teacher_logits is not None and (
            objective.losses.reads_raw_teacher_logits or not self.train_targets)
        self.epoch = 0  # completed epochs
        self.result = FitResult()
        self._bad_epochs = 0

    # ---- one epoch -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """Train epoch `epoch` (1-based); returns loss/accuracy/time (summed over ranks)."""
        self.objective.train()
        self.sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(self.sampler)), dtype=torch.long)
        if self.draws > 1:
            order = order + ((epoch - 1) % self.draws) * self.draw_rows
        d = self.train_data
        bs = self.cfg.batch_size
        sums = {"loss": 0.0, "correct": 0.0, "n": 0.0}
        part_sums: dict[str, float] = {}
        bar = _Bar(self.steps_per_epoch, f"epoch {epoch}/{self.cfg.epochs}") if self.progress else None
        start = time.perf_counter()
        try:
            for step, lo in enumerate(range(0, len(order), bs), start=1):
                idx = order[lo : lo + bs]
                x, y = d.x[idx], d.y[idx]
                t_logits = d.teacher_logits[idx] if self._gather_logits else None
                t_feats: dict[str, Tensor] = {}
                targets = {k: v[idx] for k, v in self.train_targets.items()}
                label_dist = d.label_dist[idx] if d.label_dist is not None else None
                if self.online_teacher is not None:
                    with torch.no_grad():
                        t_logits, t_feats = self.online_teacher(x)
                        targets = self.objective.losses.teacher_targets(t_logits)
                total, parts, logits = self.model(x, y, t_logits, t_feats, targets, label_dist)
                if not torch.isfinite(total):
                    lr = self.optimizer.param_groups[0]["lr"]
                    raise TrainingError(
                        f"loss became {float(total.detach())} at epoch {epoch}, step {step}; training diverged: "
                        f"lower the learning rate (now {lr:.3g}, e.g. --lr {self.cfg.lr / 10:.3g}) or check the data"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                self.scheduler.step()
                n = float(y.shape[0])
                sums["loss"] += float(total.detach()) * n
                sums["correct"] += float((logits.detach().argmax(1) == y).sum())
                sums["n"] += n
                for name, value in parts.items():
                    part_sums[name] = part_sums.get(name, 0.0) + float(value.detach()) * n
                if bar is not None:
                    bar.update(sums["loss"] / sums["n"], sums["correct"] / sums["n"])
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
        names = sorted(part_sums)
        reduced = self.dist.all_reduce_sum([sums["loss"], sums["correct"], sums["n"]] + [part_sums[k] for k in names])
        n_all = max(reduced[2], 1.0)
        out = {
            "epoch": epoch,
            "train_loss": reduced[0] / n_all,
            "train_acc": reduced[1] / n_all,
            "lr": self.optimizer.param_groups[0]["lr"],
            "epoch_time_s": elapsed,
        }
        out.update({f"loss_{k}": v / n_all for k, v in zip(names, reduced[3:])})
        return out

    @torch.no_grad()
    def evaluate(self, data: Tensors, module: nn.Module | None = None) -> tuple[float, float]:
        """(cross-entropy, accuracy) of the student (or `module`) on `data`, eval mode, full split."""
        model = module if module is not None else self.objective.student
        was_training = model.training
        model.eval()
        loss, correct = 0.0, 0.0
        bs = self.cfg.eval_batch_size
        for lo in range(0, len(data.y), bs):
            logits = model(data.x[lo : lo + bs])
            y = data.y[lo : lo + bs]
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
        model.train(was_training)
        n = max(len(data.y), 1)
        return loss / n, correct / n

    # ---- the whole run --------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> FitResult:
        if resume:
            self._load_last()
        for epoch in range(self.epoch + 1, self.cfg.epochs + 1):
            row = self.train_epoch(epoch)
            val_loss, val_acc = self.evaluate(self.val_data)
            # rank 0's view decides best / early stop on every rank (BN buffers differ per rank)
            val_loss, val_acc = self.dist.broadcast([val_loss, val_acc])
            row.update(val_loss=val_loss, val_acc=val_acc)
            improved = val_acc > self.result.best_val_acc
            if improved:
                self.result.best_val_acc, self.result.best_epoch = val_acc, epoch
                self._bad_epochs = 0
                self._save_best(epoch, val_acc)
            else:
                self._bad_epochs += 1
            self.epoch = epoch
            self.result.history.append(row)
            stop = self.cfg.patience > 0 and self._bad_epochs >= self.cfg.patience
            self.result.stopped_early = stop and epoch < self.cfg.epochs
            self._save_last()
            self._append_metrics(row)
            if self.log:
                self.log(
                    f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
                    f"val acc {val_acc:.4f}  ({row['epoch_time_s']:.2f}s)"
                )
            if stop:
                break
        return self.result

    # ---- checkpoints ----------------------------------------------------------------------------
    @property
    def _ckpt_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    def _save_best(self, epoch: int, val_acc: float) -> None:
        if self._ckpt_dir is None or not self.dist.is_main:
            return
        state = {"format": STATE_FORMAT, "epoch": epoch, "val_acc": val_acc, "student": _cpu(self.objective.student.state_dict())}
        atomic_write_with(self._ckpt_dir / "best.pt", lambda p: torch.save(state, p))

    def _save_last(self) -> None:
        if self._ckpt_dir is None or not self.dist.is_main:
            return
        state = {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "student": _cpu(self.objective.student.state_dict()),
            "losses": _cpu(self.objective.losses.state_dict()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng_torch": torch.get_rng_state(),
            "best_epoch": self.result.best_epoch,
            "best_val_acc": self.result.best_val_acc,
            "bad_epochs": self._bad_epochs,
            "stopped_early": self.result.stopped_early,
            "history_json": json.dumps(self.result.history),
        }
        atomic_write_with(self._ckpt_dir / "last.pt", lambda p: torch.save(state, p))

    def _load_last(self) -> None:
        path = self._ckpt_dir / "last.pt" if self._ckpt_dir is not None else None
        if path is None or not path.is_file():
            raise ConfigError(f"cannot resume: {path} does not exist; start the run without --resume")
        state = load_state(path)
        self.objective.student.load_state_dict(state["student"])
        self.objective.losses.load_state_dict(state["losses"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        self.epoch = int(state["epoch"])
        self._bad_epochs = int(state["bad_epochs"])
        self.result = FitResult(
            history=json.loads(state["history_json"]),
            best_epoch=int(state["best_epoch"]),
            best_val_acc=float(state["best_val_acc"]),
            stopped_early=bool(state["stopped_early"]),
            resumed_from=self.epoch,
        )
        if self.result.stopped_early:  # the run had already finished by early stop
            self.epoch = self.cfg.epochs
        if self.run_dir is not None and self.dist.is_main:
            # lines written after the checkpoint (killed between the two writes) are dropped
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.result.history)
            atomic_write_text(self.run_dir / "metrics.jsonl", text)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.run_dir is None or not self.dist.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")


def load_state(path: Path) -> dict[str, Any]:
    """A trainer checkpoint (last.pt / best.pt), read with weights_only=True."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torn or foreign file: torch raises several types
        raise ConfigError(f"checkpoint {path} is unreadable ({type(err).__name__}); start a new run with another -o") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"checkpoint {path} is not an edgekd training state; start a new run with another -o")
    return state


def _cpu(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


class _Bar:
    """A rich progress bar on stderr (only used when stderr is a terminal and output is not --json)."""

    def __init__(self, total: int, title: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f}"), TimeRemainingColumn(),
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(title, total=total, loss=float("nan"), acc=0.0)

    def update(self, loss: float, acc: float) -> None:
        self.progress.update(self.task, advance=1, loss=loss, acc=acc)

    def close(self) -> None:
        self.progress.stop()


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()
