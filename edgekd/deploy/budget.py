"""The default latency budget of `edgekd deploy`: the teacher's latency on the device / speed-up goal,
measured so that it does not move between runs.

One timed loop of the teacher on a shared machine moves by 10-40 % from run to run (measured: p90
0.119, 0.145, 0.105 ms on three consecutive deploys), and the budget decides which students are
candidates at all. So:

  * the teacher is timed in `rounds` separate timed loops and the least disturbed round (lowest
    value at the budget's percentile) is kept, as `edgekd profile calibrate` keeps the lowest-p50
    round of each student: on a shared machine a
    neighbour slows whole stretches of seconds (measured here: p90 0.47, 2.83, 13.75 ms in three
    rounds of one teacher), which a median of three does not reject;
  * the figure is *sure* when the two least disturbed rounds agree within `AGREE` (15 %) at the
    percentile used; that agreement and the spread of all rounds are printed and stored with it;
  * every later deploy of the *same teacher artifact* (checkpoint sha256, format, precision, threads,
    batch 1) on the *same device profile* and data reuses a sure recorded figure instead of timing
    again, so the budget is the same run after run. An unsure one is timed again, the earlier kept
    round competing with the new rounds, until two agree. A different teacher, runtime, precision,
    thread count or dataset is measured afresh.

Host side; the measurement runs through the device (agent) like every other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUNDS = 3
AGREE = 0.15  # the two least disturbed rounds within 15 % of each other: the figure is sure


@dataclass
class TeacherTiming:
    """The teacher's figures on the device: a Measurement (the least disturbed round), the per-round
    values of the budget's percentile, whether it was reused from the profile, and how sure it is."""

    measurement: Any
    rounds_ms: list[float]
    reused: bool
    spread: float | None  # max/min - 1 over all rounds at the percentile used; None when unknown
    agree: float | None  # second-least / least disturbed round - 1 at the percentile; None: one round
    n_rounds: int = 1

    @property
    def sure(self) -> bool:
        return self.agree is not None and self.agree <= AGREE

    def how_sure(self, metric: str) -> str:
        """One line saying where the figure came from and how much it moved."""
        label = metric.replace("_ms", "")
        agree = (f"its two least disturbed rounds agree within {self.agree:.0%}" if self.agree is not None
                 else "one round only")
        if self.reused:
            return (f"recorded {self.measurement.measured_at} for this teacher artifact on this device, {agree}; "
                    "reused, so the budget is the same every run (pass --budget-ms to set another)")
        rounds = ", ".join(f"{v:.4g}" for v in self.rounds_ms)
        verdict = "sure" if self.sure else f"NOT sure (> {AGREE:.0%}): timed again next deploy"
        return (f"least disturbed of {len(self.rounds_ms)} timed rounds ({label} {rounds} ms); {agree}: {verdict}")


def recorded_teacher(profile: Any, teacher_sha: str, *, fmt: str, precision: str, threads: int | None,
                     data_fp: str, metric: str, shape: Any = None) -> Any | None:
    """The teacher's measurement already in `profile` for this artifact configuration and data, or None."""
    from edgekd.latency.recipe import is_current

    if profile is None:
        return None
    for m in profile.measurements.values():
        if (m.model_sha256 == teacher_sha and m.format == fmt and m.precision == precision
                and int(m.threads or 0) == int(threads or 0) and int(m.batch) == 1
                and m.latency and m.latency.get(metric) and m.dataset_fingerprint == data_fp
                and m.accuracy is not None and is_current(m, profile.device, shape=shape)):
            return m
    return None


def measure_teacher(dev: Any, art: Path, *, spec: str, ckpt: Path, eval_npz: Path, data_fp: str,
                    threads: int | None, min_s: float, metric: str, rounds: int = ROUNDS,
                    previous: Any | None = None) -> tuple[dict[str, Any], Any, TeacherTiming]:
    """Time the teacher artifact in `rounds` separate timed loops (each `min_s` long) and measure its
    accuracy once; the Measurement holds the latency figures of the least disturbed round (lowest
    at `metric`) — `previous` (an unsure recorded measurement) competes as one more round — plus `rounds`,
    `spread_<metric>` and `agree_<metric>` so a later deploy knows how sure the figure is."""
    from edgekd.deploy.stages import verify

    result, m = verify(dev, art, spec=spec, ckpt=ckpt, eval_npz=eval_npz, data_fp=data_fp, threads=threads,
                       min_s=min_s)
    fields = set(m.latency or {})
    lats = [dict(m.latency or {})]
    for _ in range(max(0, rounds - 1)):
        extra = dev.bench(art, {"threads": threads, "batch": 1, "warmup_s": 0.5, "min_s": min_s, "min_count": 200})
        lats.append(dict(extra.get("latency") or {}))
    if previous is not None and previous.latency:
        lats.append({k: v for k, v in previous.latency.items() if k in fields})
    # least disturbed at the percentile the budget is set at (a round can be quiet at p50, busy at p90)
    timed = sorted((d for d in lats if d.get("p50_ms") and d.get(metric)), key=lambda d: (float(d[metric]), float(d["p50_ms"])))
    kept = timed[0] if timed else lats[0]
    merged = {k: float(v) for k, v in kept.items() if k in fields and isinstance(v, (int, float))}
    per_round = [float(d[metric]) for d in lats if d.get(metric)]
    spread = (max(per_round) / min(per_round) - 1.0) if per_round and min(per_round) > 0 else None
    agree = abs(float(timed[1][metric]) / float(timed[0][metric]) - 1.0) if len(timed) > 1 else None
    merged["rounds"] = float(len(per_round))
    if spread is not None:
        merged[f"spread_{metric}"] = float(f"{spread:.4g}")
    if agree is not None:
        merged[f"agree_{metric}"] = float(f"{agree:.4g}")
    m.latency = merged
    result = dict(result, latency={**(result.get("latency") or {}), **merged})
    return result, m, TeacherTiming(m, per_round, reused=False, spread=spread, agree=agree, n_rounds=len(per_round))


def reused_timing(m: Any, metric: str) -> TeacherTiming:
    """A TeacherTiming for a measurement read back from the profile (`.sure` says whether to reuse it)."""
    lat = m.latency or {}
    spread, agree = lat.get(f"spread_{metric}"), lat.get(f"agree_{metric}")
    return TeacherTiming(m, [], reused=True, spread=float(spread) if spread is not None else None,
                         agree=float(agree) if agree is not None else None, n_rounds=int(lat.get("rounds") or 1))


@dataclass(frozen=True)
class Goal:
    """What a verified student must meet, and where each figure came from. Two splits on purpose:
    every choice uses `choice_floor` on the host's VAL split; the device verification checks TEST
    accuracy on the deployed runtime against `floor` (see `edgekd.deploy.loop`)."""

    budget_ms: float
    budget_source: str
    floor: float
    floor_source: str
    choice_floor: float
    choice_source: str

    def line(self, percentile: int) -> str:
        return (f"budget {self.budget_ms:.4g} ms at p{percentile} ({self.budget_source}); accuracy floors: choosing "
                f"on the host VAL split >= {self.choice_floor:.2%} ({self.choice_source}), verifying TEST split on "
                f"the device >= {self.floor:.2%} ({self.floor_source})")


def set_goal(cfg: Any, teacher_fig: dict[str, Any], teacher_val: float, teacher_test: float) -> Goal:
    """`--budget-ms`, else the teacher's latency at the percentile / `speedup_goal` (measured or, without
    a device, predicted: the source says which and how sure); `--min-accuracy`, else the teacher's
    accuracy - `accuracy_margin` (val to choose, test on the device)."""
    from edgekd.errors import ConfigError

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
    margin = f"{100 * cfg.accuracy_margin:g} pts"
    given = cfg.min_accuracy is not None
    return Goal(budget_ms=budget, budget_source=budget_source,
                floor=cfg.min_accuracy if given else teacher_test - cfg.accuracy_margin,
                floor_source="given" if given else f"teacher test accuracy - {margin}",
                choice_floor=cfg.min_accuracy if given else teacher_val - cfg.accuracy_margin,
                choice_source="given" if given else f"teacher val accuracy - {margin}")
