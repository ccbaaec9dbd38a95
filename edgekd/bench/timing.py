"""The timed loop of every measurement and its statistics: warm up, time `step()` per iteration with
the collector off, report percentiles. Apart from `measure.py` (which runs artifacts) so that the
speed anchor (`anchor.py`) can wrap the same loop without the two importing each other. numpy +
stdlib; runs on the device."""
from __future__ import annotations

import gc
import time
from typing import Any, Callable

import numpy as np


def latency_stats(times_ns: np.ndarray | list[int], batch: int = 1) -> dict[str, float]:
    """Statistics of per-iteration times given in nanoseconds, reported in milliseconds.

    Percentiles use numpy's default linear interpolation; `std` is the population standard deviation
    (ddof=0); `cv` = std / mean; throughput counts samples (iterations × batch) per second of summed
    iteration time, which is what a caller running back-to-back inferences would get.
    """
    t = np.asarray(times_ns, dtype=np.float64) / 1e6
    if t.size == 0:
        raise ValueError("no timed iterations")
    mean = float(t.mean())
    std = float(t.std())
    total_s = float(t.sum()) / 1e3
    p50, p90, p99 = (float(v) for v in np.percentile(t, [50, 90, 99]))
    return {
        "count": int(t.size),
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(t.min()),
        "max_ms": float(t.max()),
        "cv": std / mean if mean > 0 else 0.0,
        "total_s": total_s,
        "throughput_per_s": (t.size * batch) / total_s if total_s > 0 else float("inf"),
    }


def timing_loop(
    step: Callable[[], Any],
    *,
    warmup_count: int,
    warmup_s: float,
    min_count: int,
    min_s: float,
    max_s: float,
) -> tuple[dict[str, Any], np.ndarray]:
    """Warm up, then time `step()` per iteration. Returns (loop info, times in ns as int64 array)."""
    clock = time.perf_counter_ns
    start = clock()
    n_warm = 0
    # warm-up is bounded by max_s too: a huge warmup_count cannot hold the device
    warm_cap = max_s * 1e9
    while (n_warm < warmup_count or (clock() - start) < warmup_s * 1e9) and (clock() - start) < warm_cap:
        step()
        n_warm += 1
    warm_s = (clock() - start) / 1e9

    times = np.empty(max(min_count, 256), dtype=np.int64)
    n = 0
    capped = False
    # the collector could fire inside a timed call and charge its pause to the model (timeit does the same)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        loop_start = clock()
        while True:
            elapsed = clock() - loop_start
            if n >= min_count and elapsed >= min_s * 1e9:
                break
            if n > 0 and elapsed >= max_s * 1e9:
                capped = True
                break
            t0 = clock()
            step()
            t1 = clock()
            if n == times.size:
                times = np.concatenate([times, np.empty(times.size, dtype=np.int64)])
            times[n] = t1 - t0
            n += 1
        wall_s = (clock() - loop_start) / 1e9
    finally:
        if gc_was_enabled:
            gc.enable()
    info = {"warmup_count": n_warm, "warmup_s": warm_s, "wall_s": wall_s, "capped_by_max_s": capped}
    return info, times[:n]
