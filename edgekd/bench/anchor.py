"""A speed anchor: a fixed numpy workload timed in short bursts during the timing loop, so a measurement
says how fast the machine itself was while it ran.

Why (measured on a 2-vCPU KVM Xeon shared with other jobs, load average 10-21, `scripts/bench_repeat.py`):
the same untrained student, measured in fresh processes a few seconds apart, gave p50s up to 1.5-1.9x
apart (median max/min 1.58 over 26 students; 64 % of repeats within ±10 % of their median), while
within one process five 0.1 s windows agreed to ~5 %. The machine switches between a fast and a slow
state for stretches of 2-10 s (not tied to a vCPU; no steal time reported), and every SIMD-heavy
workload slows by about the same factor. A fixed numpy workload timed in the same process slows with
it: in a probe of 8 students x 6 runs the ratio inference / anchor repeated to ~5 % (max/min 1.05,
100 % within ±10 %) where the raw p50 did not (1.6-1.7, 67-81 %). A host fitting a latency model
divides that state out (`edgekd.latency.anchor`); the raw statistics stay what they are.

Device side: numpy + stdlib only. The workload is fixed (version `ANCHOR_VERSION`): anchors are only
ever compared with anchors of the same version on the same device.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from edgekd.bench.timing import timing_loop

ANCHOR_VERSION = "matmul32x2+tanh2048/1"
BURST_CALLS = 32  # anchor calls per burst (~0.15-0.3 ms): its median is the machine's speed just then
BURST_EVERY_S = 0.025  # a burst at least this often during the timed loop (~1 % of the loop's time)


class SpeedAnchor:
    """Two float32 32x32 matmuls and a tanh over 2048 floats (~5-10 µs on a desktop-class core; 12 KB
    of operands, so it leaves most of L1 to the model). Deterministic inputs; single-threaded in every
    BLAS at this size."""

    def __init__(self) -> None:
        rng = np.random.default_rng(12345)
        self.a = _aligned(rng.standard_normal((32, 32)))
        self.b = _aligned(rng.standard_normal((32, 32)))
        self.v = _aligned(rng.standard_normal(2048))
        self.out = _aligned(np.zeros((32, 32)))
        self.vout = _aligned(np.zeros(2048))

    def __call__(self) -> None:
        np.dot(self.a, self.b, out=self.out)
        np.dot(self.out, self.b, out=self.out)
        np.tanh(self.v, out=self.vout)


def _aligned(values: np.ndarray, align: int = 64) -> np.ndarray:
    """A float32 copy of `values` starting on an `align`-byte boundary (a cache line): where numpy
    happens to place an array must not change how fast the anchor runs from one process to the next."""
    raw = np.empty(values.size * 4 + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    out = raw[start:start + values.size * 4].view(np.float32).reshape(values.shape)
    out[...] = values
    return out


def anchored_timing_loop(step: Callable[[], Any], anchor: Callable[[], Any], *, burst_calls: int = BURST_CALLS,
                         burst_every_s: float = BURST_EVERY_S, **loop: Any
                         ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """`measure.timing_loop` over `step()`, with a burst of `burst_calls` timed `anchor()` calls before
    the first iteration and again whenever `burst_every_s` has passed (between iterations, never
    inside one).

    The anchor runs in bursts, not after every inference, so neither evicts the other's data from the
    caches on every call: interleaved call by call, a 100 µs model slowed the anchor by ~20 %, which
    made the anchor say more about the model than about the machine. Slow machine states last seconds,
    so a burst every 25 ms follows them. `loop` takes timing_loop's keyword arguments (warmup_count,
    warmup_s, min_count, min_s, max_s).
    Returns (loop info + `anchor_bursts`, step times ns, anchor ns paired with each step: the median
    of the burst that preceded it).
    """
    clock = time.perf_counter_ns
    step_ns: list[int] = []
    burst_of_step: list[int] = []
    bursts: list[float] = []  # median ns of each burst
    next_burst = [0]
    calls = max(1, int(burst_calls))

    def burst() -> None:
        ts = [0] * calls
        for i in range(calls):
            t0 = clock()
            anchor()
            ts[i] = clock() - t0
        bursts.append(float(np.median(ts)))
        next_burst[0] = clock() + int(burst_every_s * 1e9)

    def paced_step() -> None:
        if clock() >= next_burst[0]:
            burst()
        t0 = clock()
        step()
        t1 = clock()
        step_ns.append(t1 - t0)
        burst_of_step.append(len(bursts) - 1)

    info, times = timing_loop(paced_step, **loop)
    n = len(times)
    timed = slice(len(step_ns) - n, len(step_ns))
    info["anchor_bursts"] = len(set(burst_of_step[timed]))
    paired = np.asarray([bursts[i] for i in burst_of_step[timed]], dtype=np.float64)
    return info, np.asarray(step_ns[timed], dtype=np.int64), paired


def anchor_summary(step_ns: np.ndarray, anchor_ns: np.ndarray) -> dict[str, Any]:
    """What a measurement reports about its anchor: the anchor's p50 (ms) over the timed iterations
    and the median of the per-iteration ratios step / anchor (`ratio_p50`), which is what repeats
    across machine states. `anchor_ns[i]` is the anchor time paired with step i."""
    s = np.asarray(step_ns, dtype=np.float64)
    a = np.asarray(anchor_ns, dtype=np.float64)
    if s.size == 0 or s.size != a.size:
        raise ValueError("anchor_summary needs paired, non-empty step and anchor times")
    a = np.maximum(a, 1.0)
    return {"version": ANCHOR_VERSION, "p50_ms": float(np.median(a)) / 1e6,
            "ratio_p50": float(np.median(s / a)), "count": int(a.size)}
