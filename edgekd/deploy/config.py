"""What `edgekd deploy` takes (`DeployConfig`, the CLI flags map 1:1), what one device round records
(`Round`), and the checks and choices made from the config and the target alone, before any work."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgekd.errors import ConfigError


@dataclass
class DeployConfig:
    """Everything `edgekd deploy` takes (the CLI flags map 1:1). None = derive the default."""

    target: str = "cpu"
    device: str | None = None  # None: 'local' when this machine can stand in for the target, else none
    key: str | None = None
    budget_ms: float | None = None  # None: teacher latency at the percentile / speedup_goal
    percentile: int = 90
    min_accuracy: float | None = None  # None: teacher accuracy - accuracy_margin (val to choose, test on device)
    teacher: str | None = None  # None: the default teacher trained on `data` (cached)
    # a user's own family (builder module:function + its grid YAML, edgekd.models.user_family) that
    # joins the built-in students (edgekd.deploy.user_space); family_only: searched alone
    family: str | None = None
    family_grid: str | None = None
    family_only: bool = False
    data: str = "digits"  # or text: reviews, a .csv / .jsonl with text,label (then the text students)
    image_size: int | None = None
    max_len: int | None = None  # text: tokens per sample, the sequence length latency is measured at
    tokenizer: str | None = None  # text: a local tokenizer dir/json (default: trained on the training text)
    output: str | None = None  # the bundle; None: bundles/<target>
    work_dir: str = "runs/deploy"
    profile: str | None = None
    profiles_dir: str = "profiles"
    format: str | None = None  # None: the target's preferred format that the device runs
    precision: str | None = None  # None: the target's preferred precision (fp32 on cpu, fp16 on jetson)
    threads: int | None = None  # None: the target's default
    max_rounds: int = 3
    epochs: int = 15
    lr: float | None = None  # None: 0.01 for image students, 0.003 for text ones (as `edgekd distill`)
    teacher_epochs: int = 8  # the default teacher peaks on val around epoch 7-8 (patience 3)
    # compression of each distilled student before export: an ordered pass list, the layout of
    # `edgekd compress` ([{pass: prune, ratio: 0.5}, ...], edgekd.compress.passes); `prune` is its shorthand
    compress: list[Any] | None = None
    prune: float | None = None
    speedup_goal: float = 5.0
    accuracy_margin: float = 0.015
    calibrate_count: int = 12
    seed: int = 0
    min_s: float = 2.0  # timed loop of each device verification
    drift_tolerance: float = 0.25  # teacher vs prediction beyond this = drift (edgekd.latency.drift)
    transfer_probes: int = 3  # untrained students measured near the budget after a transfer (edgekd.latency.drift)
    report_distills: int = 4  # on failure: students over budget distilled at most, to find the budget the floor needs


@dataclass
class Round:
    """One device verification (or, without a device, the one prediction)."""

    spec: str
    params: int
    host_val_accuracy: float  # what chose it
    host_test_accuracy: float  # reported only
    predicted_ms: float | None
    latency_source: str
    artifact: str
    measured_ms: float | None = None
    p50_ms: float | None = None
    accuracy: float | None = None
    peak_rss_bytes: int | None = None
    verdict: str = "unverified"  # ok / over budget / under floor / unverified
    seconds: float = 0.0
    prediction_error: float | None = None  # predicted / measured - 1, at the percentile
    budget_verdict: dict[str, Any] | None = None  # edgekd.deploy.verdict.settle: how sure, remeasured or not


def check_config(cfg: DeployConfig, tgt: Any) -> None:
    """Refuse, before any work, what the target cannot run or what is out of range (ConfigError);
    fills in the target's preferred precision and the checked compression chain."""
    if cfg.percentile not in (50, 90, 99):
        raise ConfigError(f"percentile {cfg.percentile} is not measured; use 50, 90 or 99")
    if cfg.budget_ms is not None and not (isinstance(cfg.budget_ms, (int, float)) and math.isfinite(cfg.budget_ms)
                                          and cfg.budget_ms > 0):
        raise ConfigError(f"--budget-ms {cfg.budget_ms} must be a positive number of milliseconds")
    if cfg.min_accuracy is not None and not 0 <= cfg.min_accuracy <= 1:
        raise ConfigError(f"--min-accuracy {cfg.min_accuracy} must be a fraction in 0..1 (e.g. 0.97)")
    if cfg.max_rounds < 1:
        raise ConfigError(f"--max-rounds {cfg.max_rounds} must be >= 1")
    if cfg.precision is None:
        cfg.precision = tgt.precisions[0]
    if cfg.precision not in tgt.precisions:
        raise ConfigError(f"target {tgt.name} runs precisions {', '.join(tgt.precisions)}, not {cfg.precision}")
    if cfg.format is not None and cfg.format not in tgt.formats:
        raise ConfigError(f"target {tgt.name} takes formats {', '.join(tgt.formats)}, not {cfg.format}")
    # `prune` folds into the chain, written in the YAML layout
    cfg.compress, cfg.prune = [entry.as_dict() for entry in compress_chain(cfg)] or None, None


def compress_chain(cfg: DeployConfig) -> list[Any]:
    """The deploy's compression chain, checked (`edgekd.compress.passes.parse_chain`): `cfg.compress`
    or its shorthand `cfg.prune` (= ``[{pass: prune, ratio: P}]``); [] for none. A bad pass or field is
    a one-line ConfigError naming the valid ones."""
    from edgekd.compress.passes import parse_chain

    if cfg.prune and cfg.compress:
        raise ConfigError("give the compression chain as --compress (compress: [...]) or as --prune, not both")
    given = [{"pass": "prune", "ratio": cfg.prune}] if cfg.prune else cfg.compress
    return parse_chain(given, "deploy compress", allow_empty=True)


def choose_format(cfg: DeployConfig, tgt: Any, have: dict[str, Any] | None) -> str:
    """`--format`, else the target's first format whose runtime the device has (`have`: the device's
    runtimes, None without a device)."""
    from edgekd.runtimes import FORMAT_RUNTIME

    if cfg.format:
        if have is not None and FORMAT_RUNTIME[cfg.format] not in have:
            raise ConfigError(f"the device has no {FORMAT_RUNTIME[cfg.format]} runtime for --format {cfg.format}; "
                              f"it has {', '.join(have) or 'none'}")
        return cfg.format
    for fmt in tgt.formats:
        if have is None or FORMAT_RUNTIME.get(fmt) in have:
            return fmt
    raise ConfigError(f"the device runs none of target {tgt.name}'s runtimes ({', '.join(tgt.runtimes)}); "
                      f"install one there: {tgt.install}")
