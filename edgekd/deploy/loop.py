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

import time
from typing import Any, Callable

from edgekd.deploy.config import DeployConfig, Round  # noqa: F401  (the loop's public types)

Log = Callable[[str], None]


def run_deploy(cfg: DeployConfig, log: Log | None = None) -> dict[str, Any]:
    """Run the loop and write the bundle; returns the report (see the module docstring)."""
    from edgekd.deploy.budget import set_goal
    from edgekd.deploy.joint import RULE, ensure_config_models, int8_record
    from edgekd.deploy.report import latency_model_line, latency_model_summary
    from edgekd.deploy.rounds import run_rounds
    from edgekd.deploy.session import open_session
    from edgekd.deploy.ship import build_report, ship
    from edgekd.deploy.trust import ensure_latency_model, settle_transfer, teacher_on_device, teacher_predicted

    start = time.perf_counter()
    s = open_session(cfg, log or (lambda _msg: None))
    try:
        check = teacher_on_device(s)        # the reference, and the drift check's first point
        ensure_latency_model(s, check)      # adapt / keep / calibrate
        latency_model = latency_model_summary(s.load_profile(), s.model_key, s.metric)
        s.say(latency_model_line(latency_model, s.metric))
        teacher_predicted(s, check)         # no device: the teacher's latency is a prediction
        goal = set_goal(cfg, check.fig, teacher_val=s.teacher_host.val, teacher_test=s.teacher_host.test)
        s.say(goal.line(cfg.percentile))
        settle_transfer(s, check, goal.budget_ms)
        joint_models = ensure_config_models(s, goal.budget_ms)  # joint: a checked model for every other configuration
        for key in joint_models:
            joint_models[key]["latency_model"] = latency_model_summary(s.load_profile(), key, s.metric)
            s.say(latency_model_line(joint_models[key]["latency_model"], s.metric))
        outcome = run_rounds(s, goal, check.fig, since=check.since)
        # the report, the bundle and the profile's record speak of the chosen configuration
        s.use((outcome.chosen.format, outcome.chosen.precision) if outcome.chosen else s.configs[0])
        report = build_report(s, check, goal, outcome, latency_model)
        report["joint"] = ({"configurations": [{"format": f, "precision": p} for f, p in s.configs],
                            "rule": RULE, "reference": {"format": s.configs[0][0], "precision": s.configs[0][1],
                                                        "latency_model": latency_model},
                            "latency_models": joint_models,
                            # the chosen INT8 artifact's quantizer settings (ONNX Runtime's follow the ISA)
                            "int8_settings": int8_record(outcome.chosen.artifact if outcome.chosen else None)}
                           if s.joint else None)
        report["candidates"] = outcome.choices  # per round, each configuration's winner and why it won or lost
        ship(s, report, outcome, goal)
        if s.joint:
            from edgekd.deploy.joint_plot import has_candidates, plot_joint

            # nothing to draw when no configuration had a student within budget meeting the floor:
            # the deploy then ends `failed` with its report, not on the plot's error
            if has_candidates(report):
                report["joint"]["plot"] = str(plot_joint(report, s.work / "joint-candidates.png"))
        report["wall_s"] = round(time.perf_counter() - start, 1)
        return report
    finally:
        s.close()
