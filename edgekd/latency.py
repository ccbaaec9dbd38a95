"""Latency prediction per (device, runtime, precision, threads, batch), fitted from measurements.

The model is deliberately simple and explainable (the nn-Meter / roofline habit): predicted latency
is a *non-negative* sum of per-feature costs,

    latency_ms = c0 + c_macs * MMACs + c_params * Mparams + c_act * MB_activations
                    + c_conv * #conv + c_dw * #depthwise_conv + c_lin * #linear + c_pool * #pool

fitted by non-negative least squares on the *relative* error (every row divided by its measured
latency), so a 5 µs model counts as much as a 500 µs one. Non-negativity keeps every term readable as
"what this feature costs on this device" and stops the fit from cancelling big terms against each
other, which is what makes a linear model extrapolate badly. One such model is fitted for each
latency statistic a measurement carries (p50, p90, p99), so a budget at a percentile is predicted at
that percentile. Its k-fold cross-validated relative error is stored with it.

Features come from the architecture alone (`edgekd.models.model_features`: one zero-input forward
on the host, nothing timed), so any student of the search space can be predicted before it exists.

Without measurements, `prior_model(target)` gives a roofline estimate from the target YAML's
datasheet figures (peak compute, memory bandwidth); it is always labelled "predicted, unmeasured".
Host side (imports torch lazily, through `spec_features`).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgekd.errors import ProfileError

# Terms of the model, in order: (name, unit label, function of the raw feature dict).
TERMS: tuple[tuple[str, str, Any], ...] = (
    ("const", "per inference", lambda f: 1.0),
    # MACs split by layer kind: a dense 3x3 conv, a depthwise conv and a matmul reach very different
    # fractions of peak on the same CPU, so one cost per MAC under- or over-predicts whole families
    ("conv_macs", "per MMAC in dense convs", lambda f: f.get("conv_macs", f["macs"]) / 1e6),
    # CPU conv kernels (ONNX Runtime's NCHWc, oneDNN) compute whole channel blocks of the SIMD width
    # (16 floats with AVX-512), so 12 channels cost what 16 do: measured here, cnn width 12 and 16 run
    # in the same time. The padding is its own term, so a device where it does not matter fits 0.
    ("conv_pad_macs", "per MMAC of channel padding to 16-wide blocks", lambda f: f.get("conv_pad_macs", 0) / 1e6),
    ("depthwise_macs", "per MMAC in depthwise convs", lambda f: f.get("depthwise_macs", 0) / 1e6),
    ("linear_macs", "per MMAC in linear layers", lambda f: f.get("linear_macs", 0) / 1e6),
    ("params", "per M params", lambda f: f["params"] / 1e6),
    ("activation_bytes", "per MB of activations", lambda f: f["activation_bytes"] / 1e6),
    ("conv", "per conv layer", lambda f: f.get("conv", 0)),
    ("depthwise_conv", "per depthwise conv", lambda f: f.get("depthwise_conv", 0)),
    ("linear", "per linear layer", lambda f: f.get("linear", 0)),
    ("pool", "per pooling layer", lambda f: f.get("pool", 0)),
)
TERM_NAMES = tuple(t[0] for t in TERMS)
FEATURE_KEYS = ("macs", "params", "activation_bytes", "conv", "depthwise_conv", "linear", "bn", "act", "pool",
                "conv_macs", "conv_pad_macs", "depthwise_macs", "linear_macs")
SIMD_BLOCK = 16
METRICS = ("p50_ms", "p90_ms", "p99_ms")
PERCENTILES = {50: "p50_ms", 90: "p90_ms", 99: "p99_ms"}
MODEL_KIND = "nnls-relative/1"
PRIOR_KIND = "roofline-prior/1"
PREDICTED_UNMEASURED = "predicted, unmeasured"
MIN_SAMPLES = 6  # fewer measurements than this cannot support 8 non-negative terms + cross-validation


def metric_for(percentile: int) -> str:
    """The latency statistic for a percentile (50, 90 or 99); ConfigError otherwise."""
    from edgekd.errors import ConfigError

    try:
        return PERCENTILES[int(percentile)]
    except (KeyError, ValueError, TypeError):
        raise ConfigError(f"percentile {percentile!r} is not measured; use one of {sorted(PERCENTILES)}") from None


def shape_tag(input_shape: Sequence[int] | None) -> str:
    """'' for image inputs (C x H x W: the keys as they always were); ``/seqL`` for token inputs (L,),
    so text models at one sequence length get their own latency model: a transformer's cost per MAC
    is not a CNN's, and one fit over both would mispredict each."""
    shape = tuple(input_shape or ())
    return f"/seq{int(shape[0])}" if len(shape) == 1 else ""


def model_key(runtime: str, precision: str, threads: int | None, batch: int = 1,
              input_shape: Sequence[int] | None = None) -> str:
    """The profile key of one latency model: ``runtime/precision/tN/bN`` (t0 = the runtime's default
    thread count, written the way `edgekd.profiles` writes measurement keys), plus `shape_tag` for
    text inputs (``.../b1/seq16``)."""
    return f"{runtime}/{precision}/t{int(threads or 0)}/b{int(batch)}{shape_tag(input_shape)}"


# ------------------------------------------------------------------------------ features

def architecture_features(model: Any, input_shape: Sequence[int]) -> dict[str, int]:
    """`edgekd.models.model_features` plus MACs split by layer kind (conv / depthwise / linear).

    Works on any nn.Module (a pruned or factorized student too): one zero-input forward, no timing.
    """
    import torch

    from edgekd.models import model_features
    from edgekd.models.counting import layer_kind, module_macs

    shape = tuple(int(d) for d in input_shape)
    feats = dict(model_features(model, shape))
    split = {"conv_macs": 0, "conv_pad_macs": 0, "depthwise_macs": 0, "linear_macs": 0}
    names = {"conv": "conv_macs", "depthwise_conv": "depthwise_macs", "linear": "linear_macs"}

    first_conv = [True]

    def pad(n: int) -> int:
        return -(-int(n) // SIMD_BLOCK) * SIMD_BLOCK

    def hook(module: Any, inputs: Any, output: Any) -> None:
        kind = layer_kind(module)
        if kind in names:
            macs = int(module_macs(module, inputs, output))
            split[names[kind]] += macs
            if kind == "conv":
                cin = module.in_channels // module.groups
                per_channel_pair = macs / max(1, module.out_channels * cin)
                # the first conv reads the plain image (1-3 channels): kernels take it unblocked
                cin_eff = cin if first_conv[0] else pad(cin)
                first_conv[0] = False
                split["conv_pad_macs"] += int(per_channel_pair * pad(module.out_channels) * cin_eff) - macs

    leaves = [m for m in model.modules() if layer_kind(m) in names]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *shape)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    feats.update(split)
    return {k: int(v) for k, v in feats.items()}


@functools.lru_cache(maxsize=512)
def _spec_features_cached(spec: str, input_shape: tuple[int, ...], num_classes: int) -> tuple[tuple[str, int], ...]:
    from edgekd.models import create_model

    model = create_model(spec, input_shape, num_classes)
    return tuple(sorted(architecture_features(model, input_shape).items()))


def spec_features(spec: str, input_shape: Sequence[int], num_classes: int) -> dict[str, int]:
    """Architecture features of the model a spec builds (macs, params, activation bytes, layer counts).

    Computed on the host from one zero-input forward of an untrained model (cached per spec/shape);
    nothing is timed, so this works for students that were never trained or measured.
    """
    return dict(_spec_features_cached(str(spec), tuple(int(d) for d in input_shape), int(num_classes)))


def design_row(features: Mapping[str, float]) -> np.ndarray:
    """The model's term values for one feature dict (see TERMS)."""
    missing = [k for k in ("macs", "params", "activation_bytes") if k not in features]
    if missing:
        raise ProfileError(f"latency features lack {missing}; measure with this edgekd version (features are recorded)")
    return np.array([float(fn(features)) for _, _, fn in TERMS], dtype=np.float64)


# ------------------------------------------------------------------------------ fitting

def _nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising sum(((x @ c - y) / y)^2).

    Columns are scaled to unit max first so the solver sees comparable magnitudes; an all-zero
    column (a layer kind no sample has) gets coefficient 0.
    """
    from scipy.optimize import nnls

    w = 1.0 / y
    a = x * w[:, None]
    scale = np.abs(a).max(axis=0)
    scale[scale == 0] = 1.0
    coef_scaled, _ = nnls(a / scale, np.ones_like(y), maxiter=50 * x.shape[1])
    return coef_scaled / scale


def _kfold_indices(n: int, folds: int, seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::folds] for i in range(folds)]


def relative_errors(pred: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """(pred - measured) / measured, elementwise."""
    return (np.asarray(pred, dtype=np.float64) - measured) / measured


def error_summary(rel: np.ndarray) -> dict[str, float]:
    """Median / p90 / max absolute relative error and the share within ±10 %."""
    a = np.abs(np.asarray(rel, dtype=np.float64))
    if a.size == 0:
        return {"median_abs_rel": math.nan, "p90_abs_rel": math.nan, "max_abs_rel": math.nan, "within_10pct": math.nan}
    return {
        "median_abs_rel": float(np.median(a)),
        "p90_abs_rel": float(np.percentile(a, 90)),
        "max_abs_rel": float(a.max()),
        "within_10pct": float(np.mean(a <= 0.10)),
    }


@dataclass
class LatencyModel:
    """A fitted (or prior) latency model for one (runtime, precision, threads, batch) on one device.

    `coef[metric][term]` is milliseconds per unit of that term (see TERMS for units). `cv[metric]`
    holds the k-fold cross-validated relative error. `kind` is MODEL_KIND for a fit from measurements
    or PRIOR_KIND for the datasheet roofline, whose predictions are always "predicted, unmeasured".
    """

    key: str
    kind: str
    coef: dict[str, dict[str, float]]
    n_samples: int = 0
    cv: dict[str, dict[str, float]] = field(default_factory=dict)
    folds: int = 0
    fitted_at: str = ""
    source: str = ""
    samples: list[str] = field(default_factory=list)  # specs/sha256 it was fitted on (held-out checks)

    @property
    def is_prior(self) -> bool:
        return self.kind == PRIOR_KIND

    @property
    def label(self) -> str:
        """How a prediction from this model must be presented."""
        if self.is_prior:
            return f"{PREDICTED_UNMEASURED} (datasheet roofline prior)"
        err = self.cv.get("p50_ms", {}).get("median_abs_rel")
        cv = f", cross-validated median error {err:.1%}" if err is not None and not math.isnan(err) else ""
        return f"predicted from {self.n_samples} measurements{cv}"

    def predict(self, features: Mapping[str, float], metric: str = "p50_ms") -> float:
        """Predicted latency in ms for `metric` (p50_ms / p90_ms / p99_ms)."""
        if self.is_prior:
            return _roofline(self.coef["roofline"], features, metric)
        coefs = self.coef.get(metric)
        if coefs is None:
            raise ProfileError(f"latency model {self.key} has no fit for {metric}; re-run `edgekd profile calibrate`")
        row = design_row(features)
        return float(sum(coefs.get(name, 0.0) * v for name, v in zip(TERM_NAMES, row)))

    def explain(self, features: Mapping[str, float], metric: str = "p50_ms") -> list[tuple[str, float]]:
        """(term, ms) contributions to the prediction, largest first (zeros dropped)."""
        if self.is_prior:
            return [("roofline", self.predict(features, metric))]
        row = design_row(features)
        parts = [(name, float(self.coef[metric].get(name, 0.0) * v)) for name, v in zip(TERM_NAMES, row)]
        return sorted([p for p in parts if p[1] > 0], key=lambda p: -p[1])

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "coef": self.coef, "n_samples": self.n_samples, "cv": self.cv,
            "folds": self.folds, "fitted_at": self.fitted_at, "source": self.source, "samples": list(self.samples),
            "units": {name: unit for name, unit, _ in TERMS},
        }

    @classmethod
    def from_dict(cls, key: str, data: Mapping[str, Any]) -> "LatencyModel":
        if not isinstance(data, Mapping) or data.get("kind") not in (MODEL_KIND, PRIOR_KIND):
            raise ProfileError(f"latency model {key!r} in the profile is not readable; re-run `edgekd profile calibrate`")
        return cls(
            key=key, kind=str(data["kind"]), coef={k: dict(v) for k, v in dict(data.get("coef") or {}).items()},
            n_samples=int(data.get("n_samples", 0)), cv={k: dict(v) for k, v in dict(data.get("cv") or {}).items()},
            folds=int(data.get("folds", 0)), fitted_at=str(data.get("fitted_at", "")),
            source=str(data.get("source", "")), samples=list(data.get("samples") or []),
        )


@dataclass
class Sample:
    """One measured model: its architecture features and its latency statistics (ms)."""

    name: str
    features: dict[str, float]
    latency: dict[str, float]


def fit_latency_model(
    samples: Sequence[Sample], key: str, *, folds: int = 5, seed: int = 0, source: str = ""
) -> LatencyModel:
    """Fit one NNLS model per latency statistic and k-fold cross-validate it.

    Raises ProfileError with what to do when there are too few samples.
    """
    samples = [s for s in samples if all(s.latency.get(m, 0) > 0 for m in METRICS[:1])]
    if len(samples) < MIN_SAMPLES:
        raise ProfileError(
            f"latency model {key}: only {len(samples)} measured models (need >= {MIN_SAMPLES}); "
            "run `edgekd profile calibrate` to measure a sample of the search space"
        )
    x = np.stack([design_row(s.features) for s in samples])
    coef: dict[str, dict[str, float]] = {}
    cv: dict[str, dict[str, float]] = {}
    k = max(2, min(folds, len(samples)))
    for metric in METRICS:
        rows = [i for i, s in enumerate(samples) if s.latency.get(metric, 0) > 0]
        if len(rows) < MIN_SAMPLES:
            continue
        xm, ym = x[rows], np.array([samples[i].latency[metric] for i in rows], dtype=np.float64)
        coef[metric] = dict(zip(TERM_NAMES, map(float, _nnls_relative(xm, ym))))
        rel = np.empty_like(ym)
        for test in _kfold_indices(len(rows), k, seed):
            train = np.setdiff1d(np.arange(len(rows)), test)
            c = _nnls_relative(xm[train], ym[train])
            rel[test] = relative_errors(xm[test] @ c, ym[test])
        cv[metric] = error_summary(rel)
    return LatencyModel(
        key=key, kind=MODEL_KIND, coef=coef, n_samples=len(samples), cv=cv, folds=k,
        fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), source=source,
        samples=sorted(s.name for s in samples),
    )


# ------------------------------------------------------------------------------ the datasheet prior

def prior_model(hardware: Mapping[str, Any], key: str, *, source: str = "") -> LatencyModel:
    """A roofline estimate from datasheet figures, for a device with no measurements.

    `hardware` needs ``peak_gflops`` (fp32, whole device) and ``memory_bandwidth_gbs``; optional
    ``overhead_ms`` per inference and ``per_layer_us``. Latency = max(2*MACs / achievable compute,
    bytes / bandwidth) + overheads, where achievable compute is 10 % of peak — small batch-1 models
    never approach a datasheet peak (an assumption, stated, not a measurement).
    """
    try:
        peak = float(hardware["peak_gflops"])
        bw = float(hardware["memory_bandwidth_gbs"])
    except (KeyError, TypeError, ValueError):
        raise ProfileError(
            f"no measurements and no datasheet figures (peak_gflops, memory_bandwidth_gbs) for {key}; "
            "run `edgekd profile calibrate` on the device"
        ) from None
    roof = {
        "achievable_gflops": peak * float(hardware.get("efficiency", 0.10)),
        "memory_bandwidth_gbs": bw,
        "overhead_ms": float(hardware.get("overhead_ms", 0.02)),
        "per_layer_us": float(hardware.get("per_layer_us", 2.0)),
    }
    return LatencyModel(key=key, kind=PRIOR_KIND, coef={"roofline": roof}, source=source or "target datasheet")


def _roofline(roof: Mapping[str, float], f: Mapping[str, float], metric: str) -> float:
    compute_ms = 2.0 * f["macs"] / (roof["achievable_gflops"] * 1e9) * 1e3
    bytes_moved = 4.0 * f["params"] + f["activation_bytes"]
    memory_ms = bytes_moved / (roof["memory_bandwidth_gbs"] * 1e9) * 1e3
    layers = sum(f.get(k, 0) for k in ("conv", "depthwise_conv", "linear", "pool"))
    base = max(compute_ms, memory_ms) + roof["overhead_ms"] + layers * roof["per_layer_us"] / 1e3
    # tails: no data, so a fixed, stated margin over the median
    return base * {"p50_ms": 1.0, "p90_ms": 1.15, "p99_ms": 1.4}.get(metric, 1.0)


def evaluate_on(model: LatencyModel, samples: Iterable[Sample], metric: str = "p50_ms") -> dict[str, Any]:
    """Relative errors of `model` on `samples` (e.g. held-out students): rows + summary."""
    rows = []
    for s in samples:
        measured = s.latency.get(metric)
        if not measured:
            continue
        pred = model.predict(s.features, metric)
        rows.append({"name": s.name, "measured_ms": measured, "predicted_ms": pred, "rel_err": (pred - measured) / measured})
    return {"rows": rows, "summary": error_summary(np.array([r["rel_err"] for r in rows]))}
