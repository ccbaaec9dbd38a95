"""`edgekd distill`: train a student from a teacher's soft targets (options, a YAML file, or both)."""
from __future__ import annotations

import json
import os
from typing import Any

import click

from edgekd.cli.params import FloatRange

from edgekd.config import TEXT_TRAIN_DEFAULTS
from edgekd.errors import ConfigError
# losses whose kwargs the --temperature / --alpha / --lam / --hard-targets shortcuts set (each
# shortcut goes to the losses that take it: --temperature to all of these, --alpha to kd/data_distill/dkd)
_KD_LIKE = ("kd", "data_distill", "dkd", "dist")


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    """The result of a run: one JSON object with --json, else a short table (rank 0 only)."""
    if not is_main_process():
        return
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True, default=str))
        return

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    click.echo(f"run          {summary.get('run_dir', '-')}")
    click.echo(f"model        {summary['student']}  ({summary['params']:,} params, {summary['macs']:,} MACs)")
    if summary.get("teacher"):
        ratio = summary.get("params_ratio")
        click.echo(f"teacher      {summary['teacher']}  acc {pct(summary['teacher_acc'])}"
                   + (f", student/teacher params {ratio:.3f}" if ratio else ""))
        click.echo(f"soft targets {', '.join(f'{k}: {v}' for k, v in summary['soft_target_cache'].items())}")
    click.echo(f"test acc     {pct(summary['test_acc'])} ({summary['kept']} epoch; last {pct(summary['test_acc_last'])}, "
               f"best-val epoch {summary['best_epoch']} {pct(summary['test_acc_best'])})")
    click.echo(f"time         {summary['train_time_s']:.1f}s over {summary['epochs_run']} epochs")
    if summary.get("student_path"):
        click.echo(f"saved        {summary['student_path']}")


def echo_log(as_json: bool):
    """Per-epoch lines go to stdout in text mode and nowhere with --json (stdout is one JSON object)."""
    return None if as_json else (lambda line: click.echo(line))


def loss_overrides(base_losses: Any, loss: str | None, kd_kwargs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The `losses` list after --loss and the KD shortcuts are applied (None: leave as is)."""
    if loss is None and not kd_kwargs:
        return None
    if loss is not None:
        entries: list[dict[str, Any]] = [{"key": loss}]
    elif base_losses:
        entries = [dict(e) if isinstance(e, dict) else {"key": e} for e in (base_losses if isinstance(base_losses, list) else [base_losses])]
    else:
        entries = [{"key": "kd"}]
    import inspect

    from edgekd.distill.losses import LOSSES

    used: set[str] = set()
    for entry in entries:
        if entry.get("key") in _KD_LIKE:
            accepted = inspect.signature(LOSSES.get(entry["key"]).__init__).parameters
            given = {k: v for k, v in kd_kwargs.items() if k in accepted}
            entry["kwargs"] = {**(entry.get("kwargs") or {}), **given}
            used |= set(given)
    unused = [k for k in kd_kwargs if k not in used]
    if unused:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in unused)
        keys = " / ".join(e.get("key", "?") for e in entries)
        raise ConfigError(f"{flags} do not apply to the loss {keys}; use --loss kd (or data_distill, dkd, dist) or drop them")
    return entries


def _recipe_help() -> str:
    from edgekd.config import DEFAULT_RECIPE, RECIPES

    return ("Distillation recipe (objective + augmentation): " + ", ".join(RECIPES)
            + f". [default: {DEFAULT_RECIPE}] --loss / --shift / --draws override its parts.")


@click.command("distill")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML run file (see edgekd/config.py); the options below override it.")
@click.option("--teacher", default=None, help="Teacher: an edgekd checkpoint (.pt, e.g. RUN/student.pt from "
              "`edgekd teacher`) or any ONNX classifier (.onnx, e.g. a Keras model exported with tf2onnx).")
@click.option("--data", default=None, help="Dataset: `digits` (built in), an .npz with x/y, or an image folder. [default: digits]")
@click.option("--image-size", type=click.IntRange(min=4), default=None, help="Resample images to N×N (must match the teacher).")
@click.option("--max-len", type=click.IntRange(min=3), default=None, help="Text data: token sequence length (must match the teacher). [default: 32]")
@click.option("--tokenizer", default=None, help="Text data: local tokenizer dir/file, or the text teacher's .pt to reuse its tokenizer. "
              "[default: WordPiece learned from the train split]")
@click.option("--student", default=None, help="Student model spec, e.g. cnn:width=8,depth=2 (see `edgekd models`). [default: the task's default "
              "student, printed by `edgekd models`]")
@click.option("--family", default=None, help="Your own model family: a builder module:function (e.g. my_pkg.my_models:build) "
              "returning an nn.Module; --student then names it (default: its smallest spec). See `edgekd models --help`.")
@click.option("--family-grid", type=click.Path(dir_okay=False), default=None,
              help="YAML grid of the --family builder's arguments (key: [values]); every combination is one spec.")
@click.option("--recipe", default=None, help=_recipe_help())
@click.option("--loss", default=None, help="Objective: kd (Hinton), dkd (decoupled KD), dist (correlation KD), data_distill, "
              "ce (labels only), hint (needs a YAML entry for its layers). [default: the recipe's, kd]")
@click.option("--temperature", type=FloatRange(min=0, min_open=True), default=None, help="Temperature T of kd/dkd/dist. [default: 4]")
@click.option("--alpha", type=FloatRange(0, 1), default=None, help="kd: weight of the hard-label loss, α·L_hard + (1−α)·L_soft [default: the recipe's, 0.5; 0.9 in kd-consistent]; "
              "dkd: weight of the target-class term.")
@click.option("--lam", type=FloatRange(min=0), default=None, help="data_distill: weight λ of the soft loss on samples the teacher gets right.")
@click.option("--hard-targets", type=click.Choice(["labels", "teacher"]), default=None,
              help="Hard targets of KD: ground-truth labels or the teacher's arg-max. [default: labels]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Training epochs. [default: 40; text data: 10]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (per process under torchrun). [default: 64]")
@click.option("--lr", type=FloatRange(min=0, min_open=True), default=None, help="Peak learning rate (cosine decay to 0). [default: 0.01; text data: 0.003]")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None, help="Optimizer. [default: adamw]")
@click.option("--seed", type=int, default=None, help="Seed of init, data order and dropout; same seed, same result on CPU. [default: 0]")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="torch CPU threads (0: one per core). [default: 0]")
@click.option("--shift", type=click.IntRange(min=0), default=None, help="Augmentation: shift images by up to N pixels (0: none). [default: the recipe's, 0.075 of the image side: 2 px at 28-32, none at 8]")
@click.option("--draws", type=click.IntRange(min=0), default=None, help="Augmentation: shifted views of the train split, one per "
              "epoch, cycled; the teacher's soft targets are cached for each view. [default: the recipe's, 8]")
@click.option("--patience", type=click.IntRange(min=0), default=None, help="Stop after this many epochs without a better val "
              "accuracy (0: never). [default: 0]")
@click.option("--online", is_flag=True, default=None, help="Run the teacher on every batch instead of reading the soft-target cache.")
@click.option("--cache-dir", default=None, help="Soft-target cache folder. [default: $EDGEKD_CACHE or ./.edgekd-cache]")
@click.option("-o", "--output", default=None, help="Run directory to create (config.yaml, metrics.jsonl, checkpoints/, student.pt, summary.json).")
@click.option("--resume", is_flag=True, help="Continue the run in -o from its last checkpoint (after a crash or kill).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (no progress output).")
def command(config_path: str | None, teacher: str | None, data: str | None, image_size: int | None,
            max_len: int | None, tokenizer: str | None,
            student: str | None, family: str | None, family_grid: str | None, recipe: str | None, loss: str | None, temperature: float | None, alpha: float | None,
            lam: float | None, hard_targets: str | None, epochs: int | None, batch_size: int | None,
            lr: float | None, optimizer: str | None, seed: int | None, threads: int | None, shift: int | None,
            draws: int | None, patience: int | None, online: bool | None,
            cache_dir: str | None, output: str | None, resume: bool, as_json: bool) -> None:
    """Distill a teacher into a student: the teacher's soft targets are computed once (and cached),
    then the student trains on them.

    \b
    The default recipe, kd-consistent-a0.5 (chosen on the validation splits of mnist10k and
    digits with full teachers; scripts/bench_distill.py, docs/MEASUREMENTS.md "Distillation defaults"):
      - consistent teaching: 8 views of the train split, each image shifted by up to 0.075 of
        the image side (2 px at 28-32 px; none at 8x8, where a 2-px shift is a quarter of the
        frame); view 0 is the clean split, epoch e trains on view (e-1) mod 8, so an epoch costs
        what an un-augmented one does. The teacher labels every view once (cached per view): the
        soft targets are always for the exact image the student sees.
      - loss: Hinton KD, T=4, alpha=0.5 (half hard labels, half T^2-scaled soft targets).
      - 40 epochs, AdamW lr 0.01, cosine decay; -o RUN/student.pt keeps the best-on-val epoch.
    What it bought over plain kd (val, mean of 3 seeds / 1 seed): mnist10k 97.40 vs 96.80 %,
    digits 32x32 97.77 vs 96.28 %.
    The defaults around it: the student is cnn:width=6,depth=4 (8.9k params, its first conv at
    full resolution), the teacher (`edgekd teacher`) trains 20 epochs on the same 8 views. On
    mnist10k (3 seeds, test): KD 99.11 % vs CE 98.71 % on the same views, teacher 99.47 %:
    gap recovered 0.53, KD ahead on every seed; an epoch costs 1.05x a CE epoch
    (scripts/bench_distill.py, docs/MEASUREMENTS.md "Distillation defaults"). A student that cannot
    fit the views gains little: the earlier default cnn:width=8,depth=3 (strided stem) recovered 0.24.
    DKD, DIST, T 1/2, mixup views and a teacher assistant did not beat this recipe (docs/MEASUREMENTS.md).
    Other recipes: kd (the same loss on the clean images only), kd-consistent (alpha 0.9),
    kd-consistent-t2 (temperature 2), kd-fm (function matching: the views also mixed by mixup,
    the teacher labels each mixed image, the hard term reads the mixed label), dkd-consistent,
    dist-consistent. --loss / --shift / --draws override a recipe's parts.

    \b
    Examples:
      edgekd distill --teacher runs/teacher/student.pt --student cnn:width=8,depth=2 -o runs/s1
      edgekd distill --teacher keras_teacher.onnx --loss kd --temperature 4 --alpha 0.3 -o runs/s2
      edgekd distill --config run.yaml --seed 3 -o runs/s3
      torchrun --nproc_per_node 2 -m edgekd distill --config run.yaml     (DDP, gloo on CPU)
    """
    from edgekd import api
    from edgekd.config import load_config, merge_overrides

    base = load_config(config_path) if config_path else {}
    over: dict[str, Any] = {}
    for key, value in (("teacher", teacher), ("student", student), ("online", online),
                       ("cache_dir", cache_dir), ("output", output), ("family", family), ("family_grid", family_grid)):
        if value is not None:
            over[key] = value
    data_over = {k: v for k, v in (("source", data), ("image_size", image_size), ("max_len", max_len),
                                   ("tokenizer", tokenizer)) if v is not None}
    train_over = {k: v for k, v in (("epochs", epochs), ("batch_size", batch_size), ("lr", lr),
                                    ("optimizer", optimizer), ("seed", seed), ("threads", threads),
                                    ("patience", patience)) if v is not None}
    if recipe is not None:  # the recipe's losses and augmentation (over the file's; options still win)
        from edgekd.config import recipe as named_recipe

        chosen = named_recipe(recipe)
        base = merge_overrides(base, {"losses": chosen["losses"], "augment": {"shift": 0, "copies": 0, "draws": 0,
                                                                               **chosen["augment"]}})
    aug_over = {k: v for k, v in (("shift", shift), ("draws", draws)) if v is not None}
    if shift is not None:  # pixels given: they replace the recipe's (or the file's) relative shift
        aug_over["shift_fraction"] = 0.0
    if aug_over:
        over["augment"] = aug_over
    if data_over:
        over["data"] = data_over
    if train_over:
        over["train"] = train_over
    kd_kwargs = {k: v for k, v in (("temperature", temperature), ("alpha", alpha), ("lam", lam),
                                   ("hard_targets", hard_targets)) if v is not None}
    losses = loss_overrides(base.get("losses"), loss, kd_kwargs)
    if losses is not None:
        over["losses"] = losses
    raw = merge_overrides(base, over)
    from edgekd.data import source_task
    from edgekd.models import default_specs

    task = source_task(str((raw.get("data") or {}).get("source") or ""))
    if task == "text":  # text data: its own (shorter, gentler) schedule
        raw["train"] = {**TEXT_TRAIN_DEFAULTS, **(raw.get("train") or {})}
    if raw.get("family") and "student" not in raw:  # a user family without --student: its smallest spec
        from edgekd.models import MODELS
        from edgekd.models.user_family import register_user_family

        raw["student"] = MODELS.get(register_user_family(raw["family"], raw.get("family_grid"))).search_space()[0]
    raw.setdefault("student", default_specs(task)[1])  # text: the default small transformer student
    if "output" not in raw:
        raise ConfigError("no run directory: pass -o RUN (or set `output:` in the config file)")
    summary = api.distill(raw, resume=resume, progress=False if as_json else None, log=echo_log(as_json))
    print_summary(summary, as_json)


def is_main_process() -> bool:
    """False on ranks 1.. under torchrun: only rank 0 prints (the run directory is rank 0's too)."""
    return int(os.environ.get("RANK", "0")) == 0
