"""Before any choice: the teacher on the device, and whether the latency model may be trusted here.

1. `teacher_on_device`: the teacher exported for the same runtime, precision and threads, timed on
   the device (or its recorded figure reused: `edgekd.deploy.budget`) — the reference for the budget
   and the speedup, and the drift check's first out-of-sample point (`edgekd.latency.drift.assess`,
   run before the teacher's point joins any fit).
2. `ensure_latency_model`: a foreign or drifted model is adapted on this device's points, a trusted
   one used as it is, and with none (or nothing measured to adapt on) the device is calibrated.
3. `teacher_predicted`: without a device, the teacher's latency is a prediction and says so.
4. `settle_transfer`: after an adaptation, a few untrained students near the budget are measured and
   the transfer is kept only if its leave-one-out error is small enough (else: full calibration).
Host side."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edgekd.deploy.session import Session


@dataclass
class TeacherCheck:
    """The teacher's figures for the report (`fig`), the drift check's assessment (None when nothing
    was measured), and when the teacher was measured (the start of this device's new points)."""

    fig: dict[str, Any]
    trust: Any = None  # edgekd.latency.drift.Assessment
    since: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def teacher_on_device(s: Session) -> TeacherCheck:
    from edgekd.deploy.budget import ROUNDS, measure_teacher, recorded_teacher, reused_timing
    from edgekd.deploy.spaces import is_default
    from edgekd.deploy.stages import export_for
    from edgekd.device.profiles import now_iso
    from edgekd.latency.drift import assess, describe
    from edgekd.latency.features import architecture_features
    from edgekd.models import load_model

    cfg, metric = s.cfg, s.metric
    check = TeacherCheck(fig={"spec": s.teacher_spec, "accuracy": s.teacher_host.test,
                              "val_accuracy": s.teacher_host.val, "checkpoint": str(s.teacher_path)})
    if s.teacher_path.suffix != ".pt" or not s.dev:
        return check
    art = export_for(cfg, s.teacher_path, s.work / "artifacts" / f"teacher-{s.teacher_sha[:12]}", s.fmt, s.threads,
                     s.precision,
                     device_identity=s.fingerprint or None)
    check.since = now_iso()
    # the budget hangs on this figure: timed over several rounds once, then reused (edgekd.deploy.budget)
    m = recorded_teacher(s.load_profile(), s.teacher_sha, fmt=s.fmt, precision=s.precision, threads=s.threads,
                         data_fp=s.data_fp, metric=metric, shape=s.shape)
    timing = reused_timing(m, metric) if m is not None else None
    measured_now = False
    if timing is None or not timing.sure:
        s.say(f"teacher: measuring {s.teacher_spec} on the device ({ROUNDS} timed rounds"
              + ("; the recorded figure was not sure)" if m is not None else ")"))
        _, m, timing = measure_teacher(s.dev, art, spec=s.teacher_spec, ckpt=s.teacher_path, eval_npz=s.eval_npz,
                                       data_fp=s.data_fp, threads=s.threads, min_s=cfg.min_s, metric=metric,
                                       previous=m)
        measured_now = True
    else:  # a reused figure: the drift check and any transfer start from when it was taken
        check.since = str(m.measured_at)
    # the drift check runs before a new teacher measurement joins any fit: an out-of-sample check
    model, info = load_model(s.teacher_path)
    family = str(getattr(info, "spec", "") or "").split(":")[0]
    outside = not is_default(cfg.space) and family not in s.measured_families()
    if outside:  # a model fitted on the space's families only says nothing about the teacher's
        s.say(f"drift check: the teacher ({family or 'no family'}) is of none of the families this configuration's "
              "model was measured on (--space); it is not a drift point here")
    check.trust = assess(s.path, s.fingerprint, s.model_key, s.runtime,
                         teacher_features=None if outside else architecture_features(model, s.shape),
                         teacher_latency=None if outside else m.latency, metric=metric,
                         profiles_dir=cfg.profiles_dir, tolerance=cfg.drift_tolerance)
    s.say(describe(check.trust, metric))
    if measured_now:
        s.remember(m, s.teacher_path, s.teacher_spec)
    check.fig.update(source="measured", p50_ms=m.latency["p50_ms"], latency_ms=m.latency[metric],
                     device_accuracy=m.accuracy, peak_rss_bytes=m.peak_rss_bytes, reused=timing.reused,
                     rounds_ms=timing.rounds_ms, spread=timing.spread, agree=timing.agree, sure=timing.sure,
                     how_sure=timing.how_sure(metric))
    s.say(f"teacher: p50 {m.latency['p50_ms']:.4g} ms, p{cfg.percentile} {m.latency[metric]:.4g} ms, "
          f"test accuracy {m.accuracy:.2%} (measured; {timing.how_sure(metric)})")
    return check


def ensure_latency_model(s: Session, check: TeacherCheck) -> None:
    """Leave a latency model for this configuration in the profile that this device's points back:
    adapt a foreign/drifted one, keep a trusted one, calibrate when there is none. Sets
    `check.trust.action` to what was done."""
    from edgekd.latency.drift import adapt, assess, describe

    if not s.dev or s.path is None:
        return
    cfg = s.cfg
    if check.trust is None:
        check.trust = assess(s.path, s.fingerprint, s.model_key, s.runtime, teacher_features=None,
                             teacher_latency=None, metric=s.metric, profiles_dir=cfg.profiles_dir,
                             tolerance=cfg.drift_tolerance)
        s.say(describe(check.trust, s.metric))
    trust = check.trust
    if trust.status in ("drifted", "foreign") and check.since is not None:
        # a prior from another profile meets all of this device's points; one of this profile
        # (drifted, or fitted under another identity) only the points measured from now on
        since = "" if trust.source != str(s.path) else check.since
        adapted = adapt(s.path, trust, s.fingerprint, s.measurement_meta, since=since)
        trust.action = f"adapted ({adapted.transfer['method']}) on {adapted.n_samples} device point(s)"
        s.say(f"latency model: {trust.action}: {adapted.label}")
    elif trust.status == "trusted":
        trust.action = "used as it is"
        missing = s.unmeasured_families()
        if missing:  # fitted on other students only: measure the space's families before predicting them
            specs = s.calibration_specs()
            s.say(f"latency model: no measured {', '.join(missing)} student in this configuration; calibrating on "
                  f"{len(specs)} untrained students around the search space")
            s.calibrate_on(specs)
            trust.action = f"used, after calibrating on {len(specs)} untrained students around the search space"
    if trust.status in ("drifted", "foreign") and check.since is None:
        trust.status = "none"  # nothing measured to adapt on: calibrate instead
    if trust.status == "none":
        specs = s.calibration_specs()
        s.say(f"latency model: none for {s.model_key} in {s.path}; calibrating on {len(specs)} untrained students")
        s.calibrate_on(specs)
        trust.action = f"calibrated on {len(specs)} untrained students"


def teacher_predicted(s: Session, check: TeacherCheck) -> None:
    """No device figure for the teacher: fill in the fitted model's prediction, labelled as one."""
    from edgekd.deploy.candidates import gather_candidates
    from edgekd.latency.features import architecture_features
    from edgekd.models import load_model

    if "latency_ms" in check.fig or s.teacher_path.suffix != ".pt":
        return
    model, _ = load_model(s.teacher_path)
    _, models = gather_candidates(s.load_profile(), input_shape=s.shape, num_classes=s.classes, formats=[s.fmt],
                                  precisions=[s.precision], threads=int(s.threads or 0), target=s.tgt,
                                  percentile=s.cfg.percentile, specs=[])
    lat_model = next(iter(models.values()), None)
    if lat_model is not None:
        feats = architecture_features(model, s.shape)
        check.fig.update(source=lat_model.label, latency_ms=lat_model.predict(feats, s.metric),
                         p50_ms=lat_model.predict(feats, "p50_ms"))


def settle_transfer(s: Session, check: TeacherCheck, budget: float) -> None:
    """After an adaptation: probe near the budget and keep the transfer only if it predicts well;
    otherwise fall back to a full calibration (`edgekd.latency.drift.settle_transfer`)."""
    from edgekd.latency.drift import settle_transfer as settle

    trust = check.trust
    if s.dev is None or s.path is None or trust is None or not trust.action.startswith("adapted"):
        return
    extra = settle(s.path, s.model_key, budget=budget, probes=s.cfg.transfer_probes, table=s.latency_table,
                   params_of=s.params, calibrate_on=s.calibrate_on, say=s.say, fallback_specs=s.calibration_specs)
    if extra.get("fallback"):
        trust.action += (f"; leave-one-out error too high: fell back to calibration on {extra['fallback_students']} "
                         "students")
    check.extra.update(extra)
