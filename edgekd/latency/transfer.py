"""Few-shot transfer of a latency model to a device it was not fitted on (or that has drifted).

A *prior* model (fitted on another device, or on this one before it changed) already knows how the
students rank: which layers cost what relative to each other. A new device mostly changes the
scale, and changes it unevenly (a 2-thread runtime speeds big convs up and leaves tiny MLPs alone).
So a handful of measurements on the device correct the prior instead of replacing it:

    predicted(f) = prior(f) * exp(c(z(f)))

where c is a correction in log space fitted to the device points' log residuals
r_i = log(measured_i / prior(f_i)). Methods (`METHODS`, chosen by `scripts/bench_transfer.py`):

  scale       c = mean(r): one per-device factor (k >= 1).
  log-affine  c = a + (b-1)·(log prior(f) - x0), b shrunk toward 1 (ridge), so k = 1 is `scale`.
  local       c = m + GP posterior mean of the residuals, m = mean(r): a Gaussian-process kernel
              over z(f) = (log prior p50, conv / depthwise / linear share of the MACs). A point far
              off the prior moves its *neighbourhood* (same family, similar size) almost all the way
              and the rest of the space by the global factor only: what one device round should do.
  refit       NNLS refit of *every* term on the device points' relative errors, with a ridge pulling
              each coefficient toward the prior's (scaled by `scale`) within a tolerance of the prior
              coefficient plus REFIT_SLACK of the typical latency per typical term value -- so a term the
              prior priced at 0 (its own fit's choice among collinear terms) can still be priced here.
              The ridge is chosen by leave-one-out on the points (k >= 3). As k grows it becomes the
              device's own calibration; `kinds` cannot, since it only scales the prior's groups.
  refit-local `refit`, then the `local` Gaussian process on what it leaves.
  kinds       one scale per group of the prior's terms (`correction.TERM_GROUPS`: fixed cost per
              call; cost per layer; dense conv, depthwise conv and matmul cost per MAC; memory),
              fitted on the points' relative errors with a ridge pulling every kind toward the global
              factor; the ridge is chosen by leave-one-out on the points (k >= 3; k = 1 is `scale`).
              Graph fusion or another kernel library changes one kind of layer, not the device.
  kinds-local `kinds`, then the `local` Gaussian process on what it leaves (tied with `kinds` and
              ahead of the others at k <= 5 in scripts/bench_transfer.py, and a point far off still
              moves its neighbourhood; see docs/ARCHITECTURE.md).
  auto        (the default) `kinds-local` on fewer than AUTO_REFIT_POINTS points, `refit-local` from
              there: a few points can only scale the prior's shape per kind, more can price the
              device's own costs. Equal to `kinds-local` at k <= 5 and ahead of it from k = 10 in
              scripts/bench_transfer.py on two measurement sets (docs/ARCHITECTURE.md).

Numpy + scipy (host side; the device never fits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edgekd.latency.correction import (GP_NOISE, TERM_GROUPS, _kernel, correction_at,  # noqa: F401
                                      group_parts, z_of)
from edgekd.latency.model import METRICS, TRANSFER_KIND, LatencyModel
from edgekd.latency.terms import TERM_NAMES, design_row

DEFAULT_METHOD = "auto"
AFFINE_RIDGE = 1.0  # penalty on (b - 1)^2 against the sum of squared log residuals
# `refit`: ridge strengths tried by leave-one-out, the one used with too few points to leave any out, and
# the share of the typical latency a term the prior did not price may take at a typical value of it
REFIT_RIDGES = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
REFIT_RIDGE_FEW = 1.0
REFIT_SLACK = 0.1


@dataclass
class Point:
    """One device measurement: a model's architecture features and its measured latency statistics."""

    name: str
    features: dict[str, Any]
    latency: dict[str, float]


def _residuals(base: LatencyModel, points: Sequence[Point], metric: str) -> tuple[np.ndarray, np.ndarray, list[int]]:
    x, r, keep = [], [], []
    for i, pt in enumerate(points):
        y = pt.latency.get(metric)
        if not y or y <= 0:
            continue
        p = max(base.predict(pt.features, metric), 1e-9)
        x.append(math.log(max(base.predict(pt.features, "p50_ms"), 1e-9)))
        r.append(math.log(y / p))
        keep.append(i)
    return np.array(x), np.array(r), keep


def fit_correction(base: LatencyModel, points: Sequence[Point], method: str = DEFAULT_METHOD,
                   metrics: Sequence[str] = METRICS) -> dict[str, Any]:
    """The correction of `base` by `points`, per latency statistic in `metrics`, as plain JSON (see
    module doc)."""
    if method not in METHODS:
        raise ValueError(f"unknown transfer method {method!r}; one of {', '.join(METHODS)}")
    if method == "auto":
        return _auto(base, points, metrics)
    out: dict[str, Any] = {}
    for metric in metrics:
        x, r, keep = _residuals(base, points, metric)
        if not len(r):
            continue
        m = float(r.mean())
        entry: dict[str, Any] = {"m": m, "k": int(len(r))}
        if method == "log-affine":
            x0 = float(x.mean())
            xc = x - x0
            slope = float((xc @ (r - m)) / (xc @ xc + AFFINE_RIDGE)) if len(r) > 1 else 0.0
            entry.update(x0=x0, slope=slope)
        elif method == "local":
            z = np.stack([z_of(base, points[i].features) for i in keep])
            k = _kernel(z, z) + GP_NOISE ** 2 * np.eye(len(z))
            alpha = np.linalg.solve(k, r - m)
            entry.update(z=z.round(6).tolist(), alpha=alpha.tolist())
        elif method in ("refit", "refit-local"):
            entry.update(_refit(base, [points[i] for i in keep], metric))
            if method == "refit-local":
                _add_local(base, entry, "refit", [points[i] for i in keep], metric)
        elif method in ("kinds", "kinds-local"):
            entry.update(_fit_kinds(base, [points[i] for i in keep], metric, m))
            if method == "kinds-local":
                _add_local(base, entry, "kinds", [points[i] for i in keep], metric)
        out[metric] = entry
    return {"method": method, "metrics": out}


# `auto`: `kinds-local` on fewer device points than this, `refit-local` from there. Measured offline on
# scripts/bench_transfer.py's saved measurements (Zen 4 EPYC VM, 2026-12-03, the same 40 random draws per k
# for both): micro space, refit-local ahead on pairs b and c from 6-7 points (85-91 % against 73-84 % at
# 10-12), kinds-local ahead by up to 11 points at 3-5; real space, tied at k <= 5, refit-local ahead on
# (b) by 7 at k = 10 and 10 at k = 24
AUTO_REFIT_POINTS = 6


def _auto(base: LatencyModel, points: Sequence[Point], metrics: Sequence[str]) -> dict[str, Any]:
    """`auto`: the prior's shape scaled per kind while the points are few, the device's own costs (the
    prior as regularizer) once they are enough to pin them -- decided per latency statistic on the points
    that carry it; each metric's entry records the method it used (read by `correction_at`), the top level
    the p50's (or the first metric's)."""
    out: dict[str, Any] = {"method": "kinds-local", "metrics": {}, "chosen_by": {}}
    for metric in metrics:
        usable = sum(1 for p in points if (p.latency.get(metric) or 0) > 0)
        chosen = "refit-local" if usable >= AUTO_REFIT_POINTS else "kinds-local"
        entry = fit_correction(base, points, chosen, (metric,))["metrics"].get(metric)
        if entry is None:
            continue
        entry["method"] = chosen
        out["metrics"][metric] = entry
        out["chosen_by"][metric] = f"{usable} point(s): {chosen} (refit-local from {AUTO_REFIT_POINTS})"
    if out["metrics"]:
        out["method"] = out["metrics"].get("p50_ms", next(iter(out["metrics"].values())))["method"]
    return out


def _add_local(base: LatencyModel, entry: dict[str, Any], inner: str, points: Sequence[Point], metric: str) -> None:
    """The residuals of the `inner` fit in `entry`, spread by the `local` kernel (`*-local` methods)."""
    fitted = np.array([correction_at(base, {"method": inner, "metrics": {metric: dict(entry)}}, p.features, metric)
                       for p in points])
    y = np.array([float(p.latency[metric]) for p in points])
    z = np.stack([z_of(base, p.features) for p in points])
    k = _kernel(z, z) + GP_NOISE ** 2 * np.eye(len(z))
    entry.update(z=z.round(6).tolist(), alpha=np.linalg.solve(k, np.log(y / np.maximum(fitted, 1e-12))).tolist())


# shrinkage of the per-kind scales toward the global one, tried by leave-one-out on the device points
KINDS_RIDGES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
KINDS_RIDGE_FEW = 1.0  # with fewer than KINDS_LOO_MIN points there is nothing to leave out
KINDS_LOO_MIN = 3
KINDS_MIN_SCALE = 0.05  # a kind's scale never drops below this share of the global one


def _kinds_solve(parts: np.ndarray, y: np.ndarray, s0: float, ridge: float) -> np.ndarray:
    """Per-kind scales s_g = s0 (1 + d_g) minimising sum_i (sum_g s_g parts_ig / y_i - 1)^2 + ridge |d|^2
    (relative errors; ridge pulls every kind toward the global factor s0)."""
    a = s0 * parts / y[:, None]
    r = 1.0 - a.sum(axis=1)
    d = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ r)
    return s0 * np.maximum(1.0 + d, KINDS_MIN_SCALE)


def _fit_kinds(base: LatencyModel, points: Sequence[Point], metric: str, m: float) -> dict[str, Any]:
    """`kinds`: one scale per group of the prior's terms (TERM_GROUPS), shrunk toward the global factor
    exp(m) by a ridge chosen by leave-one-out on the points (KINDS_RIDGE_FEW with fewer than
    KINDS_LOO_MIN points; one point is exactly the global factor)."""
    parts = np.stack([group_parts(base, p.features, metric) for p in points])
    y = np.array([float(p.latency[metric]) for p in points])
    s0 = math.exp(m)
    ridge = KINDS_RIDGE_FEW
    loo_err = None
    if (parts.sum(axis=1) <= 0).any():  # a prior without the model's terms: one factor, as `scale`
        return {"s0": s0, "ridge": None, "loo_log_err": None, "scales": {g: s0 for g in TERM_GROUPS},
                "groups": _groups()}
    if len(y) >= KINDS_LOO_MIN:
        def left_out(i: int, lam: float) -> float:
            rest = np.arange(len(y)) != i
            m_i = float(np.mean(np.log(y[rest] / np.maximum(parts[rest].sum(axis=1), 1e-12))))
            return float(parts[i] @ _kinds_solve(parts[rest], y[rest], math.exp(m_i), lam))

        ridge, loo_err = _ridge_by_loo(KINDS_RIDGES, y, left_out)
    scales = _kinds_solve(parts, y, s0, ridge)
    return {"s0": s0, "ridge": ridge, "loo_log_err": loo_err,
            "scales": {g: float(v) for g, v in zip(TERM_GROUPS, scales)}, "groups": _groups()}


def _ridge_by_loo(ridges: Sequence[float], y: np.ndarray, left_out: Any) -> tuple[float, float]:
    """The ridge of `ridges` whose fits predict the points best when each is left out in turn (mean |log
    error|; `left_out(i, ridge)` is point i's prediction from the others), and that error."""
    scores = [float(np.mean([abs(math.log(max(left_out(i, lam), 1e-12) / y[i])) for i in range(len(y))]))
              for lam in ridges]
    best = int(np.argmin(scores))
    return ridges[best], scores[best]


def _groups() -> dict[str, list[str]]:
    """The term groups a `kinds` correction was fitted with, stored with it (read back by `correction_at`)."""
    return {g: list(t) for g, t in TERM_GROUPS.items()}


def _refit(base: LatencyModel, points: Sequence[Point], metric: str) -> dict[str, Any]:
    """`refit`: NNLS of every term on the points' relative errors plus one ridge row per term pulling its
    coefficient toward s x the prior's (s: the points' global factor) within a tolerance tau_j = s x prior_j
    + REFIT_SLACK x (typical latency) / (typical value of term j over the points); the ridge by
    leave-one-out on the points (every fold recomputes s and tau without the point it leaves out;
    REFIT_RIDGE_FEW with fewer than KINDS_LOO_MIN). A term no point has keeps the scaled prior's cost."""
    from scipy.optimize import nnls

    raw = np.maximum([float(base.coef[metric].get(n, 0.0)) for n in TERM_NAMES], 0.0)
    x = np.stack([design_row(p.features, base.pad_block) for p in points])
    y = np.array([float(p.latency[metric]) for p in points])
    f = np.array([max(base.predict(p.features, metric), 1e-12) for p in points])

    def solve(rows: np.ndarray, lam: float) -> np.ndarray:
        xa, ya = x[rows], y[rows]
        prior = math.exp(float(np.mean(np.log(ya / f[rows])))) * raw
        tau = prior + REFIT_SLACK * float(np.median(ya)) / _typical(xa)
        a = np.vstack([xa / ya[:, None], math.sqrt(lam) * np.diag(1.0 / tau)])
        b = np.concatenate([np.ones(len(ya)), math.sqrt(lam) * prior / tau])
        return nnls(a, b, maxiter=100 * len(tau))[0]

    every = np.arange(len(y))
    ridge, loo_err = REFIT_RIDGE_FEW, None
    if len(y) >= KINDS_LOO_MIN:
        ridge, loo_err = _ridge_by_loo(REFIT_RIDGES, y, lambda i, lam: float(x[i] @ solve(every[every != i], lam)))
    c = solve(every, ridge)
    return {"coef": {n: float(v) for n, v in zip(TERM_NAMES, c)}, "ridge": ridge, "loo_log_err": loo_err}


def _typical(x: np.ndarray) -> np.ndarray:
    """Per term (column), the median of its nonzero values over the points; 1 for a term none has."""
    out = np.ones(x.shape[1])
    for j in range(x.shape[1]):
        nz = x[:, j][x[:, j] > 0]
        if len(nz):
            out[j] = float(np.median(nz))
    return out


def leave_one_out(base: LatencyModel, points: Sequence[Point], method: str = DEFAULT_METHOD,
                  metric: str = "p50_ms") -> list[float]:
    """Relative errors of the transfer predicting each point from the others (k >= 2)."""
    errs = []
    for i, pt in enumerate(points):
        rest = [p for j, p in enumerate(points) if j != i]
        if not rest or not pt.latency.get(metric):
            continue
        pred = correction_at(base, fit_correction(base, rest, method, (metric,)), pt.features, metric)
        errs.append(pred / pt.latency[metric] - 1.0)
    return errs


METHODS = ("scale", "log-affine", "local", "refit", "refit-local", "kinds", "kinds-local", "auto")


def transferred_model(base: LatencyModel, points: Sequence[Point], *, method: str = DEFAULT_METHOD,
                      identity: Mapping[str, Any] | None = None, prior: Mapping[str, Any] | None = None,
                      since: str = "") -> LatencyModel:
    """A LatencyModel (kind `transfer/1`) = `base` corrected by `points`; it records this device's
    identity, where the prior came from and the points it was adapted on."""
    corr = fit_correction(base, points, method)
    # leave-one-out error for every metric the model predicts (deploy reports its budget percentile's), of
    # the method the correction used (`auto`'s choice is not re-made per fold: k^2 fits, not k^3)
    cv: dict[str, dict[str, Any]] = {}
    for metric in base.coef:
        used = ((corr.get("metrics") or {}).get(metric) or {}).get("method") or corr["method"]
        loo = leave_one_out(base, points, used, metric) if len(points) >= 2 else []
        if loo:
            cv[metric] = {"median_abs_rel": float(np.median(np.abs(loo))), "max_abs_rel": float(np.max(np.abs(loo))),
                          "within_10pct": float(np.mean(np.abs(loo) <= 0.10)), "loo": True}
    model = LatencyModel(
        key=base.key, kind=TRANSFER_KIND, coef={k: dict(v) for k, v in base.coef.items()}, n_samples=len(points),
        cv=cv, folds=len(points) if cv else 0, fitted_at=base.fitted_at, source=f"transfer ({method}) of {dict(prior or {}).get('source', base.source)}",
        samples=sorted(p.name for p in points), pad_block=base.pad_block,
    )
    model.transfer = {"method": method, "correction": corr, "since": since, "prior": dict(prior or {}),
                      "prior_model": base.to_dict(), "points": [p.name for p in points]}
    model.identity = dict(identity) if identity else None
    return model
