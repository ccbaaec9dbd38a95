"""How a transferred latency model predicts: the prior's prediction corrected in log space,

    predicted(f) = prior(f) * exp(c(z(f)))

with the correction `c` a transfer fit stored (`edgekd.latency.transfer` fits it; the methods are
described there). Here only the evaluation, which `LatencyModel.predict` needs for a transferred
model: it takes the prior duck-typed (`predict`, `pad_block`) and imports nothing of the model, so
model and transfer do not import each other. Numpy only."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from edgekd.latency.terms import TERM_NAMES, design_row

# GP hyper-parameters of `local`, in log space: `noise` ~ the run-to-run spread of one measurement on a
# shared CPU (~10 %), `signal` how far a neighbourhood may sit from the global factor, `lengths` how
# far "near" reaches in (log prior p50, conv share, depthwise share, linear share).
GP_NOISE = 0.10
GP_SIGNAL = 0.5
GP_LENGTHS = (0.6, 0.35, 0.35, 0.35)
# a `refit` prediction never falls below this share of the prior scaled by the points' global factor
REFIT_MIN_SHARE = 0.05


def z_of(base: Any, features: Mapping[str, Any]) -> np.ndarray:
    """Where a model sits for the `local` kernel: log of the prior's p50 and the MAC shares by kind."""
    p = max(base.predict(features, "p50_ms"), 1e-6)
    macs = float(features.get("macs") or 0.0) or 1.0
    return np.array([math.log(p), float(features.get("conv_macs", 0.0)) / macs,
                     float(features.get("depthwise_macs", 0.0)) / macs, float(features.get("linear_macs", 0.0)) / macs])


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ell = np.asarray(GP_LENGTHS)
    d = (a[:, None, :] - b[None, :, :]) / ell
    return GP_SIGNAL ** 2 * np.exp(-0.5 * (d ** 2).sum(axis=2))


# the prior's terms grouped by what a device or runtime change scales together (`kinds`): the fixed
# cost per call; the cost per layer (dispatch, thread hand-off: what more threads or another runtime
# change most at micro scale, measured in scripts/bench_transfer.py, docs/ARCHITECTURE.md); the cost
# per MAC of each kind of layer (another kernel library or fusion changes one kind); memory traffic.
# Every term of the model is in exactly one group (tests/test_transfer.py checks it).
TERM_GROUPS: dict[str, tuple[str, ...]] = {
    "call": ("const", "pool"),
    "layers": ("conv", "depthwise_conv", "linear"),
    "conv": ("conv_macs", "conv_pad_macs", "branch_conv_macs", "pointwise_macs", "stem_macs"),
    "depthwise": ("depthwise_macs",),
    "linear": ("linear_macs", "matmul_macs", "matvec_conv_macs"),  # matrix products, not convolutions
    "memory": ("params", "activation_bytes", "unfused_elements", "reduce_elements"),  # elementwise: memory-bound
}
# what corrections fitted before the groups were recorded with them used (no `layers` group, and the
# INT8 branch-conv term in none: it was dropped from the prediction; read back as fitted)
LEGACY_TERM_GROUPS: dict[str, tuple[str, ...]] = {
    "call": ("const", "pool"),
    "conv": ("conv_macs", "conv_pad_macs", "conv"),
    "depthwise": ("depthwise_macs", "depthwise_conv"),
    "linear": ("linear_macs", "matmul_macs", "linear"),
    "memory": ("params", "activation_bytes"),
}


def group_parts(base: Any, features: Mapping[str, Any], metric: str,
                groups: Mapping[str, Sequence[str]] | None = None) -> np.ndarray:
    """The prior's prediction of `metric` split by `groups` (default TERM_GROUPS; ms per group, in order)."""
    coef = (getattr(base, "coef", None) or {}).get(metric) or {}
    row = dict(zip(TERM_NAMES, design_row(features, base.pad_block)))
    return np.array([sum(float(coef.get(n, 0.0)) * row[n] for n in names)
                     for names in (groups or TERM_GROUPS).values()])


def _local_factor(base: Any, entry: Mapping[str, Any], features: Mapping[str, Any]) -> float:
    """The `local` residual correction a `*-local` method stores on top of its inner fit (1 without one)."""
    if "alpha" not in entry:
        return 1.0
    z = z_of(base, features)[None, :]
    return math.exp(float((_kernel(z, np.asarray(entry["z"])) @ np.asarray(entry["alpha"]))[0]))


def correction_at(base: Any, correction: Mapping[str, Any], features: Mapping[str, Any],
                  metric: str) -> float:
    """The prediction of `base` corrected for this device (ms)."""
    entry = (correction.get("metrics") or {}).get(metric)
    if entry is None:
        return base.predict(features, metric)
    method = entry.get("method") or correction.get("method")  # `auto` records each metric's method
    if method in ("refit", "refit-local"):
        row = design_row(features, base.pad_block)
        pred = float(sum(entry["coef"].get(n, 0.0) * v for n, v in zip(TERM_NAMES, row)))
        # a student outside the points' range must not fall to ~0 ms: never below a share of the scaled prior
        floor = REFIT_MIN_SHARE * base.predict(features, metric) * math.exp(float(entry.get("m", 0.0)))
        return max(pred, floor) * _local_factor(base, entry, features)
    if method in ("kinds", "kinds-local"):
        groups = entry.get("groups") or LEGACY_TERM_GROUPS
        scales = np.array([float(entry["scales"].get(g, entry["s0"])) for g in groups])
        parts = group_parts(base, features, metric, groups)
        # a prior without these terms (the datasheet roofline) can only be scaled as a whole
        pred = float(parts @ scales) if parts.sum() > 0 else base.predict(features, metric) * float(entry["s0"])
        return pred * _local_factor(base, entry, features)
    c = float(entry["m"])
    if method == "log-affine":
        x = math.log(max(base.predict(features, "p50_ms"), 1e-9))
        c += float(entry.get("slope", 0.0)) * (x - float(entry["x0"]))
    elif method == "local":
        z = z_of(base, features)[None, :]
        c += float((_kernel(z, np.asarray(entry["z"])) @ np.asarray(entry["alpha"]))[0])
    return base.predict(features, metric) * math.exp(c)
