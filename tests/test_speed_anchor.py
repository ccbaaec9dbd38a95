"""The speed anchor (a fixed numpy workload timed after every inference) and the steady-speed fit that
divides the machine's state out of a calibration (real timing loops, real ONNX Runtime artifacts, real
calibrated profile)."""
from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest

from latency_helpers import calibrated_profile

from edgekd.bench.anchor import ANCHOR_VERSION, SpeedAnchor, anchor_summary, anchored_timing_loop
from edgekd.bench.measure import run_isolated
from edgekd.latency.section import fit_profile, latency_section
from edgekd.latency.anchor import anchor_floor, pick_round, steady_latency
from edgekd.device.profiles import Measurement, Profile

from bench_models import make_onnx_artifact


def test_anchored_loop_times_the_anchor_in_bursts_between_iterations():
    calls = []
    info, step_ns, anchor_ns = anchored_timing_loop(lambda: (calls.append("s"), time.sleep(0.002)),
                                                    lambda: (calls.append("a"), time.sleep(0.0005)),
                                                    burst_calls=4, burst_every_s=0.01,
                                                    warmup_count=3, warmup_s=0.0, min_count=20, min_s=0.0, max_s=10)
    assert step_ns.size == anchor_ns.size == 20 and info["warmup_count"] == 3
    assert calls[:5] == ["a"] * 4 + ["s"]  # a burst before the first iteration
    bursts = "".join(calls).replace("aaaa", "B")
    assert "a" not in bursts  # the anchor only ever runs as a whole burst, never inside an iteration
    # a burst every 10 ms of the loop (so ~every 5th iteration of >= 2 ms), not after each one
    assert 2 <= info["anchor_bursts"] <= info["wall_s"] / 0.01 + 2
    assert (step_ns >= 2_000_000).all() and (anchor_ns >= 500_000).all()
    # each timed on its own: a step right after a burst (4 x >= 0.5 ms) takes what the others take
    after_burst = np.array([bursts[i - 1] == "B" for i, c in enumerate(bursts) if c == "s"])[3:]  # skip warm-up
    assert after_burst.any() and (~after_burst).any()
    assert np.median(step_ns[after_burst]) < np.median(step_ns[~after_burst]) + 1_000_000


def test_anchor_summary_is_the_median_of_paired_ratios():
    step = np.array([10, 20, 30, 40, 50]) * 1000
    anchor = np.array([5, 10, 10, 20, 25]) * 1000
    s = anchor_summary(step, anchor)
    assert s["ratio_p50"] == pytest.approx(2.0) and s["p50_ms"] == pytest.approx(0.010) and s["count"] == 5
    assert s["version"] == ANCHOR_VERSION
    with pytest.raises(ValueError):
        anchor_summary(step, anchor[:3])


def test_anchor_workload_is_deterministic_and_fast():
    a, b = SpeedAnchor(), SpeedAnchor()
    a()
    b()
    assert np.array_equal(a.out, b.out) and np.array_equal(a.vout, b.vout)
    t0 = time.perf_counter()
    for _ in range(200):
        a()
    assert (time.perf_counter() - t0) / 200 < 0.002  # microseconds, not milliseconds


def test_isolated_measurement_reports_its_anchor_and_a_profile_keeps_it(tmp_path):
    art = make_onnx_artifact(tmp_path / "m")
    res = run_isolated(art, {"warmup_count": 2, "warmup_s": 0.0, "min_count": 30, "min_s": 0.05, "threads": 1,
                             "anchor": True})
    anchor = res["speed_anchor"]
    assert anchor["version"] == ANCHOR_VERSION and anchor["p50_ms"] > 0 and anchor["ratio_p50"] > 0
    assert anchor["count"] == res["latency"]["count"]
    json.dumps(res)
    m = Measurement.from_result(res)
    assert m.latency["anchor_p50_ms"] > 0 and m.latency["anchor_ratio_p50"] > 0
    plain = run_isolated(art, {"warmup_count": 2, "warmup_s": 0.0, "min_count": 30, "min_s": 0.05, "threads": 1})
    assert "speed_anchor" not in plain and "anchor_p50_ms" not in Measurement.from_result(plain).latency


def test_steady_latency_rescales_to_the_floor():
    fast = {"p50_ms": 0.010, "p90_ms": 0.012, "anchor_p50_ms": 0.005, "anchor_ratio_p50": 2.0}
    slow = {"p50_ms": 0.016, "p90_ms": 0.020, "anchor_p50_ms": 0.008, "anchor_ratio_p50": 2.0}
    floor = anchor_floor([fast, slow, {"p50_ms": 1.0}, None])
    assert floor == 0.005
    s = steady_latency(slow, floor)
    assert s["p50_ms"] == pytest.approx(0.010) and s["p90_ms"] == pytest.approx(0.0125)
    assert s["steady_scale"] == pytest.approx(0.625)
    assert steady_latency({"p50_ms": 0.02}, floor) == {"p50_ms": 0.02, "steady_scale": 1.0}
    # within the calm band above the floor a measurement stays as measured
    calm = {"p50_ms": 0.011, "anchor_p50_ms": 0.0055, "anchor_ratio_p50": 1.9}
    assert steady_latency(calm, floor)["p50_ms"] == 0.011 and steady_latency(calm, floor)["steady_scale"] == 1.0
    # of several rounds: a calm one with the lowest p50, else the calmest
    calm_hi = {"p50_ms": 0.0105, "anchor_p50_ms": 0.0051, "anchor_ratio_p50": 2.06}
    assert pick_round([slow, calm_hi, fast], floor) is fast
    slower = {"p50_ms": 0.030, "anchor_p50_ms": 0.012, "anchor_ratio_p50": 2.5}
    assert pick_round([slower, slow], floor) is slow
    assert pick_round([{"p50_ms": 2.0}, {"p50_ms": 1.0}], None)["p50_ms"] == 1.0  # no anchor: lowest p50
    # the floor is a low quantile, not the minimum: one lucky run does not set the scale for all
    many = [{"p50_ms": 1.0, "anchor_p50_ms": 0.005 + i * 0.001, "anchor_ratio_p50": 1.0} for i in range(21)]
    assert anchor_floor([{"p50_ms": 1.0, "anchor_p50_ms": 0.001, "anchor_ratio_p50": 1.0}, *many]) == pytest.approx(0.006)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return calibrated_profile(tmp_path_factory.getbasetemp() / "latency-profile")


def _slow_down(profile: Profile, factor: float, keep_anchor: bool) -> Profile:
    """The measured profile as if every round had been calm (one anchor time for all), then half of
    its measurements as if taken while the machine ran `factor` slower (the model and the anchor
    slowed alike, so their ratio is unchanged)."""
    prof = copy.deepcopy(profile)
    for i, m in enumerate(sorted(prof.measurements.values(), key=lambda m: m.model_sha256)):
        lat = dict(m.latency, anchor_p50_ms=0.005)
        lat["anchor_ratio_p50"] = lat["p50_ms"] / lat["anchor_p50_ms"]
        if i % 2:
            for key in ("p50_ms", "p90_ms", "p99_ms", "anchor_p50_ms"):
                lat[key] *= factor
        if not keep_anchor:
            lat.pop("anchor_p50_ms")
            lat.pop("anchor_ratio_p50")
        m.latency = lat
    return prof


def test_calibration_fit_divides_the_machine_state_out(calibrated):
    profile = Profile.load(calibrated["path"])
    key = "onnxruntime/fp32/t1/b1"
    for m in profile.measurements.values():  # calibration measures with the anchor on
        assert m.latency["anchor_p50_ms"] > 0 and m.latency["anchor_ratio_p50"] > 0
    feats = [e["features"] for e in latency_section(profile)["features"].values()]

    def predictions(prof: Profile) -> np.ndarray:
        return np.array([fit_profile(prof)[key].predict(f) for f in feats])

    quiet = predictions(_slow_down(profile, 1.0, keep_anchor=True))
    disturbed = predictions(_slow_down(profile, 1.6, keep_anchor=True))
    # the slowed half carries its slower anchor: the steady fit does not move
    assert np.allclose(disturbed, quiet, rtol=1e-3)
    # without anchors the same disturbance goes straight into the fit
    raw = predictions(_slow_down(profile, 1.6, keep_anchor=False))
    raw_quiet = predictions(_slow_down(profile, 1.0, keep_anchor=False))
    assert np.max(np.abs(raw / raw_quiet - 1)) > 0.05
