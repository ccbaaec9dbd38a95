"""Choose the smallest student that meets a latency budget (and an accuracy floor) on one device.

The rule, applied to every candidate:
  1. latency at the chosen percentile <= budget — measured on this device when the profile has it,
     otherwise predicted by the device's fitted latency model (flagged "predicted"), or by the
     target's datasheet prior when nothing was measured (flagged "predicted, unmeasured");
  2. accuracy >= the floor, when a floor is given (measured accuracy only: an unmeasured one is not
     assumed, unless the caller — `edgekd deploy`, which measures it next — allows it);
  3. among those that pass, the fewest parameters wins; a tie goes to the higher accuracy. A joint
     choice (`edgekd select --format auto` / `--precision auto`: every runtime x precision the
     profile has) ranks by the weights' size on the device instead (params x bytes per weight of the
     candidate's precision: an INT8 student is a quarter of its fp32 self), so runtime and precision
     are chosen with the student; `edgekd deploy --format auto` goes further (val accuracy per MB,
     `edgekd.deploy.joint`), which needs the trained students select does not have.
Every candidate carries its reasons (why taken, why rejected). When none passes, the closest miss is
named: the rejected candidate with the smallest relative shortfall (latency over budget plus
accuracy under floor).

Candidates are (a) every model measured in the profile, as measured, and (b) every spec of every
student family's search space not yet measured in that configuration, predicted. With `only_specs`
(`edgekd select --space`), (a) keeps only the measured models of the given specs: the space's
students, not the teacher or the calibration students measured around them. Host side.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from edgekd.errors import ConfigError, ProfileError
from edgekd.latency.model import PREDICTED_UNMEASURED, LatencyModel, metric_for, model_key, prior_model, shape_tag
from edgekd.latency.features import spec_features

MEASURED = "measured"
PREDICTED = "predicted"
PRIOR = "prior"
BYTES_PER_WEIGHT = {"fp32": 4, "fp16": 2, "int8": 1}
RULES = {False: "fewest parameters; tie -> higher accuracy, then faster",
         True: "smallest weights on the device (params x bytes per weight: fp32 4, fp16 2, int8 1); "
               "tie -> higher accuracy, then faster"}


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


@dataclass
class Selection:
    """The outcome: the chosen candidate (or None), every candidate in rule order, the closest miss."""

    budget_ms: float
    percentile: int
    min_accuracy: float | None
    chosen: Candidate | None
    candidates: list[Candidate]
    closest_miss: Candidate | None
    models: dict[str, dict[str, Any]]
    profile: str | None = None
    input_shape: list[int] | None = None
    joint: bool = False
    stale_models: list[str] = field(default_factory=list)  # INT8 models of another recipe: not used

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "budget_ms": self.budget_ms, "percentile": self.percentile,
            "joint": self.joint, "rule": RULES[self.joint],
            "min_accuracy": self.min_accuracy, "input_shape": self.input_shape,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "closest_miss": self.closest_miss.to_dict() if self.closest_miss else None,
            "latency_models": self.models, "stale_models": self.stale_models,
            "candidates": [c.to_dict() for c in self.candidates],
        }


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


def joint_choice(formats: list[str] | None, precisions: list[str] | None,
                 target: Any | None = None) -> tuple[list[str] | None, list[str] | None, bool]:
    """`select --format` / `--precision` as given -> (formats, precisions, joint). "auto" (alone) means
    every one the profile has, or the `target`'s when one is given, and makes the choice joint; so does
    a list of more than one precision (sizes in bytes then differ for the same student)."""
    joint = False
    out = []
    for name, values, offered in (("format", formats, "formats"), ("precision", precisions, "precisions")):
        if values and "auto" in values:
            if len(values) > 1:
                raise ConfigError(f"--{name} auto chooses among every {name} the profile has; give it alone, "
                                  f"or a comma list without auto")
            values, joint = (list(getattr(target, offered)) if target is not None else None), True
        out.append(values)
    joint = joint or len(set(out[1] or ())) > 1
    return out[0], out[1], joint


def _check_budget(budget_ms: Any) -> None:
    if not isinstance(budget_ms, (int, float)) or isinstance(budget_ms, bool) or not math.isfinite(budget_ms) \
            or budget_ms <= 0:
        raise ConfigError(f"budget must be a positive finite number of milliseconds, got {budget_ms!r}")


def apply_rule(
    candidates: list[Candidate], *, budget_ms: float, min_accuracy: float | None, allow_unmeasured_accuracy: bool = False,
    joint: bool = False,
) -> tuple[Candidate | None, Candidate | None]:
    """Mark every candidate (status, reasons, miss) and return (chosen, closest miss). `joint`: rank by
    the weights' bytes on the device (`RULES`) instead of the parameter count."""
    _check_budget(budget_ms)
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ConfigError(f"min accuracy {min_accuracy!r} must be a fraction in 0..1 (e.g. 0.97)")
    for c in candidates:
        c.reasons, c.status = [], "rejected"
        lat_excess = 0.0
        if c.latency_ms is None:
            c.fits_latency = False
            c.reasons.append("no latency at this percentile")
            lat_excess = math.inf
        else:
            c.fits_latency = c.latency_ms <= budget_ms
            word = {MEASURED: "measured", PREDICTED: "predicted", PRIOR: PREDICTED_UNMEASURED}[c.latency_source]
            rel = "<=" if c.fits_latency else ">"
            c.reasons.append(f"{word} {c.latency_ms:.4g} ms {rel} budget {budget_ms:g} ms")
            lat_excess = max(0.0, c.latency_ms / budget_ms - 1.0)
        acc_short = 0.0
        if min_accuracy is None:
            c.fits_accuracy = None
            if c.accuracy is not None:
                c.reasons.append(f"accuracy {c.accuracy:.2%} (no floor)")
        elif c.accuracy is None:
            c.fits_accuracy = None
            c.reasons.append("accuracy not measured on this device" + (" (deploy measures it)" if allow_unmeasured_accuracy else ""))
        else:
            c.fits_accuracy = c.accuracy >= min_accuracy
            c.reasons.append(f"accuracy {c.accuracy:.2%} {'>=' if c.fits_accuracy else '<'} floor {min_accuracy:.2%}")
            acc_short = max(0.0, (min_accuracy - c.accuracy) / min_accuracy)
        acc_ok = c.fits_accuracy is True or min_accuracy is None or (c.fits_accuracy is None and allow_unmeasured_accuracy)
        if c.fits_latency and acc_ok:
            c.status = "fits"
        if c.fits_accuracy is None and min_accuracy is not None and not allow_unmeasured_accuracy:
            c.miss = lat_excess + 1.0  # unknown accuracy: a miss, but never "closer" than a measured one
        else:
            c.miss = lat_excess + acc_short
    # rule order: fewest params (joint: fewest weight bytes); tie -> higher accuracy (unknown last); then lower latency
    def size(c: Candidate) -> int:
        return c.size_bytes if joint else c.params

    candidates.sort(key=lambda c: (size(c), -(c.accuracy if c.accuracy is not None else -1.0),
                                   c.latency_ms if c.latency_ms is not None else math.inf, c.spec, c.format, c.precision))
    chosen = next((c for c in candidates if c.status == "fits"), None)
    if chosen is not None:
        chosen.status = "chosen"
        chosen.reasons.insert(0, f"smallest that fits ({chosen.size_bytes / 1e6:.4g} MB as {chosen.precision})" if joint
                              else "smallest that fits")
        for c in candidates:
            if c.status != "fits":
                continue
            if size(c) > size(chosen):
                c.reasons.insert(0, f"fits, but {c.size_bytes / 1e6:.4g} MB as {c.precision} > {chosen.size_bytes / 1e6:.4g} MB"
                                 if joint else f"fits, but {c.params:,} params > {chosen.params:,}")
            else:
                c.reasons.insert(0, f"fits; tie on {'size' if joint else 'params'}, lower accuracy or slower")
        return chosen, None
    rejected = [c for c in candidates if not math.isinf(c.miss)]
    closest = min(rejected, key=lambda c: (c.miss, c.params)) if rejected else None
    return None, closest


def select(
    profile: Any | None,
    *,
    budget_ms: float,
    percentile: int = 50,
    min_accuracy: float | None = None,
    formats: Iterable[str] | None = None,
    precisions: Iterable[str] | None = None,
    threads: int | None = None,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    target: Any | None = None,
    dataset_fingerprint: str | None = None,
    allow_unmeasured_accuracy: bool = False,
    specs: Iterable[str] | None = None,
    task: str | None = None,
    accelerator: str | None = None,
    only_specs: bool = False,
    joint: bool = False,
) -> Selection:
    """Apply the budget rule to a profile's measurements and predictions (see the module docstring).

    `task` "text" chooses among text models at the input recorded under the profile's `text` entry
    (sequence length, classes, vocabulary); None means image, or text when the profile holds only text.
    `only_specs`: only the `specs` are candidates, measured or predicted; `joint`: the joint rule (`RULES`)."""
    from edgekd.latency.section import latency_section

    _check_budget(budget_ms)  # before any work: NaN compares false with everything
    section = latency_section(profile) if profile is not None else {}
    text = section.get("text") or {}
    if task not in (None, "image", "text"):
        raise ConfigError(f"task {task!r} is not one of image, text")
    if task is None and text and not section.get("input_shape"):
        task = "text"
    if task == "text" and not (input_shape or text.get("input_shape")):
        raise ProfileError("the profile holds no text measurements: run `edgekd deploy --data <text data>` "
                           "(or bench a text model) on the device first, or pass the input shape")
    base = text if task == "text" else section
    shape = tuple(input_shape or base.get("input_shape") or ())
    classes = int(num_classes or base.get("num_classes") or 0)
    if not shape or not classes:
        raise ProfileError("no input shape known for prediction: run `edgekd profile calibrate` for this device, "
                           "or pass the input shape")
    candidates, models = gather_candidates(
        profile, input_shape=shape, num_classes=classes, formats=formats, precisions=precisions, threads=threads,
        batch=batch, target=target, dataset_fingerprint=dataset_fingerprint, percentile=percentile, specs=specs,
        vocab=text.get("vocab") if task == "text" else None, accelerator=accelerator, only_specs=only_specs)
    if not candidates:
        where = f"profile {getattr(profile, 'path', None) or getattr(profile, 'name', '')}" if profile is not None else "no profile"
        stale = stale_models(profile) if profile is not None else []
        why = (f" (its {', '.join(stale)} measured INT8 artifacts of another quantization recipe than this device's "
               "exports now)" if stale else "")
        raise ProfileError(f"{where} has no measurement and no latency model for the requested formats/precisions{why}; "
                           "run `edgekd profile calibrate` (or `edgekd bench`) on the device first")
    chosen, closest = apply_rule(candidates, budget_ms=budget_ms, min_accuracy=min_accuracy,
                                 allow_unmeasured_accuracy=allow_unmeasured_accuracy, joint=joint)
    return Selection(
        budget_ms=budget_ms, percentile=int(percentile), min_accuracy=min_accuracy, chosen=chosen,
        candidates=candidates, closest_miss=closest,
        models={k: {"label": m.label, "kind": m.kind, "n_samples": m.n_samples, "cv": m.cv} for k, m in models.items()},
        profile=str(getattr(profile, "path", None) or getattr(profile, "name", "")) if profile is not None else None,
        input_shape=list(shape), joint=joint, stale_models=stale_models(profile) if profile is not None else [],
    )
