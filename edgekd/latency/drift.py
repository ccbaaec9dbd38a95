"""Trust nothing unchecked: which latency model a deploy may use on this device, and the drift check.

Before a deploy relies on a latency model it measures the teacher on the device anyway; that
measurement is the check. `assess` classifies the model for (device, runtime, precision, threads):

    trusted   this device's own fit (its recorded identity = this device's) and the teacher within
              `tolerance` of its prediction: used as it is;
    drifted   this device's own model, but the teacher is beyond the tolerance (a runtime upgrade,
              another governor, a noisy neighbour that stayed): adapted, the old model as the prior;
    foreign   fitted on another device (identity differs in a speed-relevant field, or records none:
              profiles from before identities, the committed one-machine sample), in this profile or
              another profile in the profiles dir: never used as-is, adapted as a prior;
    none      no model anywhere: full calibration.

Adapting (`adapt`) writes a `transfer/1` model into this device's profile: the prior corrected by this
device's points (`edgekd.latency.transfer`); the teacher's measurement is the first point and costs
nothing. Every later measurement of the same configuration (each deploy round, extra probes) re-adapts
it in `edgekd.latency.section.fit_profile` (`readapt`), so one point far off the model moves its
neighbourhood at once. When the device holds enough points of its own and a native fit
cross-validates better, the native fit takes over. Host side.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from edgekd.latency.model import MODEL_KIND, TRANSFER_KIND, LatencyModel
from edgekd.latency.section import device_points

# the teacher may sit this far (relative) from its prediction before the model is called drifted:
# wider than run-to-run noise of one measurement on a shared 2-vCPU machine (~10-20 % at 2 threads)
DRIFT_TOLERANCE = 0.25
# after adapting, the points' leave-one-out error above this falls back to full calibration
FALLBACK_LOO_ERROR = 0.25
# a native refit replaces a transfer only with this many device points (and a better CV error)

Log = Callable[[str], None]


def beyond_tolerance(ratio: float, tolerance: float = DRIFT_TOLERANCE) -> bool:
    """Whether measured / predicted = `ratio` is off by more than `tolerance`, either way (x1.25 or x1/1.25)."""
    return not 1 / (1 + tolerance) <= ratio <= 1 + tolerance


@dataclass
class Assessment:
    """What the drift check found for one latency configuration (JSON-able via `to_dict`)."""

    key: str
    status: str  # trusted / drifted / foreign / none
    source: str = ""  # profile the model (or the prior) comes from
    differences: list[str] = field(default_factory=list)  # identity fields that differ (foreign)
    predicted_ms: float | None = None  # the teacher, by the model as found
    measured_ms: float | None = None
    ratio: float | None = None  # measured / predicted
    tolerance: float = DRIFT_TOLERANCE
    drift_detected: bool = False
    action: str = ""  # used as-is / adapted / calibrated
    prior: dict[str, Any] | None = field(default=None, repr=False)  # the model dict to adapt from

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("prior")
        return d


def _model_identity_matches(model: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    from edgekd.device.identity import differences

    return differences(model.get("identity"), current)


def find_prior(key: str, current: Mapping[str, Any], own_path: Path | None,
               profiles_dir: str | Path) -> tuple[dict[str, Any] | None, str, list[str]]:
    """A foreign model for `key` to transfer from: the own profile's (when foreign), else the model in
    another profile of `profiles_dir` whose identity is closest to this device's (fewest differing
    fields; same architecture first). (model dict, profile path, differences)."""
    from edgekd.latency.section import latency_section
    from edgekd.errors import ProfileError
    from edgekd.device.profiles import Profile

    best: tuple[int, dict[str, Any], str, list[str]] | None = None
    candidates = sorted(Path(profiles_dir).glob("*.yaml")) if Path(profiles_dir).is_dir() else []
    for path in candidates:
        if own_path is not None and path.resolve() == own_path.resolve():
            continue
        try:
            prof = Profile.load(path)
        except ProfileError:
            continue  # a broken neighbour is not a prior
        model = latency_section(prof)["models"].get(key)
        if not isinstance(model, Mapping) or model.get("kind") not in (MODEL_KIND, TRANSFER_KIND):
            continue
        diff = _model_identity_matches(model, current)
        arch = (prof.device or {}).get("arch")
        here = ((current.get("hardware") or {}).get("arch"))
        rank = len(diff) + (100 if arch and here and arch != here else 0)
        if best is None or rank < best[0]:
            best = (rank, dict(model), str(path), diff)
    if best is None:
        return None, "", []
    return best[1], best[2], best[3]


def assess(path: Path | None, fingerprint: Mapping[str, Any], key: str, runtime: str, *,
           teacher_features: Mapping[str, Any] | None, teacher_latency: Mapping[str, float] | None,
           metric: str, profiles_dir: str | Path, tolerance: float = DRIFT_TOLERANCE) -> Assessment:
    """Classify the latency model for `key` on this device and run the drift check on the teacher's
    measurement (taken BEFORE it joins any fit, so the check is out of sample)."""
    from edgekd.latency.section import latency_section
    from edgekd.latency.recipe import config_identity
    from edgekd.device.profiles import Profile

    current = config_identity(fingerprint, key, runtime)
    own = Profile.load(path) if path is not None and path.exists() else None
    model = latency_section(own)["models"].get(key) if own is not None else None
    a = Assessment(key=key, status="none", tolerance=tolerance)
    if isinstance(model, Mapping):
        diff = _model_identity_matches(model, current)
        a.source = str(path)
        if diff:
            a.status, a.differences, a.prior = "foreign", diff, dict(model)
        else:
            a.status, a.prior = "trusted", dict(model)
    else:
        prior, where, diff = find_prior(key, current, path, profiles_dir)
        if prior is not None:
            a.status, a.source, a.differences, a.prior = "foreign", where, diff, prior
    if a.prior is not None and teacher_features is not None and teacher_latency and teacher_latency.get(metric):
        lm = LatencyModel.from_dict(key, a.prior)
        a.predicted_ms = lm.predict(teacher_features, metric)
        a.measured_ms = float(teacher_latency[metric])
        a.ratio = a.measured_ms / a.predicted_ms if a.predicted_ms > 0 else math.inf
        a.drift_detected = beyond_tolerance(a.ratio, tolerance)
        if a.status == "trusted" and a.drift_detected:
            a.status = "drifted"
    return a


def describe(a: Assessment, metric: str, subject: str = "teacher") -> str:
    """One log line: what was found and what will be done, with the figures (`subject`: what was measured)."""
    stat = metric.replace("_ms", "")
    fig = (f"{subject} predicted {stat} {a.predicted_ms:.4g} ms, measured {a.measured_ms:.4g} ms "
           f"(x{a.ratio:.2f}; tolerance ±{a.tolerance:.0%})" if a.ratio is not None else "no teacher figure to check")
    if a.status == "none":
        return f"drift check: no latency model for {a.key} here or in any profile -> full calibration"
    if a.status == "trusted" and a.ratio is None:
        return f"drift check: UNCHECKED (no teacher measured on the device); this device's model {a.key} is used"
    if a.status == "trusted":
        return f"drift check: {fig} -> within tolerance, this device's model {a.key} is used as it is"
    if a.status == "drifted":
        return f"drift check: {fig} -> DRIFT beyond tolerance: this device's model {a.key} becomes a prior and is adapted"
    why = "; ".join(a.differences[:4]) + (" ..." if len(a.differences) > 4 else "")
    return (f"drift check: the model for {a.key} is FOREIGN (from {a.source}: {why}); {fig}"
            + (" -> DRIFT beyond tolerance" if a.drift_detected else "") + " -> never used as-is: adapting it to this device")


# ------------------------------------------------------------------------------ adapting

def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def adapt(path: Path, a: Assessment, fingerprint: Mapping[str, Any], meta: Mapping[str, Any], *,
          since: str | None = None, method: str | None = None) -> LatencyModel:
    """Write into this device's profile a transfer of `a.prior` adapted on the device's points of
    `a.key` (measured since `since`, default: all, or now-ish for a drifted own model)."""
    from edgekd.latency.section import latency_section, update_profile_section
    from edgekd.latency.recipe import config_identity
    from edgekd.latency.transfer import DEFAULT_METHOD, transferred_model

    assert a.prior is not None
    base = LatencyModel.from_dict(a.key, a.prior).base_model()
    stamp = since if since is not None else ""
    result: dict[str, LatencyModel] = {}

    def change(prof: Any) -> None:
        sec = latency_section(prof)
        points = device_points(prof, a.key, stamp)
        model = transferred_model(base, points, method=method or DEFAULT_METHOD,
                                  identity=config_identity(fingerprint, a.key, str(meta.get("runtime"))),
                                  prior={"source": a.source, "status": a.status, "differences": a.differences[:8],
                                         "key": a.key, "adapted_at": _now()},
                                  since=stamp)
        sec["models"][a.key] = {**model.to_dict(), **dict(meta)}
        prof.latency_model = sec
        result["model"] = model

    update_profile_section(path, change)
    return result["model"]


def probe_specs(table: Mapping[str, tuple[float, str]], budget: float, count: int,
                params_of: Callable[[str], int]) -> list[str]:
    """Search-space students to measure untrained right after a transfer: those predicted within the
    budget and closest to it, one per family first (where the choice is about to be made)."""
    near = sorted((s for s, (lat, src) in table.items() if lat <= budget and src != "measured"),
                  key=lambda s: -table[s][0])
    chosen: list[str] = []
    for s in near:
        if len(chosen) >= count:
            break
        if s.split(":")[0] not in {c.split(":")[0] for c in chosen}:
            chosen.append(s)
    for s in near:
        if len(chosen) >= count:
            break
        if s not in chosen:
            chosen.append(s)
    return sorted(chosen, key=params_of)


def settle_transfer(path: Path, key: str, *, table: Callable[[], Mapping[str, tuple[float, str]]], budget: float,
                    probes: int, params_of: Callable[[str], int], calibrate_on: Callable[[list[str]], None],
                    fallback_specs: Callable[[], list[str]], say: Log) -> dict[str, Any]:
    """After a transfer: measure up to `probes` untrained students predicted just within the budget
    (where the choice is about to be made; each re-adapts the model), then check the transfer's
    leave-one-out error on its points; above FALLBACK_LOO_ERROR, full calibration (`fallback_specs`).
    Returns what was done, with the figures."""
    from edgekd.latency.section import latency_section
    from edgekd.device.profiles import Profile

    specs = probe_specs(table(), budget, probes, params_of) if probes > 0 else []
    if specs:
        say(f"transfer: measuring {len(specs)} untrained students predicted just within the budget: {', '.join(specs)}")
        calibrate_on(specs)
    raw = latency_section(Profile.load(path))["models"].get(key) or {}
    model = LatencyModel.from_dict(key, raw) if raw else None
    out: dict[str, Any] = {"probes": specs, "points": model.n_samples if model else 0, "fallback": False}
    if model is not None and model.kind == TRANSFER_KIND:
        loo = (model.cv.get("p50_ms") or {}).get("median_abs_rel")
        out["loo_median_abs_rel"] = loo
        if loo is not None and loo > FALLBACK_LOO_ERROR:
            say(f"transfer: leave-one-out median error {loo:.0%} on {model.n_samples} points > {FALLBACK_LOO_ERROR:.0%}: "
                "falling back to full calibration")
            fallback = fallback_specs()
            calibrate_on(fallback)
            out["fallback"], out["fallback_students"] = True, len(fallback)
        elif loo is not None:
            say(f"transfer: leave-one-out median error {loo:.1%} on {model.n_samples} device points "
                f"(<= {FALLBACK_LOO_ERROR:.0%}: no full calibration needed)")
    raw = latency_section(Profile.load(path))["models"].get(key) or {}
    if raw:
        out["model"] = LatencyModel.from_dict(key, raw).label
    return out


def round_drift(path: Path, key: str, predicted: float, measured: float, tolerance: float = DRIFT_TOLERANCE
                ) -> Assessment | None:
    """The drift check on a deploy round: a student measured beyond `tolerance` of its prediction by
    this device's own native model means the model no longer describes the device, whatever its 40
    calibration points say; returns the Assessment to `adapt` with (None when within tolerance or the
    model is already a transfer, which every new point re-adapts anyway)."""
    from edgekd.latency.section import latency_section
    from edgekd.device.profiles import Profile

    ratio = measured / predicted if predicted > 0 else math.inf
    if not beyond_tolerance(ratio, tolerance):
        return None
    raw = latency_section(Profile.load(path))["models"].get(key)
    if not isinstance(raw, Mapping) or raw.get("kind") != MODEL_KIND:
        return None
    return Assessment(key=key, status="drifted", source=str(path), predicted_ms=predicted, measured_ms=measured,
                      ratio=ratio, tolerance=tolerance, drift_detected=True, prior=dict(raw))


def bench_drift(path: Path, fingerprint: Mapping[str, Any], measurements: list[Any],
                tolerance: float = DRIFT_TOLERANCE) -> list[dict[str, Any]]:
    """The drift check of `edgekd bench`: each new measurement against what the profile's latency
    model of its configuration predicted for it, before it is recorded (out of sample). One entry per
    measurement the profile can predict: spec, key, predicted / measured p50, ratio, whether the model
    is this device's (`trusted`) or `foreign`, and `drift_detected` beyond `tolerance`."""
    from edgekd.latency.section import latency_section, measurement_features, measurement_runtime, measurement_shape
    from edgekd.latency.recipe import config_identity, is_current
    from edgekd.latency.model import model_key
    from edgekd.device.profiles import Profile

    if not Path(path).exists():
        return []
    prof = Profile.load(path)
    section = latency_section(prof)
    out = []
    for m in measurements:
        if not m.latency or not m.latency.get("p50_ms"):
            continue
        runtime = measurement_runtime(m)
        if not is_current(m, fingerprint, runtime, measurement_shape(m, section)):
            continue  # an INT8 artifact of another recipe than the model's: no drift point for it
        key = model_key(runtime, m.precision, m.threads, m.batch, measurement_shape(m, section))
        raw = section["models"].get(key)
        feats = measurement_features(m, section)
        if not isinstance(raw, Mapping) or feats is None:
            continue
        predicted = LatencyModel.from_dict(key, raw).predict(feats, "p50_ms")
        ratio = float(m.latency["p50_ms"]) / predicted if predicted > 0 else math.inf
        diff = _model_identity_matches(raw, config_identity(fingerprint, key, runtime))
        out.append({"spec": m.spec, "key": key, "predicted_p50_ms": predicted, "measured_p50_ms": m.latency["p50_ms"],
                    "ratio": ratio, "model": "foreign" if diff else "trusted", "differences": diff[:4],
                    "drift_detected": beyond_tolerance(ratio, tolerance)})
    return out
