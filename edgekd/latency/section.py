"""The profile's latency section — its layout, the measurements it turns into fit points, and the
fit itself — owned here and read by calibration, drift, select, deploy and plot.

`profile.latency_model` (stored verbatim by `edgekd.device.profiles`) holds:
  schema: edgekd.latency/1
  input_shape: [1, 8, 8]        # shape of the last calibration (select's default)
  num_classes: 10
  features: {<model sha256>: {spec, input_shape, num_classes, features: {...}}}
  models: {<runtime/precision/tN/bN>: LatencyModel.to_dict() + runtime/format/precision/threads/batch}
  deployments: [...]            # what `edgekd deploy` shipped, the last 20
  text: {input_shape, num_classes, vocab}   # text inputs, kept apart from the image default

`fit_profile` fits one model per configuration after every new point; a stored transfer model is
re-adapted with this device's points (`readapt`) rather than replaced. Host side.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from edgekd.latency.model import LatencyModel
from edgekd.models.spec import parse_spec

# a native fit on a drifted/foreign device's own points replaces its transfer from this many points on
NATIVE_MIN_POINTS = 12


def note_inputs(section: dict[str, Any], shape: Any, classes: int, spec: str | None = None,
                vocab: int | None = None) -> None:
    """Record the input a measured model took: image inputs set the section's `input_shape` (select's
    default, as always); text inputs go under `text` (shape, classes, vocabulary) and leave the image
    default alone, so one profile holds both without either overwriting the other."""
    shape = [int(d) for d in shape]
    if len(shape) != 1:
        section["input_shape"], section["num_classes"] = shape, int(classes)
        return
    if not vocab and spec:
        try:
            vocab = int(parse_spec(spec)[1].get("vocab", 0))
        except Exception:  # noqa: BLE001 - a file name, not a spec (an outside teacher): no vocabulary known
            vocab = None
    section["text"] = {"input_shape": shape, "num_classes": int(classes),
                       "vocab": vocab or (section.get("text") or {}).get("vocab")}


SECTION_SCHEMA = "edgekd.latency/1"


def latency_section(profile: Any) -> dict[str, Any]:
    """The profile's latency section (empty skeleton when the profile has none yet)."""
    raw = profile.latency_model if isinstance(profile.latency_model, dict) else {}
    if raw and raw.get("schema") != SECTION_SCHEMA:
        raw = {}  # an older or foreign layout: refit from the measurements rather than misread it
    return {"schema": SECTION_SCHEMA, "input_shape": raw.get("input_shape"), "num_classes": raw.get("num_classes"),
            "features": dict(raw.get("features") or {}), "models": dict(raw.get("models") or {}),
            "deployments": list(raw.get("deployments") or []), "text": raw.get("text")}


def measurement_runtime(m: Any) -> str:
    """The runtime that ran a measurement (older rows name only the format)."""
    from edgekd.runtimes import FORMAT_RUNTIME

    return str(m.runtime or FORMAT_RUNTIME.get(m.format, m.format))


def measurement_features(m: Any, section: dict[str, Any]) -> dict[str, float] | None:
    """Architecture features of a measured model: recorded ones, else rebuilt from its spec at the
    recorded (or the section's) input shape when the parameter count proves it is the plain
    (uncompressed) spec. Recorded features from before the newest ones (`pointwise_macs`, and before
    it `conv_shapes`) are rebuilt the same way when possible, so old profiles get every term too."""
    from edgekd.latency.features import spec_features

    known = section["features"].get(m.model_sha256)
    if known and "pointwise_macs" in (known.get("features") or {}):
        return dict(known["features"])
    shape = (known or {}).get("input_shape") or section.get("input_shape")
    classes = (known or {}).get("num_classes") or section.get("num_classes")
    rebuilt = None
    if m.spec and shape and classes:
        try:
            rebuilt = spec_features(m.spec, shape, classes)
        except Exception:  # noqa: BLE001 - a spec from another edgekd version: no features, not a crash
            rebuilt = None
    params = m.params if m.params is not None else (known or {}).get("features", {}).get("params")
    if rebuilt is not None and params is not None and int(params) != rebuilt["params"]:
        rebuilt = None  # pruned / factorized / other input size: the spec alone does not describe it
    if rebuilt is not None:
        return rebuilt
    return dict(known["features"]) if known else None


def measurement_shape(m: Any, section: dict[str, Any]) -> list[int] | None:
    """The input shape a measured model took: its recorded one, else the section's (image) default."""
    known = section["features"].get(m.model_sha256)
    return list(known["input_shape"]) if known and known.get("input_shape") else section.get("input_shape")


def fit_profile(profile: Any, *, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Fit one latency model per (runtime, precision, threads, batch) that has enough measurements;
    store them in the profile's section (in memory) and return {key: LatencyModel}."""
    from edgekd.latency.model import MIN_SAMPLES, Sample, fit_latency_model, model_key

    from edgekd.latency.anchor import anchor_floor, steady_latency
    from edgekd.latency.recipe import is_current

    section = latency_section(profile)
    groups: dict[str, list[Sample]] = {}
    meta: dict[str, dict[str, Any]] = {}
    # measurements with a speed anchor are fitted at the device's steady speed (edgekd.latency.anchor)
    floor = anchor_floor(m.latency for m in profile.measurements.values())
    for m in profile.measurements.values():
        if not m.latency or not m.latency.get("p50_ms"):
            continue
        if not is_current(m, profile.device, measurement_runtime(m), measurement_shape(m, section)):
            continue  # an INT8 point of another quantization recipe: not what this device's exports are now
        feats = measurement_features(m, section)
        if feats is None:
            continue
        key = model_key(measurement_runtime(m), m.precision, m.threads, m.batch, measurement_shape(m, section),
                        accelerator=m.accelerator)
        groups.setdefault(key, []).append(Sample(f"{m.spec or '?'}@{m.model_sha256[:12]}", feats,
                                                 steady_latency(m.latency, floor)))
        meta[key] = {"runtime": measurement_runtime(m), "format": m.format, "precision": m.precision,
                     "threads": m.threads, "batch": m.batch}
        if m.on_accelerator:
            meta[key]["accelerator"] = m.on_accelerator
    from edgekd.device.identity import hardware_identity
    from edgekd.latency.model import TRANSFER_KIND
    from edgekd.latency.recipe import config_identity

    fitted = {}
    for key, samples in sorted(groups.items()):
        stored = section["models"].get(key)
        native = None
        if len(samples) >= MIN_SAMPLES:
            native = fit_latency_model(samples, key, folds=folds, seed=seed, source=f"profile {profile.name}")
            if hardware_identity(profile.device or {}) is not None:  # the device these points were measured on
                native.identity = config_identity(profile.device, key, meta[key]["runtime"])
        if isinstance(stored, dict) and stored.get("kind") == TRANSFER_KIND:
            model = readapt(profile, key, stored)  # every new point corrects the transfer at once
        elif native is not None:
            model = native
        else:
            continue
        fitted[key] = model
        section["models"][key] = {**model.to_dict(), **meta[key]}
    profile.latency_model = section
    return fitted


def update_profile_section(path: Any, change: Any) -> Any:
    """Lock the profile, re-read it, apply `change(profile)`, write atomically (same discipline as
    `edgekd.device.profiles.record_measurements`, so a concurrent bench loses nothing)."""
    from pathlib import Path

    from edgekd.device.profile_lock import file_lock
    from edgekd.device.profiles import Profile, dump_profile, write_under_lock

    path = Path(path)
    with file_lock(path):
        profile = Profile.load_or_new(path)
        change(profile)
        write_under_lock(path, dump_profile(profile))  # atomic; clears temp files of killed writers
    profile.path = path
    return profile


# ------------------------------------------------------------------------------ the calibration run

def device_points(profile: Any, key: str, since: str = "") -> list[Any]:
    """This device's measurements of configuration `key` (measured at or after `since`) as transfer points."""
    from edgekd.latency.model import model_key
    from edgekd.latency.recipe import is_current
    from edgekd.latency.transfer import Point

    section = latency_section(profile)
    out = []
    for m in profile.measurements.values():
        if not m.latency or not m.latency.get("p50_ms") or (since and str(m.measured_at) < since):
            continue
        if not is_current(m, profile.device, measurement_runtime(m), measurement_shape(m, section)):
            continue
        if model_key(measurement_runtime(m), m.precision, m.threads, m.batch, measurement_shape(m, section),
                     accelerator=m.accelerator) != key:
            continue
        feats = measurement_features(m, section)
        if feats is not None:
            out.append(Point(f"{m.spec or '?'}@{m.model_sha256[:12]}", feats, dict(m.latency)))
    return out


def readapt(profile: Any, key: str, raw: Mapping[str, Any]) -> LatencyModel:
    """Re-adapt a stored transfer model with every device point since it was started (called by
    `fit_profile` after each new measurement). A native fit on those same points (once there are
    NATIVE_MIN_POINTS) replaces it when its cross-validated median error beats the transfer's
    leave-one-out one: then the device has outgrown its prior."""
    from edgekd.latency.model import fit_latency_model
    from edgekd.latency.transfer import DEFAULT_METHOD, transferred_model

    old = LatencyModel.from_dict(key, raw)
    tr = old.transfer or {}
    points = device_points(profile, key, str(tr.get("since") or ""))
    model = transferred_model(old.base_model(), points, method=str(tr.get("method") or DEFAULT_METHOD),
                              identity=old.identity, prior=tr.get("prior") or {}, since=str(tr.get("since") or ""))
    if len(points) >= NATIVE_MIN_POINTS:
        native = fit_latency_model(points, key, source=f"profile {profile.name} (points since {tr.get('since') or 'start'})")
        mine = (native.cv.get("p50_ms") or {}).get("median_abs_rel", math.inf)
        theirs = (model.cv.get("p50_ms") or {}).get("median_abs_rel", math.inf)
        if mine <= theirs:
            native.identity = old.identity
            return native
    return model
