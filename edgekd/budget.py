"""The default latency budget of `edgekd deploy`: the teacher's latency on the device / speed-up goal,
measured so that it does not move between runs.

One timed loop of the teacher on a shared machine moves by 10-40 % from run to run (measured: p90
0.119, 0.145, 0.105 ms on three consecutive deploys), and the budget decides which students are
candidates at all. So:

  * the first time, the teacher is timed in `rounds` separate timed loops and the median of each
    latency figure across the rounds is kept; the spread of the rounds (max/min - 1 of the percentile
    used) is printed and stored with it, as how sure the figure is;
  * every later deploy of the *same teacher artifact* (checkpoint sha256, format, precision, threads,
    batch 1) on the *same device profile* and data reuses that recorded figure instead of timing again.
    A different teacher, runtime, precision, thread count or dataset is measured afresh.

Host side; the measurement runs through the device (agent) like every other.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROUNDS = 3


@dataclass
class TeacherTiming:
    """The teacher's figures on the device: a Measurement (medians over rounds), the per-round values
    of the budget's percentile, and whether it was reused from the profile."""

    measurement: Any
    rounds_ms: list[float]
    reused: bool
    spread: float | None  # max/min - 1 over the rounds of the percentile used; None when unknown
    n_rounds: int = 1

    def how_sure(self, metric: str) -> str:
        """One line saying where the figure came from and how much it moved."""
        m = self.measurement
        if self.reused:
            spread = f", spread {self.spread:.0%} over its {self.n_rounds} rounds" if self.spread is not None else ""
            return (f"recorded in the profile {m.measured_at} for this teacher artifact on this device{spread}; "
                    "reused, so the budget is the same every run (pass --budget-ms to set another)")
        rounds = ", ".join(f"{v:.4g}" for v in self.rounds_ms)
        return (f"median of {len(self.rounds_ms)} timed rounds ({metric.replace('_ms', '')} {rounds} ms, "
                f"spread {self.spread:.0%}); recorded for later deploys")


def recorded_teacher(profile: Any, teacher_sha: str, *, fmt: str, precision: str, threads: int | None,
                     data_fp: str, metric: str) -> Any | None:
    """The teacher's measurement already in `profile` for this artifact configuration and data, or None."""
    if profile is None:
        return None
    for m in profile.measurements.values():
        if (m.model_sha256 == teacher_sha and m.format == fmt and m.precision == precision
                and int(m.threads or 0) == int(threads or 0) and int(m.batch) == 1
                and m.latency and m.latency.get(metric) and m.dataset_fingerprint == data_fp
                and m.accuracy is not None):
            return m
    return None


def measure_teacher(dev: Any, art: Path, *, spec: str, ckpt: Path, eval_npz: Path, data_fp: str,
                    threads: int | None, min_s: float, metric: str, rounds: int = ROUNDS) -> tuple[dict[str, Any], Any, TeacherTiming]:
    """Time the teacher artifact in `rounds` separate timed loops (each `min_s` long) and measure its
    accuracy once; the Measurement holds the median of every latency figure across the rounds, plus
    `rounds` and `spread_<metric>` so a later deploy can say how sure the reused figure is."""
    from edgekd.deploy_stages import verify

    result, m = verify(dev, art, spec=spec, ckpt=ckpt, eval_npz=eval_npz, data_fp=data_fp, threads=threads,
                       min_s=min_s)
    lats = [dict(m.latency or {})]
    for _ in range(max(0, rounds - 1)):
        extra = dev.bench(art, {"threads": threads, "batch": 1, "warmup_s": 0.5, "min_s": min_s, "min_count": 200})
        lats.append(dict(extra.get("latency") or {}))
    merged: dict[str, float] = {}
    for k, v in (m.latency or {}).items():
        values = [float(d[k]) for d in lats if isinstance(d.get(k), (int, float))]
        merged[k] = float(statistics.median(values)) if values else v
    per_round = [float(d[metric]) for d in lats if d.get(metric)]
    spread = (max(per_round) / min(per_round) - 1.0) if per_round and min(per_round) > 0 else None
    merged["rounds"] = float(len(per_round))
    if spread is not None:
        merged[f"spread_{metric}"] = float(f"{spread:.4g}")
    m.latency = merged
    result = dict(result, latency={**(result.get("latency") or {}), **merged})
    return result, m, TeacherTiming(m, per_round, reused=False, spread=spread, n_rounds=len(per_round))


def reused_timing(m: Any, metric: str) -> TeacherTiming:
    """A TeacherTiming for a measurement read back from the profile."""
    lat = m.latency or {}
    spread = lat.get(f"spread_{metric}")
    return TeacherTiming(m, [], reused=True, spread=float(spread) if spread is not None else None,
                         n_rounds=int(lat.get("rounds") or 1))
