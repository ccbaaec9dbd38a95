"""The end of a deploy: the JSON report (`build_report`), and for a chosen student the bundle and the
profile's record of what was deployed there (`ship`). Host side."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from edgekd.deploy.budget import Goal
from edgekd.deploy.rounds import Outcome
from edgekd.deploy.session import Session
from edgekd.deploy.trust import TeacherCheck


def build_report(s: Session, check: TeacherCheck, goal: Goal, outcome: Outcome,
                 latency_model: dict[str, Any] | None) -> dict[str, Any]:
    """Every figure of the run, each with where it came from (keys documented in docs/ARCHITECTURE.md)."""
    cfg, trust = s.cfg, check.trust
    report: dict[str, Any] = {
        "status": outcome.status, "status_note": outcome.note, "target": s.tgt.name,
        "device_url": s.url if s.dev else None, "device": s.fingerprint or None,
        "profile": str(s.path) if s.path else None, "format": s.fmt, "runtime": s.runtime,
        "precision": s.precision, "threads": s.threads, "percentile": cfg.percentile,
        "budget_ms": goal.budget_ms, "budget_source": goal.budget_source, "min_accuracy": goal.floor,
        "floor_source": goal.floor_source, "floor_split": "test (device, deployed runtime)",
        "choice_floor": {"min_accuracy": goal.choice_floor, "source": goal.choice_source, "split": "val (host)"},
        "teacher": check.fig, "rounds": [dataclasses.asdict(r) for r in outcome.rounds],
        "device_rounds": sum(1 for r in outcome.rounds if r.measured_ms is not None),
        "distilled": {spec: {"val_acc": a.val, "test_acc": a.test} for spec, (_, a) in outcome.checkpoints.items()},
        "latency_trust": ({**trust.to_dict(), **check.extra, "round_drifts": outcome.round_drifts}
                          if trust is not None else None),
        "drift_detected": bool((trust is not None and trust.drift_detected) or outcome.round_drifts),
        "latency_model": latency_model, "failure": outcome.failure,
        "chosen": None, "bundle": None,
    }
    chosen = outcome.chosen
    if chosen is None:
        return report
    measured = chosen.measured_ms is not None
    report["chosen"] = {
        "spec": chosen.spec, "params": chosen.params, "checkpoint": str(outcome.checkpoints[chosen.spec][0]),
        "artifact": chosen.artifact, "host_val_accuracy": chosen.host_val_accuracy,
        "host_test_accuracy": chosen.host_test_accuracy,
        "measured": {"p50_ms": chosen.p50_ms, f"p{cfg.percentile}_ms": chosen.measured_ms,
                     "accuracy": chosen.accuracy, "peak_rss_bytes": chosen.peak_rss_bytes,
                     "device": s.url} if measured else None,
        "predicted": {f"p{cfg.percentile}_ms": chosen.predicted_ms, "label": chosen.latency_source},
    }
    if measured and check.fig.get("source") == "measured":
        report["speedup_vs_teacher_p50"] = check.fig["p50_ms"] / chosen.p50_ms
        report["acc_drop_vs_teacher_pts"] = 100 * ((check.fig.get("device_accuracy") or s.teacher_host.test)
                                                   - chosen.accuracy)
    return report


def ship(s: Session, report: dict[str, Any], outcome: Outcome, goal: Goal) -> None:
    """Write the bundle of the chosen student (and its verify commands into the report); record a
    measured deployment in the profile's latency section (the last 20 are kept)."""
    from edgekd.deploy.bundle import device_commands, preprocessing, write_bundle
    from edgekd.fileio import sha256_file
    from edgekd.latency.section import latency_section, update_profile_section

    chosen, cfg = outcome.chosen, s.cfg
    if chosen is None:
        return
    ckpt = outcome.checkpoints[chosen.spec][0]
    commands = device_commands(s.tgt, profile=s.path.stem if s.path else None,
                               data=None if cfg.data == "digits" else cfg.data)
    out = Path(cfg.output or Path("bundles") / s.tgt.name)
    write_bundle(out, artifact=Path(chosen.artifact), checkpoint=ckpt, target=s.tgt,
                 samples=(s.test_x(chosen.spec, 16), s.ds.test.y[:16]), commands=commands, preprocess=preprocessing(s.ds),
                 info={k: report[k] for k in ("status", "status_note", "budget_ms", "budget_source",
                                              "percentile", "min_accuracy", "floor_split", "choice_floor",
                                              "teacher", "rounds", "device")}
                 | {"student": report["chosen"]})
    report["bundle"] = str(out)
    report["verify_commands"] = [c.replace("{bundle}", str(out)) for c in commands]
    if s.path is None or chosen.measured_ms is None:
        return

    def mark(prof: Any) -> None:
        sec = latency_section(prof)
        sec["deployments"] = (sec["deployments"] + [{
            "spec": chosen.spec, "model_sha256": sha256_file(ckpt),
            "budget_ms": goal.budget_ms, "percentile": cfg.percentile, "min_accuracy": goal.floor,
            "format": s.fmt, "precision": s.precision, "threads": int(s.threads or 0),
            "dataset_fingerprint": s.data_fp, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }])[-20:]
        prof.latency_model = sec

    update_profile_section(s.path, mark)
