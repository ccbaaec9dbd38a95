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
    # the built-in students searched (edgekd.deploy.spaces): None = "micro", "real" (ImageNet-scale
    # families, resolution part of each spec) or a YAML grid file over built-in families
    space: str | None = None
    data: str = "digits"  # or text: reviews, a .csv / .jsonl with text,label (then the text students)
    image_size: int | None = None
    max_len: int | None = None  # text: tokens per sample, the sequence length latency is measured at
    tokenizer: str | None = None  # text: a local tokenizer dir/json (default: trained on the training text)
    output: str | None = None  # the bundle; None: bundles/<target>
    work_dir: str = "runs/deploy"
    profile: str | None = None
    profiles_dir: str = "profiles"
    # None: the target's preferred format that the device runs. "auto" (or a comma list, "onnx,openvino"):
    # choose jointly among every such format the device runs (edgekd.deploy.joint); opt-in, see there
    format: str | None = None
    # None: the target's preferred precision (fp32 on cpu, fp16 on jetson), or every precision of the
    # target when `format` is "auto"; "auto" / a comma list ("fp32,int8"): choose jointly among them
    precision: str | None = None
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
    joint_calibrate_count: int = 8  # untrained students calibrated per extra configuration of a joint choice
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
    format: str = ""  # the configuration it was exported and measured in
    runtime: str = ""
    precision: str = ""


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
        cfg.precision = "auto" if cfg.format == "auto" else tgt.precisions[0]
    for precision in _names(cfg.precision, tgt.precisions):
        if precision not in tgt.precisions:
            raise ConfigError(f"target {tgt.name} runs precisions {', '.join(tgt.precisions)}, not {precision}")
    for fmt in _names(cfg.format, tgt.formats) if cfg.format is not None else ():
        if fmt not in tgt.formats:
            raise ConfigError(f"target {tgt.name} takes formats {', '.join(tgt.formats)}, not {fmt}")
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


def _names(given: str | None, every: list[str]) -> list[str]:
    """A `--format` / `--precision` value as a list: "auto" = every one the target lists."""
    if given is None:
        return []
    if given.strip() == "auto":
        return list(every)
    return [n.strip() for n in given.split(",") if n.strip()]


def is_joint(cfg: DeployConfig) -> bool:
    """True when the deploy chooses among several (format, precision) configurations."""
    return any(v is not None and (v.strip() == "auto" or "," in v) for v in (cfg.format, cfg.precision))


def choose_configs(cfg: DeployConfig, tgt: Any, have: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The (format, precision) configurations this deploy chooses among, the reference one first (the
    target's preferred format the device runs, in its preferred precision: the teacher and the budget
    are measured there). One configuration unless `is_joint`; then every asked format whose runtime the
    device runs and this host can export, times every asked precision that runtime exports."""
    from edgekd.runtimes import FORMAT_RUNTIME, RUNTIMES

    if not is_joint(cfg):
        return [(choose_format(cfg, tgt, have), str(cfg.precision))]
    fmts = _names(cfg.format, tgt.formats) or [choose_format(cfg, tgt, have)]
    precs = _names(cfg.precision, tgt.precisions) or [tgt.precisions[0]]
    out: list[tuple[str, str]] = []
    for fmt in fmts:
        adapter = RUNTIMES.get(FORMAT_RUNTIME[fmt])
        if have is not None and adapter.name not in have:
            continue  # the device cannot run it
        if adapter.unavailable_reason() is not None and not getattr(adapter, "host_export_without_runtime", False):
            continue  # this host cannot export it
        out.extend((fmt, p) for p in precs if p in adapter.precisions)
    if not out:
        raise ConfigError(f"none of the formats {', '.join(fmts)} in precisions {', '.join(precs)} can be exported "
                          f"here and run on the device; install the runtimes: {tgt.install}")
    ref = [c for c in out if c[1] == precs[0]] or out  # the reference: first format, first precision asked
    out.remove(ref[0])
    return [ref[0], *out]


def choose_format(cfg: DeployConfig, tgt: Any, have: dict[str, Any] | None) -> str:
    """`--format`, else the target's first format whose runtime the device has (`have`: the device's
    runtimes, None without a device)."""
    from edgekd.runtimes import FORMAT_RUNTIME

    if cfg.format and not is_joint(cfg):
        if have is not None and FORMAT_RUNTIME[cfg.format] not in have:
            raise ConfigError(f"the device has no {FORMAT_RUNTIME[cfg.format]} runtime for --format {cfg.format}; "
                              f"it has {', '.join(have) or 'none'}")
        return cfg.format
    for fmt in tgt.formats:
        if have is None or FORMAT_RUNTIME.get(fmt) in have:
            return fmt
    raise ConfigError(f"the device runs none of target {tgt.name}'s runtimes ({', '.join(tgt.runtimes)}); "
                      f"install one there: {tgt.install}")
