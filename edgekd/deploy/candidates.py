"""Candidates of a selection: every (student, runtime, precision) and what is known about it on one
device, for the rule in `edgekd.deploy.select`.

Candidates are (a) every model measured in the profile, as measured, and (b) every spec of every
student family's search space not yet measured in that configuration, predicted. With `only_specs`
(`edgekd select --space`), (a) keeps only the measured models of the given specs: the space's
students, not the teacher or the calibration students measured around them.
The profile's latency models that describe its device's exports now (`latency_models`) predict the
unmeasured ones; nothing fitted means the target's datasheet prior. Host side.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from edgekd.latency.model import PREDICTED_UNMEASURED, LatencyModel, metric_for, model_key, prior_model, shape_tag
from edgekd.latency.features import spec_features

MEASURED = "measured"
PREDICTED = "predicted"
PRIOR = "prior"
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}


def size_bytes(params: int, precision: str) -> int:
    """The student's weights on the device, in bytes, at `precision`."""
    return int(params) * BYTES_PER_WEIGHT.get(precision, 4)


@dataclass
class Candidate:
    """One (student, runtime, precision) and what is known about it on this device."""

    spec: str
    runtime: str
    format: str
    precision: str
    threads: int
    batch: int
    params: int
    macs: int
    latency_ms: float | None = None
    latency_source: str = PREDICTED  # measured / predicted / prior
    predicted_ms: float | None = None
    accuracy: float | None = None
    model_sha256: str | None = None
    fits_latency: bool = False
    fits_accuracy: bool | None = None  # None = no floor, or accuracy not measured
    status: str = "rejected"  # chosen / fits / rejected
    reasons: list[str] = field(default_factory=list)
    miss: float = math.inf  # relative shortfall, for the closest miss

    @property
    def size_bytes(self) -> int:
        return size_bytes(self.params, self.precision)

    @property
    def latency_label(self) -> str:
        return {MEASURED: "measured", PREDICTED: "predicted", PRIOR: PREDICTED_UNMEASURED}[self.latency_source]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["latency_label"] = self.latency_label
        d["size_bytes"] = self.size_bytes
        d["miss"] = None if math.isinf(self.miss) else self.miss
        return d

@dataclass(frozen=True)
class Config:
    """One latency configuration to choose in: runtime + precision + threads + batch (+ the sequence
    length of text inputs, `edgekd.latency.model.shape_tag`) on one accelerator (None: the default)."""

    runtime: str
    format: str
    precision: str
    threads: int
    batch: int
    tag: str = ""
    accelerator: str | None = None

    @property
    def key(self) -> str:
        return model_key(self.runtime, self.precision, self.threads, self.batch, accelerator=self.accelerator) + self.tag


def _runtime_format(runtime: str) -> str:
    from edgekd.runtimes.catalog import runtime_format

    return runtime_format(runtime)


def _format_runtime(fmt: str) -> str:
    from edgekd.runtimes.catalog import format_runtime

    return format_runtime(fmt)


def _accelerator_for(runtime: str, accelerator: str | None) -> str | None:
    """The accelerator to choose in for `runtime`: the asked one (None when the runtime does not run
    on it, so its configurations drop out), or the runtime's default when none is asked."""
    from edgekd.runtimes.catalog import RUNTIMES, accelerators, default_accelerator

    if runtime not in RUNTIMES:  # a runtime this edgekd does not know (an older profile): as recorded
        return accelerator or ""
    if accelerator is None:
        return default_accelerator(runtime)
    return accelerator if accelerator in accelerators(runtime) else None


def latency_models(profile: Any) -> dict[str, LatencyModel]:
    """The fitted models stored in a profile that describe its device's exports now, {key: LatencyModel}:
    an INT8 model fitted under another quantization recipe (`edgekd.latency.recipe`) is left out (deploy
    adapts it as a prior; `stale_models` names them)."""
    from edgekd.latency.recipe import model_is_current
    from edgekd.latency.section import latency_section

    return {k: LatencyModel.from_dict(k, v) for k, v in latency_section(profile)["models"].items()
            if model_is_current(v, profile.device, k)}


def stale_models(profile: Any) -> list[str]:
    """Keys of the profile's INT8 models fitted under another quantization recipe than its device's
    exports use now (not used to predict: `latency_models`)."""
    from edgekd.latency.recipe import model_is_current
    from edgekd.latency.section import latency_section

    return sorted(k for k, v in latency_section(profile)["models"].items() if not model_is_current(v, profile.device, k))


def gather_candidates(
    profile: Any | None,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    formats: Iterable[str] | None = None,
    precisions: Iterable[str] | None = None,
    threads: int | None = None,
    batch: int = 1,
    target: Any | None = None,
    dataset_fingerprint: str | None = None,
    percentile: int = 50,
    specs: Iterable[str] | None = None,
    vocab: int | None = None,
    accelerator: str | None = None,
    only_specs: bool = False,
) -> tuple[list[Candidate], dict[str, LatencyModel]]:
    """Candidates (measured ones and predicted search-space specs) and the latency models used.

    `accelerator` (default: the target's, else each runtime's default) keeps only measurements and
    latency models of that accelerator: CPU and NPU figures of one device never mix.

    Only measurements and latency models of the same kind of input count: image inputs (C x H x W)
    or text inputs of `input_shape` = (seq_len,) (then the text student family's specs, sized with
    `vocab`, are the search space). `only_specs`: measured models count only when their spec is in
    `specs` (`select --space`: the space's students, not whatever else the profile measured)."""
    from edgekd.latency.calibrate import student_specs
    from edgekd.latency.section import latency_section, measurement_features, measurement_runtime, measurement_shape
    from edgekd.latency.recipe import is_current

    tag = shape_tag(input_shape)

    metric = metric_for(percentile)
    want_formats = set(formats) if formats else None
    want_precisions = set(precisions) if precisions else None
    for f in want_formats or ():
        _format_runtime(f)
    if accelerator is None and target is not None:
        accelerator = getattr(target, "accelerator", None)
    if accelerator is not None:
        from edgekd.runtimes.catalog import canonical_accelerator

        accelerator = canonical_accelerator(accelerator)
    models = latency_models(profile) if profile is not None else {}
    section = latency_section(profile) if profile is not None else None
    configs: dict[str, Config] = {}

    def wanted(fmt: str, precision: str, th: int, b: int) -> bool:
        return ((want_formats is None or fmt in want_formats) and (want_precisions is None or precision in want_precisions)
                and (threads is None or th == int(threads or 0)) and b == batch)

    candidates: list[Candidate] = []
    measured_keys: set[tuple[str, str]] = set()
    specs = list(specs) if specs is not None else None  # iterated twice
    keep = set(specs or ())
    for m in (profile.measurements.values() if profile is not None else ()):
        runtime = measurement_runtime(m)
        if not m.latency or not wanted(m.format, m.precision, m.threads, m.batch) or not m.spec:
            continue
        if not is_current(m, profile.device, runtime, measurement_shape(m, section) if section else None):
            continue  # an INT8 figure of another quantization recipe is not this export's latency
        if only_specs and m.spec not in keep:
            continue  # measured, but not a student of the asked space
        if section is not None and shape_tag(measurement_shape(m, section)) != tag:
            continue  # another kind of input (text vs image, another sequence length)
        if dataset_fingerprint and m.dataset_fingerprint and not str(m.dataset_fingerprint).startswith(dataset_fingerprint):
            continue  # accuracy on another dataset says nothing here
        on = _accelerator_for(runtime, accelerator)
        if on is None or (m.on_accelerator or "") != on:
            continue  # measured on another accelerator
        cfg = Config(runtime, m.format, m.precision, m.threads, m.batch, tag, on)
        configs[cfg.key] = cfg
        feats = measurement_features(m, section) if section else None
        lat = m.latency.get(metric)
        model = models.get(cfg.key)
        cand = Candidate(
            spec=m.spec, runtime=runtime, format=m.format, precision=m.precision, threads=m.threads, batch=m.batch,
            params=int(m.params or (feats or {}).get("params", 0)), macs=int(m.macs or (feats or {}).get("macs", 0)),
            latency_ms=float(lat) if lat else None, latency_source=MEASURED, accuracy=m.accuracy,
            model_sha256=m.model_sha256,
            predicted_ms=model.predict(feats, metric) if (model and feats) else None,
        )
        candidates.append(cand)
        if feats is not None and int(m.params or 0) == feats["params"]:
            measured_keys.add((m.spec, cfg.key))
    for key, model in models.items():
        raw = (section or {}).get("models", {}).get(key, {})
        runtime = raw.get("runtime", key.split("/")[0])
        on = _accelerator_for(runtime, accelerator)
        cfg = Config(runtime, raw.get("format") or _runtime_format(key.split("/")[0]),
                     raw.get("precision", key.split("/")[1]), int(raw.get("threads", 0)), int(raw.get("batch", 1)), tag,
                     on)
        if on is None or cfg.key != key:
            continue  # a model for another kind of input, or another accelerator
        if wanted(cfg.format, cfg.precision, cfg.threads, cfg.batch):
            configs[cfg.key] = cfg
    if not any(models.get(k) for k in configs) and target is not None:
        # nothing fitted on this device: the datasheet roofline, clearly labelled
        for fmt in target.formats:
            runtime = _format_runtime(fmt)
            on = _accelerator_for(runtime, accelerator)
            for precision in target.precisions:
                th = int(threads or target.default_threads or 0)
                if on is not None and wanted(fmt, precision, th, batch):
                    cfg = Config(runtime, fmt, precision, th, batch, tag, on)
                    hw = dict(target.hardware)
                    hw.setdefault("peak_gflops", hw.get("peak_gops_int8" if precision == "int8" else "peak_gflops_fp32"))
                    models[cfg.key] = prior_model(hw, cfg.key, source=f"target {target.name}: {hw.get('source', '')}".strip())
                    configs[cfg.key] = cfg
                    break  # one precision per format for the prior: the target's preferred one
            if configs:
                break  # and the preferred format
    if specs is not None:
        spec_list = list(specs)
    elif tag:  # text inputs: the text students, at the dataset's vocabulary
        text = (section or {}).get("text") or {}
        spec_list = student_specs("text", vocab or text.get("vocab") or None)
    else:
        spec_list = student_specs()
    for cfg in configs.values():
        model = models.get(cfg.key)
        if model is None:
            continue
        for spec in spec_list:
            if (spec, cfg.key) in measured_keys:
                continue
            feats = spec_features(spec, input_shape, num_classes)
            pred = model.predict(feats, metric)
            candidates.append(Candidate(
                spec=spec, runtime=cfg.runtime, format=cfg.format, precision=cfg.precision, threads=cfg.threads,
                batch=cfg.batch, params=feats["params"], macs=feats["macs"], latency_ms=pred, predicted_ms=pred,
                latency_source=PRIOR if model.is_prior else PREDICTED,
            ))
    return candidates, {k: models[k] for k in configs if k in models}
