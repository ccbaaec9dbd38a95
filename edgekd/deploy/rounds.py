"""The device rounds: choose the smallest student predicted within budget whose host val accuracy meets
the floor (`edgekd.deploy.choice.frontier_search`), export it, verify it on the device, learn from
the measurement, repeat — at most `max_rounds` device rounds.

A round's measurement joins the profile and the latency model at once (`Session.remember`), and a
miss beyond the drift tolerance adapts the model (`edgekd.latency.drift.round_drift`), so the next
prediction moves as much as the evidence says. A verdict within the noise band of the budget, or
over a budget the model predicted the student within, is measured again before it counts
(`edgekd.deploy.verdict.settle`). Host side."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.deploy.budget import Goal
from edgekd.deploy.config import Round
from edgekd.deploy.session import Session


@dataclass
class Outcome:
    """What the rounds found: every round, the distilled students (spec -> (checkpoint, HostAccuracy)),
    the verified one (`chosen`, or the predicted one without a device), and why the loop stopped."""

    status: str = "failed"  # verified / unverified / failed
    note: str = ""
    rounds: list[Round] = field(default_factory=list)
    round_drifts: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[str, tuple[Path, Any]] = field(default_factory=dict)
    choices: list[list[dict[str, Any]]] = field(default_factory=list)  # per round: each configuration's view
    # (spec, format, precision) -> val accuracy of that INT8/fp16 export on the host runtime (joint choice)
    reduced_val: dict[tuple[str, str, str], float] = field(default_factory=dict)
    chosen: Round | None = None
    failure: dict[str, Any] | None = None


MAX_MARGIN = 0.5


def choice_margin(rounds: list[Round]) -> float:
    """How far under the budget the next student should be predicted: the largest under-prediction the
    device has shown in this deploy's rounds (measured / predicted - 1), at most MAX_MARGIN; 0 before
    the first round. A round's miss adapts the model, but what is left of the model's error near the
    budget is about as large as the miss (measured on a 2-vCPU VM: -22 % in round 1, then -9 % and
    -28 % after adapting), and choosing the student closest to the budget turns that error into one
    lost round after another."""
    misses = [r.measured_ms / r.predicted_ms - 1.0 for r in rounds
              if r.measured_ms and r.predicted_ms and r.latency_source != "measured"]
    return min(MAX_MARGIN, max([0.0, *misses]))


def run_rounds(s: Session, goal: Goal, teacher_fig: dict[str, Any], since: str | None) -> Outcome:
    """Rounds until a student is verified, nothing is left to try, or `max_rounds` is reached.
    `teacher_fig` goes into the failure report; `since`: when this device's new points began."""
    from edgekd.deploy.joint import pick_round
    from edgekd.deploy.report import failure_report, failure_text
    from edgekd.deploy.stages import distill_student
    from edgekd.errors import ExportError

    cfg, out = s.cfg, Outcome()
    over_budget: set[tuple[str, str, str]] = set()  # (spec, format, precision) measured over budget
    refused: dict[tuple[str, str, str], str] = {}  # (spec, format, precision) whose export gate failed
    under_floor: dict[str, set[str]] = {}  # precision -> specs under the floor on the device
    reduced_under_floor: dict[tuple[str, str], set[str]] = {}  # (format, precision) -> artifact under floor on host

    def accuracy_of(spec: str) -> float:
        """Host val accuracy: the only figure the choice looks at."""
        if spec not in out.checkpoints:
            out.checkpoints[spec] = distill_student(cfg, spec, s.teacher_path, s.teacher_sha, s.ds, s.say,
                                                    floor=goal.choice_floor)
        return out.checkpoints[spec][1].val

    def reduced_accuracy_of(spec: str) -> float:
        """Host val accuracy of `spec` exported in the current (INT8/fp16) configuration, through its
        gate (ExportError when refused); the round that verifies it reuses the export."""
        from edgekd.runtimes.parity import artifact_accuracy

        key = (spec, s.fmt, s.precision)
        if key not in out.reduced_val:
            art = _export_current(s, out.checkpoints[spec][0])
            out.reduced_val[key] = artifact_accuracy(art, s.val_x(spec), s.ds.val.y, threads=s.threads)
        return out.reduced_val[key]

    while True:
        config, spec, predicted, views = pick_round(s, goal.choice_floor, goal.budget_ms, accuracy_of,
                                                    margin=choice_margin(out.rounds),
                                                    reduced_accuracy_of=reduced_accuracy_of,
                                                    reduced_under_floor=reduced_under_floor,
                                                    over_budget=over_budget, refused=refused,
                                                    under_floor=under_floor, round_no=len(out.rounds) + 1)
        out.choices.append([v.to_dict() for v in views])
        if spec is None:
            table = s.latency_table()  # the reference configuration's
            gone = {sp for sp, f, p in (*over_budget, *refused) if (f, p) == s.configs[0]}
            fast = [sp for sp, (lat, _) in table.items() if lat <= goal.budget_ms and sp not in gone]
            rejected = under_floor.get(s.precision, set())
            out.failure = failure_report(
                floor=goal.choice_floor, budget_ms=goal.budget_ms, percentile=cfg.percentile, epochs=cfg.epochs,
                table=table, accuracies={k: a.val for k, (_, a) in out.checkpoints.items() if k not in rejected},
                within=fast, accuracy_of=accuracy_of, params=s.params, rejected=rejected,
                teacher={**teacher_fig, "val_accuracy": s.teacher_host.val}, max_distills=cfg.report_distills)
            missed = sorted({sp for specs in under_floor.values() for sp in specs})
            out.note = ((f"no student within budget reaches both val accuracy {goal.choice_floor:.2%} and, on the device, "
                         f"test accuracy {goal.floor:.2%}" if missed else
                         f"no student within budget reaches val accuracy {goal.choice_floor:.2%}")
                        + (f" in any of the {len(s.configs)} configurations" if s.joint else "")
                        + (f" ({', '.join(missed[:3])}{' ...' if len(missed) > 3 else ''} reached val but missed on "
                           "the device)" if missed else "")
                        + "\n" + failure_text(out.failure))
            return out
        try:
            r = _verify_round(s, goal, spec, predicted, out, since)
        except ExportError as err:
            if s.precision == "fp32" or not s.joint:
                raise
            # an INT8 (fp16) export that fails its accuracy gate on the host runtime: that student in
            # that configuration is out, and no device round was spent on it
            refused[(spec, *config)] = str(err)
            s.say(f"round {len(out.rounds) + 1}: {spec} on {s.runtime}/{s.precision} refused by the export gate "
                  f"({err}); choosing again")
            continue
        if r.verdict == "over budget":
            over_budget.add((spec, *config))
        elif r.verdict == "under floor":
            under_floor.setdefault(s.precision, set()).add(spec)
        elif r.verdict == "ok":
            out.status, out.chosen = "verified", r
            out.note = (f"measured on {s.url}: p{cfg.percentile} {r.measured_ms:.4g} ms <= {goal.budget_ms:.4g} ms, "
                        f"test accuracy {r.accuracy:.2%} >= {goal.floor:.2%} "
                        f"(chosen on val {r.host_val_accuracy:.2%} >= {goal.choice_floor:.2%})"
                        + (f", {r.runtime}/{r.precision}" if s.joint else ""))
            return out
        else:  # no device: the prediction is the answer, and says so
            out.status, out.chosen = "unverified", r
            out.note = (f"chosen by prediction ({r.latency_source}); {s.device_note}. Nothing was measured on a "
                        "device.")
            return out
        if len(out.rounds) >= cfg.max_rounds:
            out.note = f"no verified student after {cfg.max_rounds} device rounds (--max-rounds)"
            return out


def _export_current(s: Session, ckpt: Path) -> Path:
    """`ckpt` exported in the current configuration under the deploy's work dir, through its gate
    (ExportError when refused); one place, so the choice's INT8 export is the one its round reuses."""
    from edgekd.deploy.stages import export_for

    return export_for(s.cfg, ckpt, s.work / "artifacts" / ckpt.parent.name, s.fmt, s.threads, s.precision,
                      device_identity=s.fingerprint or None)


def _verify_round(s: Session, goal: Goal, spec: str, predicted: tuple[float, str], out: Outcome,
                  since: str | None) -> Round:
    """Export `spec`, measure it on the device (again if the verdict is within noise of the budget),
    record the point and learn from the miss; returns the round with its verdict."""
    from edgekd.deploy.stages import verify
    from edgekd.deploy.verdict import REMEASURE_FACTOR, settle
    from edgekd.latency.drift import adapt, describe, round_drift

    cfg, metric, n = s.cfg, s.metric, len(out.rounds) + 1
    t0 = time.perf_counter()
    ckpt, host_acc = out.checkpoints[spec]
    val = out.reduced_val.get((spec, s.fmt, s.precision), host_acc.val)  # an INT8 export's own, when measured
    s.say(f"round {n}: chose {spec} on host val accuracy {val:.2%} >= {goal.choice_floor:.2%} "
          f"(host test {host_acc.test:.2%}, not used to choose)")
    art = _export_current(s, ckpt)
    lat, source = predicted
    r = Round(spec=spec, params=s.params(spec), host_val_accuracy=val, host_test_accuracy=host_acc.test,
              predicted_ms=lat, latency_source=source, artifact=str(art), format=s.fmt, runtime=s.runtime,
              precision=s.precision)
    out.rounds.append(r)
    if s.dev is None:
        r.verdict = "unverified"
        return r
    s.say(f"round {n}: verifying {spec} on the device as {s.runtime}/{s.precision} ({source} p{cfg.percentile} "
          f"{lat:.4g} ms)")
    eval_npz, data_fp = s.eval_for(spec)  # a student at its own resolution is tested at it
    _, m = verify(s.dev, art, spec=spec, ckpt=ckpt, eval_npz=eval_npz, data_fp=data_fp, threads=s.threads,
                  min_s=cfg.min_s)
    # within the noise band of the budget: measured again (fresh process, longer loop) before deciding
    # or over a budget the model predicted it within (one run in a slow stretch must not reject it)
    m.latency, r.budget_verdict = settle(m.latency, goal.budget_ms, metric, lambda: s.dev.bench(art, {
        "threads": s.threads, "batch": 1, "warmup_s": 0.5, "min_s": REMEASURE_FACTOR * cfg.min_s,
        "min_count": 600})["latency"] or {}, predicted=lat)
    if r.budget_verdict["remeasured"]:
        s.say(f"round {n}: p{cfg.percentile} {r.budget_verdict['runs_ms'][0]:.4g} ms, "
              f"{r.budget_verdict['remeasured_because']}; {r.budget_verdict['explanation']} "
              f"-> {r.budget_verdict['confidence']}")
    drifted = (round_drift(s.path, s.model_key, lat, m.latency[metric], cfg.drift_tolerance)
               if source != "measured" else None)
    s.remember(m, ckpt, spec)
    if drifted is not None:  # this device's own model missed by more than the tolerance: adapt it now
        adapted = adapt(s.path, drifted, s.fingerprint, s.measurement_meta, since=since or m.measured_at)
        s.say(f"round {n}: drift check: {describe(drifted, metric, spec).split(': ', 1)[1]} ({adapted.label})")
        out.round_drifts.append({"round": n, **drifted.to_dict()})
    r.measured_ms, r.p50_ms, r.accuracy = m.latency[metric], m.latency["p50_ms"], m.accuracy
    r.prediction_error = lat / r.measured_ms - 1.0
    r.peak_rss_bytes, r.seconds = m.peak_rss_bytes, round(time.perf_counter() - t0, 2)
    if r.measured_ms > goal.budget_ms:
        r.verdict = "over budget"
    elif r.accuracy is None or r.accuracy < goal.floor:
        r.verdict = "under floor"
    else:
        r.verdict = "ok"
    s.say(f"round {n}: predicted p{cfg.percentile} {lat:.4g} ms ({source}), measured {r.measured_ms:.4g} ms "
          f"(prediction {r.prediction_error:+.0%}); budget {goal.budget_ms:.4g} ms")
    s.say(f"round {n}: measured p{cfg.percentile} {r.measured_ms:.4g} ms, TEST accuracy on the deployed runtime "
          f"{(r.accuracy or 0):.2%} (floor {goal.floor:.2%}), peak memory {(r.peak_rss_bytes or 0) / 2**20:.0f} MiB "
          f"-> {r.verdict}")
    return r
