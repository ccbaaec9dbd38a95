"""Run configuration: plain dataclasses, read from YAML with `yaml.safe_load`, written back resolved.

A distillation run in YAML (every key optional except `student`; CLI options override the file):

    teacher: runs/teacher/student.pt     # edgekd checkpoint (.pt) or any ONNX classifier (.onnx)
    student: "cnn:width=6,depth=4"
    data: {source: digits, image_size: 32, seed: 0}
    losses:
      - {key: kd, weight: 1.0, kwargs: {temperature: 4.0, alpha: 0.5}}
    train: {epochs: 40, batch_size: 64, lr: 0.01, optimizer: adamw, seed: 0}
    augment: {shift: 0, copies: 0, seed: 0}
    online: false
    output: runs/student

Unknown keys are errors with a "did you mean" hint: a typo never silently falls back to a default.
No tags, no code: `safe_load` only.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from edgekd.errors import ConfigError


@dataclass
class DataConfig:
    """Which dataset and how it is shaped (see `edgekd.data.load_dataset`)."""

    source: str = "digits"
    image_size: int | None = None
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    max_len: int | None = None  # text only: token sequence length (default 32)
    tokenizer: str | None = None  # text only: local tokenizer dir/file; None = WordPiece on the train split


@dataclass
class LossEntry:
    """One term of the objective: `weight · LOSSES[key](**kwargs)`."""

    key: str = "kd"
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Optimization. `patience` > 0 stops early after that many epochs without a better val accuracy.
    `keep` picks which weights become `student.pt`: the best-on-val epoch or the last one.

    The defaults are the image-student recipe measured by scripts/bench_distill.py: KD beats
    cross-entropy only once the student trains long enough to fit the train split (at 10 epochs the
    default student still underfits and KD's soft loss loses to plain CE; on mnist10k at 20 epochs
    it still lost, see docs/MEASUREMENTS.md; at 40 on digits KD beat CE on val on every split tried), and lr 0.01
    beat 0.003 on val for both. `patience` stays 0 for students: replayed on the val curves of the
    digits bench runs, patience 5 stopped every run early at a lower val accuracy (cosine decay keeps
    paying to the end). Teachers (`edgekd teacher`) and text runs (`edgekd distill` on text data)
    set their own epochs, lr and patience."""

    epochs: int = 40
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | sgd
    momentum: float = 0.9  # sgd only
    schedule: str = "cosine"  # cosine | constant
    seed: int = 0
    patience: int = 0
    keep: str = "best"  # best | last
    eval_batch_size: int = 512
    threads: int = 0  # torch intra-op threads for this run; 0 keeps torch's default (one per core)


# epochs / lr of a text student unless given (the TrainConfig defaults above are the image-student
# recipe); `edgekd distill` and deploy's text students both read them here
TEXT_TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 10, "lr": 3e-3}


@dataclass
class AugmentConfig:
    """Offline augmentation, views shifted by up to `shift` pixels, drawn once from `seed`:
    `copies` extra views of every image trained on every epoch, or `draws` views of the split of
    which epoch e trains on draw (e − 1) mod draws (same epoch cost as no augmentation; draw 0 is
    the clean split). The views are fixed arrays, so the teacher's logits on exactly them are cached
    per augmentation seed like any other split (see `edgekd.distill.cache`, `edgekd.distill.augment`).
    `mixup` > 0 (draws only) also mixes every image of draws 1.. with another image of the same draw,
    x' = λ·x_i + (1 − λ)·x_j, λ ~ Beta(mixup, mixup) folded to ≥ 0.5, its hard label the mix
    λ·onehot(y_i) + (1 − λ)·onehot(y_j) (Zhang et al., ICLR 2018); the teacher labels the mixed image
    ("function matching", Beyer et al., CVPR 2022; see `edgekd.distill.augment.mix_draws`).
    Image data only: text runs are not augmented. The class defaults are "none"; a DistillConfig
    (and every key not given in a config's `augment:`) defaults to the default recipe's (`RECIPES`)."""

    shift: int = 0
    copies: int = 0
    seed: int = 0
    draws: int = 0
    # shift by up to this fraction of the image's shorter side (whole pixels, rounded down) when
    # `shift` is 0: a recipe chosen on 28-32 px images means the same on 8 px ones (see `shift_pixels`)
    shift_fraction: float = 0.0
    mixup: float = 0.0  # Beta(mixup, mixup) mixing of draws 1.. (0: off); needs draws > 1

    def shift_pixels(self, height: int, width: int) -> int:
        """The shift in pixels for images of height×width: `shift` if given, else
        floor(shift_fraction · min(height, width)) (0.075: 2 px at 28 and 32, 1 at 14, 0 at 8)."""
        if self.shift > 0:
            return self.shift
        return int(math.floor(self.shift_fraction * min(height, width) + 1e-9))

    @property
    def active(self) -> bool:
        return ((self.shift > 0 or self.shift_fraction > 0) and (self.copies > 0 or self.draws > 1)) or (
            self.mixup > 0 and self.draws > 1)


@dataclass
class DistillConfig:
    """A whole run. With `teacher: null` and `losses: [ce]` it trains a model on labels alone
    (this is how `edgekd teacher` trains the teacher)."""

    student: str = ""
    teacher: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    losses: list[LossEntry] = field(default_factory=lambda: _default_losses())
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=lambda: _default_augment())
    online: bool = False  # run the teacher every step instead of reading the soft-target cache
    cache_dir: str | None = None  # default: $EDGEKD_CACHE or ./.edgekd-cache
    output: str = "runs/distill"
    role: str = "student"  # "teacher" for `edgekd teacher` runs (recorded in summary.json)
    # a user's own model family (`edgekd.models.user_family`): builder `module:function` and its
    # parameter-grid YAML; registered before the student is built, so `student` may name it
    family: str | None = None
    family_grid: str | None = None


# ---- distillation recipes ------------------------------------------------------------------------
# A recipe = the objective + the augmentation a student is distilled with. `DEFAULT_RECIPE` is what
# `edgekd distill` and `edgekd deploy` use when the user names neither losses nor augmentation: the
# DistillConfig defaults below are built from it, so this is the one place the default lives. How it
# was chosen (validation accuracy on mnist10k and digits, with full teachers): scripts/bench_distill.py
# and docs/MEASUREMENTS.md "Distillation defaults".
# Per-epoch shifted views for consistent teaching: 8 draws, each image shifted by up to 0.075 of the
# image side (2 px at 28 and 32, where the recipes were measured; none at digits' native 8x8, where a
# 2-px shift is a quarter of the frame: deploy's mlp:hidden=128x128, 15 epochs, KD alpha 0.9, val 94.80 %
# with it, 97.40 % with 1 px; plain kd without views 97.03 %)
VIEW_SHIFT_FRACTION = 0.075  # also what `edgekd teacher --views N` shifts by
_VIEWS = {"shift_fraction": VIEW_SHIFT_FRACTION, "draws": 8}
RECIPES: dict[str, dict[str, Any]] = {
    # Hinton KD on the clean images (edgekd's default before issue 13)
    "kd": {"losses": [{"key": "kd", "kwargs": {"temperature": 4.0, "alpha": 0.5}}], "augment": {}},
    # the same objective on a new shifted view of every image each epoch, with the teacher's soft
    # targets for exactly that view (cached per draw: no teacher pass during training). The default:
    # best mean val accuracy over mnist10k and digits (3 seeds each), above plain kd on both
    "kd-consistent-a0.5": {"losses": [{"key": "kd", "kwargs": {"temperature": 4.0, "alpha": 0.5}}],
                           "augment": _VIEWS},
    # alpha 0.9: mostly the labels, the soft targets as a regularizer; tied with alpha 0.5 on val
    # (better on digits, worse on mnist10k); it was the pick when the mnist10k teacher was cut short
    "kd-consistent": {"losses": [{"key": "kd", "kwargs": {"temperature": 4.0, "alpha": 0.9}}],
                      "augment": _VIEWS},
    # T 2 instead of 4 (same views, alpha): the soft targets closer to the labels, less of the tiny
    # student's capacity spent on the teacher's ranking of wrong classes. Val, 3 seeds: ahead of the
    # default on digits (98.51 vs 97.77 %), behind on mnist10k (97.36 vs 97.47): not ahead on both, so
    # not the default (docs/MEASUREMENTS.md, "Distillation defaults")
    "kd-consistent-t2": {"losses": [{"key": "kd", "kwargs": {"temperature": 2.0, "alpha": 0.5}}],
                         "augment": _VIEWS},
    # function matching (Beyer et al., CVPR 2022): the views also mixed (mixup, lambda ~ Beta(1, 1)
    # folded to >= 0.5), the teacher's answer for each mixed image cached, the hard term on the mixed
    # label. Behind the default for the 6.3k mnist10k student (seed 0 val 96.60 vs 97.20 %; CE on the
    # same mixed views 96.13): the mixes are harder still for a student that already underfits
    "kd-fm": {"losses": [{"key": "kd", "kwargs": {"temperature": 4.0, "alpha": 0.5}}],
              "augment": {**_VIEWS, "mixup": 1.0}},
    # DKD (Zhao et al., CVPR 2022), alpha 1, beta 8, plus CE: behind the default for the 6.3k mnist10k
    # student with the full teacher (seed 0 val 96.07 vs 97.20 %): the non-target term costs it fit
    # (train accuracy on the views 94.8 vs 97.3 %)
    "dkd-consistent": {"losses": [{"key": "dkd", "kwargs": {"temperature": 4.0, "alpha": 1.0, "beta": 8.0}}],
                       "augment": _VIEWS},
    "dist-consistent": {"losses": [{"key": "dist", "kwargs": {"temperature": 4.0, "beta": 1.0, "gamma": 1.0}}],
                        "augment": _VIEWS},
}
# At digits' native 8x8 (what `edgekd deploy` trains on by default) the views are off (0.075 x 8 px
# rounds down to 0), so deploy's students there train exactly as with plain `kd`.
DEFAULT_RECIPE = "kd-consistent-a0.5"


def recipe(name: str) -> dict[str, Any]:
    """{losses: [...], augment: {...}} of a named recipe (a fresh copy); unknown names: ConfigError."""
    import copy

    if name not in RECIPES:
        close = difflib.get_close_matches(name, list(RECIPES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown recipe {name!r}.{hint} Valid recipes: {', '.join(RECIPES)}")
    return copy.deepcopy(RECIPES[name])


def _default_losses() -> list[LossEntry]:
    return [LossEntry(e["key"], 1.0, dict(e["kwargs"])) for e in RECIPES[DEFAULT_RECIPE]["losses"]]


def _default_augment() -> AugmentConfig:
    return AugmentConfig(**RECIPES[DEFAULT_RECIPE]["augment"])


_NESTED = {"data": DataConfig, "train": TrainConfig, "augment": AugmentConfig}


def _check_keys(obj: Mapping[str, Any], cls: type, where: str) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in obj:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: unknown key {key!r}.{hint} Valid keys: {', '.join(valid)}")


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Light type check against the default's type (ints accepted for floats, None kept)."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if isinstance(default, int) and not float(value).is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _section(cls: type, raw: Any, where: str) -> Any:
    base = _default_augment() if cls is AugmentConfig else cls()  # keys not given keep the recipe's
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__}")
    _check_keys(raw, cls, where)
    values = {k: _coerce(v, getattr(base, k), f"{where}.{k}") for k, v in raw.items()}
    if cls is AugmentConfig and values.get("copies") and "draws" not in values:
        values["draws"] = 0  # asking for fixed copies replaces the recipe's per-epoch draws
        values.setdefault("mixup", 0.0)  # and its mixed ones
    if cls is AugmentConfig and "shift" in values and "shift_fraction" not in values:
        values["shift_fraction"] = 0.0  # a shift in pixels replaces the recipe's relative one
    return dataclasses.replace(base, **values)


def dataclass_from_mapping(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """Build the flat config dataclass `cls` (e.g. DeployConfig) from a mapping, the way every config
    is read: unknown keys are a ConfigError with a "did you mean" hint and the valid keys, values are
    type-checked against the field's default (`_coerce`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys, got {type(raw).__name__}")
    _check_keys(raw, cls, where)
    base = cls()
    return cls(**{k: _coerce(v, getattr(base, k), f"{where}.{k}") for k, v in raw.items()})


def _loss_entries(raw: Any, where: str) -> list[LossEntry]:
    if raw is None:
        return _default_losses()
    if isinstance(raw, (str, Mapping)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a list like [{{key: kd, weight: 1.0, kwargs: {{...}}}}]")
    entries = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"key": item}
        if not isinstance(item, Mapping) or "key" not in item:
            raise ConfigError(f"{where}[{i}]: each loss needs a 'key' (e.g. {{key: kd}}), got {item!r}")
        _check_keys(item, LossEntry, f"{where}[{i}]")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where}[{i}].kwargs: expected a mapping, got {kwargs!r}")
        weight = _coerce(item.get("weight", 1.0), 1.0, f"{where}[{i}].weight")
        entries.append(LossEntry(str(item["key"]), weight, dict(kwargs)))
    return entries


def config_from_dict(raw: Mapping[str, Any], where: str = "config") -> DistillConfig:
    """Build a DistillConfig from a plain mapping, checking every key and type."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: the top level must be a mapping of keys, got {type(raw).__name__}")
    _check_keys(raw, DistillConfig, where)
    base = DistillConfig()
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _NESTED:
            values[key] = _section(_NESTED[key], value, f"{where}.{key}")
        elif key == "losses":
            values[key] = _loss_entries(value, f"{where}.losses")
        else:
            values[key] = _coerce(value, getattr(base, key), f"{where}.{key}")
    cfg = DistillConfig(**values)
    validate(cfg, where)
    return cfg


def validate(cfg: DistillConfig, where: str = "config") -> None:
    """Checks that need more than one key; registry names are checked where they are resolved."""
    t = cfg.train
    if t.epochs < 1:
        raise ConfigError(f"{where}.train.epochs={t.epochs}: must be >= 1")
    if t.batch_size < 1:
        raise ConfigError(f"{where}.train.batch_size={t.batch_size}: must be >= 1")
    if t.lr <= 0:
        raise ConfigError(f"{where}.train.lr={t.lr}: must be > 0")
    if t.threads < 0:
        raise ConfigError(f"{where}.train.threads={t.threads}: must be >= 0 (0: torch's default)")
    if t.optimizer not in ("adamw", "sgd"):
        raise ConfigError(f"{where}.train.optimizer={t.optimizer!r}: use 'adamw' or 'sgd'")
    if t.schedule not in ("cosine", "constant"):
        raise ConfigError(f"{where}.train.schedule={t.schedule!r}: use 'cosine' or 'constant'")
    if t.keep not in ("best", "last"):
        raise ConfigError(f"{where}.train.keep={t.keep!r}: use 'best' or 'last'")
    if cfg.augment.shift < 0 or cfg.augment.copies < 0 or cfg.augment.draws < 0:
        raise ConfigError(f"{where}.augment: shift, copies and draws must be >= 0")
    if not 0.0 <= cfg.augment.shift_fraction < 0.5:
        raise ConfigError(f"{where}.augment.shift_fraction={cfg.augment.shift_fraction}: use a fraction of the image side in [0, 0.5)")
    if cfg.augment.mixup < 0 or (cfg.augment.mixup > 0 and cfg.augment.draws < 2):
        raise ConfigError(f"{where}.augment.mixup={cfg.augment.mixup}: give a Beta parameter > 0 together with draws >= 2 "
                          "(mixed views are per-epoch draws), or 0 for no mixing")
    if cfg.augment.copies > 0 and cfg.augment.draws > 0:
        raise ConfigError(f"{where}.augment: give copies (views added to every epoch) or draws (one view per epoch), not both")
    size = cfg.data.image_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 4):
        raise ConfigError(f"{where}.data.image_size={size!r}: use an integer >= 4 or null for the native size")
    for key in ("teacher", "cache_dir", "family", "family_grid"):
        value = getattr(cfg, key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{where}.{key}={value!r}: expected a {'module:function' if key == 'family' else 'path'} string")
    if not isinstance(cfg.student, str) or not cfg.student:
        raise ConfigError(f"{where}.student: give a model spec such as 'cnn:width=8,depth=2'")
    if cfg.role not in ("student", "teacher"):
        raise ConfigError(f"{where}.role={cfg.role!r}: use 'student' or 'teacher'")


def config_to_dict(cfg: DistillConfig) -> dict[str, Any]:
    """The resolved config as plain data (what `config.yaml` in a run directory holds)."""
    return dataclasses.asdict(cfg)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML run file into a plain mapping (merge CLI overrides, then `config_from_dict`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the path given to --config") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{path}: invalid YAML{where} ({problem}); fix the file") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    return raw


def merge_overrides(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `overrides` (CLI options, nested dicts for sections) onto `base` (the file)."""
    out: dict[str, Any] = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = value
    return out


def dump_yaml(cfg: DistillConfig) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
