"""`edgekd deploy --target T`: the closed loop, then the bundle.

    predict -> pick -> distill (soft-target cache) -> compress (optional) -> export for the target
      -> verify ON THE DEVICE through the agent (latency at the percentile, peak memory, accuracy on
         the deployed runtime) -> record in the device's profile
      -> over budget: refit the latency model with the new point and step to a smaller candidate;
         under the accuracy floor: step to a larger one; at most `max_rounds` device rounds.

How a candidate is picked (`edgekd.deploy.choice.frontier_search`): every search-space student whose
latency at the percentile (measured in the profile, else predicted by the fitted model, else the
datasheet prior) is within budget; among those, the one with the fewest parameters whose accuracy
after distillation (host, VALIDATION split, the kept weights) meets the choosing floor. Accuracy is
assumed to grow with size only *inside a family* (at 28x28 a 61k CNN beats a 269k MLP), so each
family's frontier is bisected on its own and a family is only explored below the best found so far.
When nothing passes, the failure report (`edgekd.deploy.report`) gives the best accuracy reachable at
this budget, the budget this floor needs (the same search over the students over budget, at most
`report_distills` more distills), and the flags to change. Teacher, students and exports are cached
under `work_dir`.

Two splits, two floors, on purpose: every choice (the bisection's floor check, stepping to a larger
student) uses val accuracy against the teacher's val accuracy - margin; the device verification
measures TEST accuracy on the deployed runtime against the teacher's test accuracy - margin (or
--min-accuracy, an absolute accuracy on the deployed runtime, for both). The test split never drives
a choice except that final pass/fail, so the reported drop vs the teacher is not selected on.

Text data (`--data reviews`, a .csv/.jsonl): the same loop over the text student family (tinybert,
sized with the tokenizer's vocabulary), the default text teacher (`DEFAULT_TEXT_TEACHER`), exports
with two int64 inputs, latency measured and predicted at the dataset's sequence length (max_len). The
profile keeps text latency models apart (keys ``.../b1/seqL``) and text inputs under `text`, so
image and text measurements are never mixed in one fit.

Defaults that make `edgekd deploy --target cpu` a complete run: the default teacher trained on the
built-in digits (cached); the budget is the teacher's own latency at the percentile, measured on the
device (least disturbed of 3 rounds, then reused from the profile while two rounds agree:
`edgekd.deploy.budget`), divided by `speedup_goal` (5x); the floor is the teacher's accuracy minus 1.5 points (val for
choosing, test on the device); a device profile with no latency model gets a quick calibration first.
Without a reachable device the loop stops after export: status "unverified", every figure labelled
predicted, and the exact device-side commands printed. Never a measurement that was not made. Host side.
"""
from __future__ import annotations

import math

import dataclasses
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekd.errors import ConfigError, EdgeKDError

Log = Callable[[str], None]


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


def _check(cfg: DeployConfig, tgt: Any) -> None:
    if cfg.percentile not in (50, 90, 99):
        raise ConfigError(f"percentile {cfg.percentile} is not measured; use 50, 90 or 99")
    if cfg.budget_ms is not None and not (isinstance(cfg.budget_ms, (int, float)) and math.isfinite(cfg.budget_ms)
                                          and cfg.budget_ms > 0):
        raise ConfigError(f"--budget-ms {cfg.budget_ms} must be a positive number of milliseconds")
    if cfg.min_accuracy is not None and not 0 <= cfg.min_accuracy <= 1:
        raise ConfigError(f"--min-accuracy {cfg.min_accuracy} must be a fraction in 0..1 (e.g. 0.97)")
    if cfg.max_rounds < 1:
        raise ConfigError(f"--max-rounds {cfg.max_rounds} must be >= 1")
    from edgekd.deploy.stages import compress_chain

    # checked before any training; `prune` folds into the chain
    cfg.compress, cfg.prune = [entry.as_dict() for entry in compress_chain(cfg)] or None, None
    if cfg.precision is None:
        cfg.precision = tgt.precisions[0]
    if cfg.precision not in tgt.precisions:
        raise ConfigError(f"target {tgt.name} runs precisions {', '.join(tgt.precisions)}, not {cfg.precision}")
    if cfg.format is not None and cfg.format not in tgt.formats:
        raise ConfigError(f"target {tgt.name} takes formats {', '.join(tgt.formats)}, not {cfg.format}")


def _choose_format(cfg: DeployConfig, tgt: Any, have: dict[str, Any] | None) -> str:
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


def _features_of(ckpt: Path, shape: tuple[int, ...]) -> dict[str, Any]:
    from edgekd.latency.features import architecture_features
    from edgekd.models import load_model

    return architecture_features(load_model(ckpt)[0], shape)


def run_deploy(cfg: DeployConfig, log: Log | None = None) -> dict[str, Any]:
    """Run the loop and write the bundle; returns the report (see the module docstring)."""
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.bench.devices import open_device
    from edgekd.deploy.budget import ROUNDS as TEACHER_ROUNDS
    from edgekd.deploy.budget import measure_teacher, recorded_teacher, reused_timing
    from edgekd.deploy.choice import frontier_search
    from edgekd.deploy.report import failure_report, failure_text, latency_model_line, latency_model_summary
    from edgekd.deploy.bundle import device_commands, preprocessing, write_bundle
    from edgekd.latency.calibrate import calibrate_device, fit_profile, latency_section, note_inputs, update_profile_section
    from edgekd.latency.search_space import calibration_specs, student_specs
    from edgekd.data import load_dataset
    from edgekd.deploy.stages import (_params, default_device, distill_student, ensure_teacher, export_for, latency_table,
                                      verify)
    from edgekd.fileio import sha256_file
    from edgekd.latency.model import metric_for, model_key
    from edgekd.latency.features import architecture_features
    from edgekd.latency.drift import adapt, assess, describe, round_drift
    from edgekd.deploy.verdict import REMEASURE_FACTOR, settle
    from edgekd.device.profiles import Profile, device_name, now_iso, profile_path, record_measurements
    from edgekd.runtimes import FORMAT_RUNTIME
    from edgekd.device.targets import load_target

    say: Log = log or (lambda _msg: None)
    start = time.perf_counter()
    tgt = load_target(cfg.target)
    _check(cfg, tgt)
    metric = metric_for(cfg.percentile)
    work = Path(cfg.work_dir)
    ds = load_dataset(cfg.data, image_size=cfg.image_size, seed=cfg.seed, max_len=cfg.max_len, tokenizer=cfg.tokenizer)
    shape, classes = tuple(int(d) for d in ds.input_shape), int(ds.num_classes)
    task = getattr(ds, "task", "image")
    vocab = int(ds.extra["vocab_size"]) if task == "text" else None
    space = student_specs(task, vocab)  # text specs carry vocab=N: their size depends on it
    if task == "text":
        say(f"data {ds.name}: text, {classes} classes, sequence length {shape[0]} (latency is measured at it), "
            f"vocabulary {vocab}; students: {', '.join(sorted({s.split(':')[0] for s in space}))}")
    teacher_path, teacher_host, teacher_spec = ensure_teacher(cfg, ds, say)
    teacher_acc = teacher_host.test
    teacher_sha = sha256_file(teacher_path)

    url = cfg.device if cfg.device is not None else default_device(tgt)
    dev, device_note = None, ""
    if url:
        say(f"device: connecting to {url}")
        try:
            dev = open_device(url, cfg.key)
        except EdgeKDError as err:
            device_note = f"device {url} could not be reached ({err})"
    else:
        device_note = (f"no --device given, and this machine ({platform.machine()}) cannot stand in for a "
                       f"{tgt.name} ({tgt.arch}, {tgt.runtimes[0]})")
    if device_note:
        say(f"device: {device_note}; choosing by prediction, the result will be UNVERIFIED")
    try:
        fingerprint = dev.fingerprint() if dev else {}
        fmt = _choose_format(cfg, tgt, dev.runtimes() if dev else None)
        runtime = FORMAT_RUNTIME[fmt]
        threads = cfg.threads if cfg.threads is not None else tgt.default_threads
        config_key = (runtime, fmt, cfg.precision, int(threads or 0))
        if dev:
            path: Path | None = profile_path(cfg.profile or device_name(fingerprint), cfg.profiles_dir)
        else:
            path = profile_path(cfg.profile, cfg.profiles_dir) if cfg.profile else None
        say(f"target {tgt.name}: {fmt}/{cfg.precision} on {runtime}, threads {threads or 'default'}"
            + (f"; profile {path}" if path else "; no profile: datasheet prior"))
        eval_npz = write_eval_npz(work / f"eval-{ds.fingerprint[:12]}.npz", ds.test.x, ds.test.y, normalized=True)
        data_fp = f"{ds.fingerprint}:test"

        def load_profile() -> Any:
            return Profile.load(path) if path is not None and path.exists() else None

        def remember(m: Any, ckpt: Path, spec: str, result: dict[str, Any]) -> None:
            from edgekd.models import load_model

            assert path is not None
            model, _ = load_model(ckpt)
            entry = {"spec": spec, "input_shape": list(shape), "num_classes": classes,
                     "features": architecture_features(model, shape)}

            def change(prof: Any) -> None:
                sec = latency_section(prof)
                sec["features"][m.model_sha256] = entry
                note_inputs(sec, shape, classes, spec, vocab)
                prof.latency_model = sec
                fit_profile(prof)  # the new point joins the latency model at once

            record_measurements(path, [m], device=fingerprint)
            update_profile_section(path, change)

        def calibrate_on(specs: list[str]) -> None:
            """Measure untrained `specs` on the device into the profile and refit (edgekd.latency.calibrate)."""
            calibrate_device(dev, fingerprint, path, specs=specs, shape=shape, classes=classes, runtimes=[runtime],
                             precisions=[cfg.precision], threads=threads, work_dir=work / "calibrate", seed=cfg.seed,
                             layout=tgt.input_layout,
                             # two interleaved rounds of 0.25 s, the least disturbed kept: as long as one
                             # 0.5 s round, steadier on a shared machine
                             request={"min_s": 0.25, "warmup_s": 0.2, "min_count": 200}, rounds=2,
                             on_progress=lambda label, i, n: say(f"  calibrate {i}/{n} {label}") if i in (1, n) else None)

        # -- the teacher on the same runtime, precision and threads: the reference for budget and speedup
        trust_report_extra: dict[str, Any] = {}
        trust, t_start = None, None  # the drift check (edgekd.latency.drift) and when the teacher was measured
        teacher_fig: dict[str, Any] = {"spec": teacher_spec, "accuracy": teacher_acc, "val_accuracy": teacher_host.val,
                                       "checkpoint": str(teacher_path)}
        if teacher_path.suffix == ".pt":
            t_art = export_for(cfg, teacher_path, work / "artifacts" / f"teacher-{teacher_sha[:12]}", fmt, threads)
            if dev:
                t_start = now_iso()
                # the budget hangs on this figure: timed over several rounds once, then reused (edgekd.deploy.budget)
                t_m = recorded_teacher(load_profile(), teacher_sha, fmt=fmt, precision=cfg.precision, threads=threads,
                                       data_fp=data_fp, metric=metric)
                timing = reused_timing(t_m, metric) if t_m is not None else None
                t_res = None
                if timing is None or not timing.sure:
                    say(f"teacher: measuring {teacher_spec} on the device ({TEACHER_ROUNDS} timed rounds"
                        + ("; the recorded figure was not sure)" if t_m is not None else ")"))
                    t_res, t_m, timing = measure_teacher(dev, t_art, spec=teacher_spec, ckpt=teacher_path,
                                                         eval_npz=eval_npz, data_fp=data_fp, threads=threads,
                                                         min_s=cfg.min_s, metric=metric, previous=t_m)
                if t_res is None:  # a reused figure: the drift check and any transfer start from when it was taken
                    t_start = str(t_m.measured_at)
                # the drift check runs before a new teacher measurement joins any fit: an out-of-sample check
                trust = assess(path, fingerprint, model_key(runtime, cfg.precision, threads, 1, shape), runtime,
                               teacher_features=_features_of(teacher_path, shape), teacher_latency=t_m.latency,
                               metric=metric, profiles_dir=cfg.profiles_dir, tolerance=cfg.drift_tolerance)
                say(describe(trust, metric))
                if t_res is not None:
                    remember(t_m, teacher_path, teacher_spec, t_res)
                teacher_fig.update(source="measured", p50_ms=t_m.latency["p50_ms"], latency_ms=t_m.latency[metric],
                                   device_accuracy=t_m.accuracy, peak_rss_bytes=t_m.peak_rss_bytes,
                                   reused=timing.reused, rounds_ms=timing.rounds_ms, spread=timing.spread,
                                   agree=timing.agree, sure=timing.sure, how_sure=timing.how_sure(metric))
                say(f"teacher: p50 {t_m.latency['p50_ms']:.4g} ms, p{cfg.percentile} {t_m.latency[metric]:.4g} ms, "
                    f"test accuracy {t_m.accuracy:.2%} (measured; {timing.how_sure(metric)})")
        # -- a latency model for this configuration, fitted on the device if there is none yet
        if dev and path is not None:
            prof = load_profile()
            key = model_key(runtime, cfg.precision, threads, 1, shape)
            if trust is None:
                trust = assess(path, fingerprint, key, runtime, teacher_features=None, teacher_latency=None,
                               metric=metric, profiles_dir=cfg.profiles_dir, tolerance=cfg.drift_tolerance)
                say(describe(trust, metric))
            if trust.status in ("drifted", "foreign") and t_start is not None:
                # a prior from another profile meets all of this device's points; one of this profile
                # (drifted, or fitted under another identity) only the points measured from now on
                since = "" if trust.source != str(path) else t_start
                adapted = adapt(path, trust, fingerprint, {"runtime": runtime, "format": fmt, "precision": cfg.precision,
                                                           "threads": int(threads or 0), "batch": 1}, since=since)
                trust.action = f"adapted ({adapted.transfer['method']}) on {adapted.n_samples} device point(s)"
                say(f"latency model: {trust.action}: {adapted.label}")
            elif trust.status == "trusted":
                trust.action = "used as it is"
            if trust.status in ("drifted", "foreign") and t_start is None:
                trust.status = "none"  # nothing measured to adapt on: calibrate instead
            if trust.status == "none":
                say(f"latency model: none for {key} in {path}; calibrating on {cfg.calibrate_count} untrained students")
                calibrate_on(calibration_specs(cfg.calibrate_count, seed=cfg.seed, task=task, input_shape=shape,
                                               num_classes=classes, vocab=vocab))
                trust.action = f"calibrated on {cfg.calibrate_count} untrained students"
        lm_summary = latency_model_summary(load_profile(), model_key(runtime, cfg.precision, threads, 1, shape),
                                           metric)
        say(latency_model_line(lm_summary, metric))
        if "latency_ms" not in teacher_fig and teacher_path.suffix == ".pt":
            from edgekd.models import load_model
            from edgekd.deploy.select import gather_candidates

            # no device: the teacher's latency is a prediction, and says so
            model, _ = load_model(teacher_path)
            cands, models = gather_candidates(load_profile(), input_shape=shape, num_classes=classes, formats=[fmt],
                                              precisions=[cfg.precision], threads=int(threads or 0), target=tgt,
                                              percentile=cfg.percentile, specs=[])
            lat_model = next(iter(models.values()), None)
            if lat_model is not None:
                feats = architecture_features(model, shape)
                teacher_fig.update(source=lat_model.label, latency_ms=lat_model.predict(feats, metric),
                                   p50_ms=lat_model.predict(feats, "p50_ms"))
        budget, budget_source = cfg.budget_ms, "given"
        if budget is None:
            if "latency_ms" not in teacher_fig:
                raise ConfigError("no --budget-ms given and the teacher's latency is unknown (an ONNX teacher is not "
                                  "re-exported); pass --budget-ms")
            budget = teacher_fig["latency_ms"] / cfg.speedup_goal
            budget_source = f"teacher p{cfg.percentile} / {cfg.speedup_goal:g} ({teacher_fig['source']}"
            if "reused" in teacher_fig:
                budget_source += ("; recorded figure reused" if teacher_fig["reused"] else "; timed now")
                budget_source += ", sure" if teacher_fig["sure"] else ", NOT sure: rounds disagree"
            budget_source += ")"
        # the device check: test split on the deployed runtime; the host choice: val split (see the docstring)
        margin = f"{100 * cfg.accuracy_margin:g} pts"
        floor = cfg.min_accuracy if cfg.min_accuracy is not None else teacher_acc - cfg.accuracy_margin
        floor_source = "given" if cfg.min_accuracy is not None else f"teacher test accuracy - {margin}"
        choice_floor = cfg.min_accuracy if cfg.min_accuracy is not None else teacher_host.val - cfg.accuracy_margin
        choice_source = "given" if cfg.min_accuracy is not None else f"teacher val accuracy - {margin}"
        say(f"budget {budget:.4g} ms at p{cfg.percentile} ({budget_source}); accuracy floors: choosing on the host "
            f"VAL split >= {choice_floor:.2%} ({choice_source}), verifying TEST split on the device >= {floor:.2%} "
            f"({floor_source})")
        if dev is not None and path is not None and trust is not None and trust.action.startswith("adapted"):
            from edgekd.latency.drift import settle_transfer

            trust_extra = settle_transfer(
                path, model_key(runtime, cfg.precision, threads, 1, shape), budget=budget, probes=cfg.transfer_probes,
                table=lambda: latency_table(load_profile(), tgt, config_key, shape, classes, cfg.percentile, space),
                params_of=lambda s: _params(s, shape, classes), calibrate_on=calibrate_on, say=say,
                fallback_specs=lambda: calibration_specs(cfg.calibrate_count, seed=cfg.seed, task=task, input_shape=shape,
                                                         num_classes=classes, vocab=vocab))
            if trust_extra.get("fallback"):
                trust.action += f"; leave-one-out error too high: fell back to calibration on {cfg.calibrate_count} students"
            trust_report_extra.update(trust_extra)

        # -- the loop
        checkpoints: dict[str, tuple[Path, Any]] = {}

        def accuracy_of(spec: str) -> float:
            """Host val accuracy: the only figure the choice looks at."""
            if spec not in checkpoints:
                checkpoints[spec] = distill_student(cfg, spec, teacher_path, teacher_sha, ds, say, floor=choice_floor)
            return checkpoints[spec][1].val

        rounds: list[Round] = []
        round_drifts: list[dict[str, Any]] = []
        failure: dict[str, Any] | None = None
        over_budget: set[str] = set()
        under_floor: set[str] = set()
        chosen: Round | None = None
        status, note = "failed", ""
        while True:
            table = latency_table(load_profile(), tgt, config_key, shape, classes, cfg.percentile, space)
            fast = sorted((s for s, (lat, _) in table.items() if lat <= budget and s not in over_budget),
                          key=lambda s: (_params(s, shape, classes), table[s][0]))
            say(f"round {len(rounds) + 1}: {len(fast)} of {len(table)} students predicted within budget; "
                f"distilling each family's frontier to find the smallest whose val accuracy meets {choice_floor:.2%}")
            spec = frontier_search(fast, accuracy_of, choice_floor, params=lambda s: _params(s, shape, classes),
                                   rejected=under_floor).best
            if spec is None:
                failure = failure_report(
                    floor=choice_floor, budget_ms=budget, percentile=cfg.percentile, epochs=cfg.epochs, table=table,
                    accuracies={s: a.val for s, (_, a) in checkpoints.items() if s not in under_floor},
                    within=fast, accuracy_of=accuracy_of, params=lambda s: _params(s, shape, classes),
                    rejected=under_floor, teacher={**teacher_fig, "val_accuracy": teacher_host.val},
                    max_distills=cfg.report_distills)
                note = (f"no student within budget reaches val accuracy {choice_floor:.2%}"
                        + (f" (and on the device test accuracy {floor:.2%})" if under_floor else "")
                        + "\n" + failure_text(failure))
                break
            t0 = time.perf_counter()
            ckpt, host_acc = checkpoints[spec]
            say(f"round {len(rounds) + 1}: chose {spec} on host val accuracy {host_acc.val:.2%} >= {choice_floor:.2%} "
                f"(host test {host_acc.test:.2%}, not used to choose)")
            art = export_for(cfg, ckpt, work / "artifacts" / ckpt.parent.name, fmt, threads)
            lat, source = table[spec]
            r = Round(spec=spec, params=_params(spec, shape, classes), host_val_accuracy=host_acc.val,
                      host_test_accuracy=host_acc.test, predicted_ms=lat,
                      latency_source=source, artifact=str(art))
            rounds.append(r)
            if dev is None:
                r.verdict, status = "unverified", "unverified"
                note = f"chosen by prediction ({source}); {device_note}. Nothing was measured on a device."
                chosen = r
                break
            say(f"round {len(rounds)}: verifying {spec} on the device ({source} p{cfg.percentile} {lat:.4g} ms)")
            result, m = verify(dev, art, spec=spec, ckpt=ckpt, eval_npz=eval_npz, data_fp=data_fp, threads=threads,
                               min_s=cfg.min_s)
            # within the noise band of the budget: measured again (fresh process, longer loop) before deciding
            m.latency, r.budget_verdict = settle(m.latency, budget, metric, lambda: dev.bench(art, {
                "threads": threads, "batch": 1, "warmup_s": 0.5, "min_s": REMEASURE_FACTOR * cfg.min_s,
                "min_count": 600})["latency"] or {})
            if r.budget_verdict["remeasured"]:
                say(f"round {len(rounds)}: p{cfg.percentile} {r.budget_verdict['runs_ms'][0]:.4g} ms is within the noise "
                    f"band of the budget; {r.budget_verdict['explanation']} -> {r.budget_verdict['confidence']}")
            drifted = round_drift(path, model_key(runtime, cfg.precision, threads, 1, shape), lat, m.latency[metric],
                                  cfg.drift_tolerance) if source != "measured" else None
            remember(m, ckpt, spec, result)
            if drifted is not None:  # this device's own model missed by more than the tolerance: adapt it now
                adapted = adapt(path, drifted, fingerprint, {"runtime": runtime, "format": fmt, "precision": cfg.precision,
                                                             "threads": int(threads or 0), "batch": 1},
                                since=t_start or m.measured_at)
                say(f"round {len(rounds)}: drift check: {describe(drifted, metric).split(': ', 1)[1]} "
                    f"({adapted.label})")
                round_drifts.append({"round": len(rounds), **drifted.to_dict()})
            r.measured_ms, r.p50_ms, r.accuracy = m.latency[metric], m.latency["p50_ms"], m.accuracy
            r.prediction_error = lat / r.measured_ms - 1.0
            r.peak_rss_bytes, r.seconds = m.peak_rss_bytes, round(time.perf_counter() - t0, 2)
            if r.measured_ms > budget:
                r.verdict = "over budget"
                over_budget.add(spec)
            elif r.accuracy is None or r.accuracy < floor:
                r.verdict = "under floor"
                under_floor.add(spec)
            else:
                r.verdict, status, chosen = "ok", "verified", r
            say(f"round {len(rounds)}: predicted p{cfg.percentile} {lat:.4g} ms ({source}), measured {r.measured_ms:.4g} ms "
                f"(prediction {r.prediction_error:+.0%}); budget {budget:.4g} ms")
            say(f"round {len(rounds)}: measured p{cfg.percentile} {r.measured_ms:.4g} ms, TEST accuracy on the "
                f"deployed runtime {(r.accuracy or 0):.2%} (floor {floor:.2%}), peak memory "
                f"{(r.peak_rss_bytes or 0) / 2**20:.0f} MiB -> {r.verdict}")
            if chosen is not None:
                note = (f"measured on {url}: p{cfg.percentile} {r.measured_ms:.4g} ms <= {budget:.4g} ms, "
                        f"test accuracy {r.accuracy:.2%} >= {floor:.2%} "
                        f"(chosen on val {r.host_val_accuracy:.2%} >= {choice_floor:.2%})")
                break
            if len(rounds) >= cfg.max_rounds:
                note = f"no verified student after {cfg.max_rounds} device rounds (--max-rounds)"
                break

        report: dict[str, Any] = {
            "status": status, "status_note": note, "target": tgt.name, "device_url": url if dev else None,
            "device": fingerprint or None, "profile": str(path) if path else None, "format": fmt,
            "runtime": runtime, "precision": cfg.precision, "threads": threads, "percentile": cfg.percentile,
            "budget_ms": budget, "budget_source": budget_source, "min_accuracy": floor, "floor_source": floor_source,
            "floor_split": "test (device, deployed runtime)",
            "choice_floor": {"min_accuracy": choice_floor, "source": choice_source, "split": "val (host)"},
            "teacher": teacher_fig, "rounds": [dataclasses.asdict(r) for r in rounds],
            "device_rounds": sum(1 for r in rounds if r.measured_ms is not None),
            "distilled": {s: {"val_acc": a.val, "test_acc": a.test} for s, (_, a) in checkpoints.items()},
            "latency_trust": ({**trust.to_dict(), **trust_report_extra, "round_drifts": round_drifts}
                              if trust is not None else None),
            "drift_detected": bool((trust is not None and trust.drift_detected) or round_drifts),
            "latency_model": lm_summary, "failure": failure,
            "chosen": None, "bundle": None,
        }
        if chosen is not None:
            measured = chosen.measured_ms is not None
            report["chosen"] = {
                "spec": chosen.spec, "params": chosen.params, "checkpoint": str(checkpoints[chosen.spec][0]),
                "artifact": chosen.artifact, "host_val_accuracy": chosen.host_val_accuracy,
                "host_test_accuracy": chosen.host_test_accuracy,
                "measured": {"p50_ms": chosen.p50_ms, f"p{cfg.percentile}_ms": chosen.measured_ms,
                             "accuracy": chosen.accuracy, "peak_rss_bytes": chosen.peak_rss_bytes,
                             "device": url} if measured else None,
                "predicted": {f"p{cfg.percentile}_ms": chosen.predicted_ms, "label": chosen.latency_source},
            }
            if measured and teacher_fig.get("source") == "measured":
                report["speedup_vs_teacher_p50"] = teacher_fig["p50_ms"] / chosen.p50_ms
                report["acc_drop_vs_teacher_pts"] = 100 * ((teacher_fig.get("device_accuracy") or teacher_acc) - chosen.accuracy)
            commands = device_commands(tgt, profile=path.stem if path else None,
                                       data=None if cfg.data == "digits" else cfg.data)
            out = Path(cfg.output or Path("bundles") / tgt.name)
            write_bundle(out, artifact=Path(chosen.artifact), checkpoint=checkpoints[chosen.spec][0], target=tgt,
                         samples=(ds.test.x, ds.test.y), commands=commands, preprocess=preprocessing(ds),
                         info={k: report[k] for k in ("status", "status_note", "budget_ms", "budget_source",
                                                      "percentile", "min_accuracy", "floor_split", "choice_floor",
                                                      "teacher", "rounds", "device")}
                         | {"student": report["chosen"]})
            report["bundle"] = str(out)
            report["verify_commands"] = [c.replace("{bundle}", str(out)) for c in commands]
            if path is not None and measured:
                def mark(prof: Any) -> None:
                    sec = latency_section(prof)
                    sec["deployments"] = (sec["deployments"] + [{
                        "spec": chosen.spec, "model_sha256": sha256_file(checkpoints[chosen.spec][0]),
                        "budget_ms": budget, "percentile": cfg.percentile, "min_accuracy": floor,
                        "format": fmt, "precision": cfg.precision, "threads": int(threads or 0),
                        "dataset_fingerprint": data_fp, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }])[-20:]
                    prof.latency_model = sec

                update_profile_section(path, mark)
        report["wall_s"] = round(time.perf_counter() - start, 1)
        return report
    finally:
        if dev is not None:
            dev.close()
