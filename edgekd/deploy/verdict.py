"""An honest verdict at the budget's edge: measure again before deciding, and say how sure.

A student measured within `EDGE_BAND` under the budget or `OVER_BAND` over it is inside the
run-to-run noise of one measurement on a shared CPU: the first figure alone cannot say which side it
is on. The band is wider over the budget because interference only slows, and because the budget
itself is the teacher's least-disturbed of 3 timed rounds (`deploy.budget`): a student judged on one
fresh process against it is judged on worse terms. Measured on a 2-vCPU VM, quiet: the p90 of one
13 µs student in 4 fresh processes 0.015, 0.015, 0.015, 0.033 ms; one such process put README command
1's chosen student 25 % over a 0.0287 ms budget it meets in the other three. So it is
measured again in a fresh runner process with a timed loop `REMEASURE_FACTOR` times longer, the
least-disturbed run decides (interference only ever slows, as in calibration), and the verdict says
whether the runs agree. A student the latency model predicted within the budget and the device
measured over it, however far over, is measured again the same way: the two disagree, and one run of
a slow stretch of a shared VM (1.3-1.9x for tens of seconds on the Xeon VM, session 17) must not
reject it (session 18: a student whose calm calibration round measured p90 0.0355 ms, predicted within a
0.0399 ms budget, measured 0.0662 ms in one verification run, 66 % over and so outside `OVER_BAND`, and
cost a round). Each run also reports how many iterations its percentile rests on and the
95 % band of ranks the percentile's true value lies in (order statistics of a binomial, the idea
behind MLPerf's early-stopping rule: enough samples above the percentile for it to mean something).
Host side, numpy-free.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

EDGE_BAND = 0.10
OVER_BAND = 0.50
REMEASURE_FACTOR = 3.0


def rank_band(count: int, quantile: float, z: float = 1.96) -> tuple[int, int]:
    """95 % band of the ranks (1..count) between which the true `quantile` of the timing distribution
    lies, given `count` iterations (normal approximation of the binomial)."""
    mid = count * quantile
    half = z * math.sqrt(max(count * quantile * (1 - quantile), 0.0))
    return max(1, int(math.floor(mid - half))), min(count, int(math.ceil(mid + half)))


def near_edge(measured: float, budget: float, band: float = EDGE_BAND, over_band: float = OVER_BAND) -> bool:
    """True when `measured` is within `band` under the budget or `over_band` over it."""
    return -band <= measured / budget - 1.0 <= over_band


def contradicts(measured: float, budget: float, predicted: float | None) -> bool:
    """True when the model predicted the student within the budget and the device measured it over."""
    return predicted is not None and predicted <= budget < measured


def settle(first: Mapping[str, Any], budget: float, metric: str,
           remeasure: Callable[[], Mapping[str, Any]], band: float = EDGE_BAND,
           over_band: float = OVER_BAND, predicted: float | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(latency dict that decides, verdict record). `first` and what `remeasure` returns are latency
    dicts (p50_ms, p90_ms, ..., count). Remeasures only when `first` is within `band` under the
    budget or `over_band` over it, or over the budget when `predicted` (the model's figure that chose
    the student) was within it."""
    runs = [dict(first)]
    edge = f"-{band:.0%}/+{over_band:.0%}"
    against = contradicts(float(first[metric]), budget, predicted)
    if near_edge(float(first[metric]), budget, band, over_band) or against:
        again = remeasure()
        if again and again.get(metric):  # the same statistics as the first run, nothing more
            runs.append({k: again[k] for k in first if k in again})
    best = min(runs, key=lambda lat: float(lat[metric]))
    values = [float(r[metric]) for r in runs]
    sides = {v <= budget for v in values}
    quantile = {"p50_ms": 0.5, "p90_ms": 0.9, "p99_ms": 0.99}.get(metric, 0.5)
    count = int(best.get("count") or 0)
    lo, hi = rank_band(count, quantile) if count else (0, 0)
    if len(runs) == 1:
        confidence = "clear"
        why = f"{values[0]:.4g} ms is {abs(values[0] / budget - 1):.0%} from the budget, outside the {edge} noise band"
    elif len(sides) == 1:
        confidence = "confirmed"
        why = (f"{_why_again(edge, against, predicted)}: measured again in a fresh process "
               f"({REMEASURE_FACTOR:g}x longer); both runs ({_ms(values)} ms) on the same side")
    else:
        confidence = "uncertain"
        why = (f"{_why_again(edge, against, predicted)} and the runs disagree ({_ms(values)} ms): decided by "
               "the least-disturbed run" + ("" if against else "; the student sits at the budget"))
    record = {
        "confidence": confidence, "explanation": why, "runs_ms": values, "decided_by_ms": float(best[metric]),
        "margin": budget / float(best[metric]) - 1.0, "remeasured": len(runs) > 1, "iterations": count,
        "remeasured_because": None if len(runs) == 1 else (
            "measured over a budget it was predicted within" if against else "near the budget"),
        "percentile_rank_band_95": [lo, hi] if count else None,
        "spread": (max(values) - min(values)) / min(values) if len(values) > 1 else 0.0,
    }
    return best, record


def _why_again(edge: str, against: bool, predicted: float | None) -> str:
    """Why a student was measured twice (its verdict's explanation starts with it)."""
    if against:
        return f"predicted {predicted:.4g} ms, within the budget, and measured over it"
    return f"within {edge} of the budget"


def _ms(values: list[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)
