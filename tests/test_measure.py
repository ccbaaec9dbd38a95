"""The timing loop, its statistics, inputs, accuracy, and the isolated runner process (real
subprocesses, real ONNX artifacts run by ONNX Runtime)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edgekd.bench import inputs as inp
from edgekd.bench.accuracy import evaluate, write_eval_npz
from edgekd.bench.measure import (
    MeasurementError, latency_stats, measure_artifact, normalize_request, run_isolated, timing_loop,
)
from edgekd.errors import ConfigError, DataError, EdgeKDError, ModelError

from bench_models import make_eval_npz, make_onnx_artifact

FAST = {"warmup_count": 2, "warmup_s": 0.0, "min_count": 20, "min_s": 0.05}


def test_latency_stats_match_numpy_on_known_times():
    rng = np.random.default_rng(3)
    times_ns = rng.integers(1_000_000, 9_000_000, size=1001)
    stats = latency_stats(times_ns, batch=4)
    ms = times_ns / 1e6
    assert stats["count"] == 1001
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
        assert stats[key] == pytest.approx(np.percentile(ms, q), rel=1e-12)
    assert stats["mean_ms"] == pytest.approx(ms.mean(), rel=1e-12)
    assert stats["std_ms"] == pytest.approx(ms.std(), rel=1e-12)
    assert stats["min_ms"] == ms.min() and stats["max_ms"] == ms.max()
    assert stats["cv"] == pytest.approx(ms.std() / ms.mean())
    assert stats["throughput_per_s"] == pytest.approx(1001 * 4 / (ms.sum() / 1e3))


def test_latency_stats_exact_small_case():
    stats = latency_stats([1_000_000, 2_000_000, 3_000_000, 4_000_000])
    assert stats["p50_ms"] == 2.5 and stats["min_ms"] == 1.0 and stats["max_ms"] == 4.0
    assert stats["mean_ms"] == 2.5 and stats["std_ms"] == pytest.approx(np.std([1, 2, 3, 4]))
    with pytest.raises(ValueError):
        latency_stats([])


def test_timing_loop_needs_both_min_count_and_min_duration():
    calls = []
    step = lambda: calls.append(time.sleep(0.001))  # noqa: E731
    # count-bound: 30 iterations take ~30 ms > min_s
    info, times = timing_loop(step, warmup_count=3, warmup_s=0.0, min_count=30, min_s=0.001, max_s=10)
    assert times.size == 30 and info["warmup_count"] == 3 and len(calls) == 33
    assert (times >= 1_000_000).all()  # each sleep took at least 1 ms
    # duration-bound: 5 iterations would be 5 ms, the loop must run on until 60 ms
    calls.clear()
    info, times = timing_loop(step, warmup_count=0, warmup_s=0.03, min_count=5, min_s=0.06, max_s=10)
    assert times.size > 5 and info["wall_s"] >= 0.06
    assert info["warmup_s"] >= 0.03 and info["warmup_count"] >= 1
    assert not info["capped_by_max_s"]


def test_timing_loop_cap_stops_a_slow_model():
    info, times = timing_loop(lambda: time.sleep(0.01), warmup_count=0, warmup_s=0, min_count=10_000,
                              min_s=0, max_s=0.05)
    assert info["capped_by_max_s"] and 1 <= times.size < 20


@pytest.mark.parametrize("bad", [
    {"batch": 0}, {"threads": 0}, {"min_s": -1}, {"input": "zeros"}, {"input": "data"},
    {"accuracy": True}, {"bogus": 1}, {"warmup_count": 1.5},
    # issue 11: NaN / infinities / absurd sizes never reach the timing loop
    {"min_s": float("nan")}, {"max_s": float("inf")}, {"timeout_s": float("inf")}, {"warmup_count": 10**12},
    {"batch": 10**9}, {"cv_warn": float("nan")}, {"latency": "yes"},
    # the accelerator crosses the wire too: type, length and name are checked before anything runs
    {"accelerator": 7}, {"accelerator": ""}, {"accelerator": "n" * 10_000}, {"accelerator": "tpu"},
    {"accelerator": ["npu"]}, {"accelerator": True},
])
def test_bad_requests_are_config_errors(bad):
    with pytest.raises(ConfigError):
        normalize_request(bad)


def test_request_defaults():
    req = normalize_request({"data": "x.npz"})
    assert req["accuracy"] is True and req["batch"] == 1 and req["input"] == "random"
    assert normalize_request(None)["accuracy"] is False
    assert normalize_request(None)["accelerator"] is None  # the runtime's default: what a request always meant
    assert normalize_request({"accelerator": "NPU"})["accelerator"] == "npu"


def test_a_device_on_an_accelerator_adds_it_to_every_request(artifacts):
    """What deploy and bench wrap their device in: each request carries the target's accelerator, and
    the runner child refuses one the artifact's runtime does not declare (the same ConfigError)."""
    from edgekd.bench.devices import InProcessDevice, on_accelerator

    small, _, _ = artifacts
    plain = InProcessDevice()
    assert on_accelerator(plain, None) is plain  # no accelerator: requests exactly as before
    assert on_accelerator(plain, "cpu").bench(small, FAST)["settings"]["accelerator"] == "cpu"
    with pytest.raises(ConfigError, match="onnxruntime does not run on npu"):
        on_accelerator(plain, "npu").bench(small, FAST)


def test_an_accelerator_the_runtime_does_not_declare_is_refused_at_load(artifacts):
    small, _, _ = artifacts
    res = measure_artifact(small, {**FAST, "threads": 1, "accelerator": "cpu"})
    assert res["settings"]["accelerator"] == "cpu" and res["runner_info"]["accelerator"] == "cpu"
    assert measure_artifact(small, {**FAST, "threads": 1})["settings"]["accelerator"] == "cpu"
    with pytest.raises(ConfigError, match="onnxruntime does not run on npu; it runs on cpu, gpu"):
        measure_artifact(small, {**FAST, "accelerator": "npu"})


def test_random_feed_is_seeded_and_typed():
    specs = [inp.InputSpec("x", (None, 1, 8, 8), "float32"), inp.InputSpec("attention_mask", (None, None), "int64")]
    a, b = inp.random_feed(specs, 3, seed=5), inp.random_feed(specs, 3, seed=5)
    assert a["x"].shape == (3, 1, 8, 8) and a["x"].dtype == np.float32
    np.testing.assert_array_equal(a["x"], b["x"])
    assert a["attention_mask"].dtype == np.int64 and (a["attention_mask"] == 1).all()


def test_eval_data_errors_name_the_file(tmp_path):
    manifest = {"inputs": [{"name": "x", "shape": [-1, 1, 8, 8], "dtype": "float32"}]}
    specs = inp.input_specs(manifest)
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="noy.npz"):
        inp.load_eval_data(tmp_path / "noy.npz", specs, manifest)
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 1, 4, 4), np.float32), y=np.zeros(2))
    with pytest.raises(DataError, match="shape.npz"):
        inp.load_eval_data(tmp_path / "shape.npz", specs, manifest)
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="obj.npz"):  # pickled object arrays are refused
        inp.load_eval_data(tmp_path / "obj.npz", specs, manifest)
    with pytest.raises(DataError, match="missing.npz"):
        inp.load_eval_data(tmp_path / "missing.npz", specs, manifest)


def test_eval_data_normalization_and_layout(tmp_path):
    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    write_eval_npz(tmp_path / "raw.npz", x, [0, 1], normalized=False)
    manifest = {"inputs": [{"name": "img", "shape": [1, 2, 2, 3], "dtype": "float32", "layout": "NHWC"}],
                "normalization": {"mean": [1.0, 2.0, 3.0], "std": [2.0, 2.0, 2.0]}}
    data = inp.load_eval_data(tmp_path / "raw.npz", inp.input_specs(manifest), manifest)
    want = ((x - np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1)) / 2).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(data.arrays["img"], want)
    feed, real = data.batch(1, 1, pad_to=1)
    assert real == 1 and feed["img"].shape == (1, 2, 2, 3)


class NumpyLinear:
    """A runner written in plain numpy: logits = flatten(x) @ w, with a fixed batch of 4."""

    input_names = ["x"]
    info = {"runtime": "numpy", "precision": "fp32"}

    def __init__(self, w):
        self.w = w
        self.batches = []

    def run(self, feeds):
        x = feeds["x"]
        self.batches.append(x.shape[0])
        return x.reshape(x.shape[0], -1) @ self.w


def test_accuracy_covers_the_whole_set_with_a_fixed_batch(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 1, 2, 2)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    y = (x.reshape(10, -1) @ w).argmax(1)
    y[:3] = (y[:3] + 1) % 3  # three wrong labels -> 70 %
    write_eval_npz(tmp_path / "e.npz", x, y)
    manifest = {"inputs": [{"name": "x", "shape": [4, 1, 2, 2], "dtype": "float32"}]}
    specs = inp.input_specs(manifest)
    runner = NumpyLinear(w)
    acc = evaluate(runner, inp.load_eval_data(tmp_path / "e.npz", specs, manifest), specs)
    assert acc["count"] == 10 and acc["correct"] == 7 and acc["top1"] == pytest.approx(0.7)
    assert runner.batches == [4, 4, 4]  # the tail of 2 was padded to the model's fixed batch


# ---- real artifacts through ONNX Runtime -------------------------------------------------------

@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    small = make_onnx_artifact(root / "small")
    big = make_onnx_artifact(root / "big", extra_mb=60)
    data = make_eval_npz(root / "eval.npz", n=37)
    return small, big, data


def test_measure_artifact_in_process(artifacts):
    small, _, data = artifacts
    res = measure_artifact(small, {**FAST, "threads": 1, "batch": 2, "data": str(data), "input": "data"})
    assert res["latency"]["count"] >= 20 and res["latency"]["p50_ms"] > 0
    assert res["load_ms"] > 0 and res["first_inference_ms"] > 0
    assert res["settings"] == {**res["settings"], "threads": 1, "batch": 2, "input_source": "data"}
    assert res["settings"]["precision_hint"] == "fp32"
    assert res["accuracy"]["count"] == 37 and 0 <= res["accuracy"]["top1"] <= 1
    assert res["artifact"]["size_bytes"] == res["artifact"]["model_file_bytes"] == (small / "model.onnx").stat().st_size
    json.dumps(res)  # plain JSON, it crosses the wire


def test_run_isolated_attributes_peak_memory_per_model(artifacts):
    small, big, data = artifacts
    req = {**FAST, "threads": 1, "data": str(data)}
    a = run_isolated(small, req)
    b = run_isolated(big, req)
    assert a["memory"]["isolated"] and a["memory"]["peak_rss_bytes"] > 0
    # the big model holds ~60 MB more weights; its own child must show it
    assert b["memory"]["peak_rss_bytes"] - a["memory"]["peak_rss_bytes"] > 40e6
    assert a["runner_pid"] != b["runner_pid"]
    inproc = measure_artifact(small, req)
    assert a["accuracy"] == inproc["accuracy"]  # same runtime, same data, same answer
    json.dumps(a)


def test_run_isolated_reraises_user_errors_and_keeps_going(artifacts, tmp_path):
    small, _, data = artifacts
    with pytest.raises(ModelError, match="manifest"):
        run_isolated(tmp_path / "nothing-here", FAST)
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 1, 5, 5), np.float32), y=np.zeros(3))
    with pytest.raises(DataError, match="bad.npz"):
        run_isolated(small, {**FAST, "data": str(tmp_path / "bad.npz")})
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text((small / "manifest.json").read_text())
    (corrupt / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(EdgeKDError):
        run_isolated(corrupt, FAST)
    assert run_isolated(small, FAST)["latency"]["count"] >= 20  # and the next one still works


def test_run_isolated_timeout_kills_the_child(artifacts):
    small, _, _ = artifacts
    with pytest.raises(MeasurementError, match="timeout_s"):
        run_isolated(small, {**FAST, "min_s": 30.0, "max_s": 60.0, "timeout_s": 1.0})


def test_runner_child_needs_no_torch_or_onnx(artifacts, tmp_path, monkeypatch):
    """The device side of measurement runs where torch and the onnx package cannot be imported."""
    for pkg in ("torch", "onnx"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"raise ImportError('{pkg} is blocked on this device')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    small, _, data = artifacts
    res = run_isolated(small, {**FAST, "data": str(data)})
    assert res["latency"]["count"] >= 20 and res["accuracy"]["count"] == 37
