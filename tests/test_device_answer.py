"""A device's measurement answer is hostile until checked (`edgekd.device.answer`): a real in-process
measurement of a real export, then the values a broken or hostile device could send instead. Each
must be refused in one line before it becomes a profile row, and the profile must stay as it was."""
from __future__ import annotations

import copy

import pytest

from edgekd.bench.devices import open_device
from edgekd.device.profiles import Measurement, Profile, save_profile
from edgekd.errors import AgentError
from edgekd.latency.calibrate import export_untrained

FAST = {"warmup_s": 0.0, "warmup_count": 2, "min_s": 0.0, "min_count": 20}


@pytest.fixture(scope="module")
def answer(tmp_path_factory):
    art = export_untrained("cnn:depth=1,width=8", (1, 8, 8), 10, "onnxruntime", "fp32",
                           tmp_path_factory.mktemp("answer"))
    dev = open_device("inprocess")
    try:
        return dev.bench(art, {"threads": 1, "batch": 1, **FAST})
    finally:
        dev.close()


def _set(result, path: str, value):
    out = copy.deepcopy(result)
    *head, last = path.split(".")
    node = out
    for k in head:
        if not isinstance(node.get(k), dict):  # e.g. no accuracy was asked for: the device sends it anyway
            node[k] = {}
        node = node[k]
    node[last] = value
    return out


@pytest.mark.parametrize("path,value", [
    ("latency.p50_ms", -1.0), ("latency.p90_ms", "fast"), ("latency.p99_ms", 1e300),
    ("latency.std_ms", -0.1), ("latency.count", 0), ("latency.count", 2.5), ("latency.mean_ms", True),
    ("speed_anchor.ratio_p50", -3.0), ("speed_anchor.p50_ms", "x"),
    ("accuracy.top1", 7.0), ("accuracy.count", -1), ("memory.peak_rss_bytes", -5),
    ("load_ms", -2.0), ("settings.threads", "all"), ("settings.batch", 0), ("settings.batch", 1 << 17), ("settings.accelerator", "x" * 500),
    ("artifact.format", ["onnx"]), ("artifact.size_bytes", -1), ("versions", {"python": 3}),
    ("warnings", ["w" * 5000]), ("latency", [1, 2]),
])
def test_a_value_no_measurement_has_is_refused_in_one_line(answer, path, value, tmp_path):
    good = Measurement.from_result(answer, spec="cnn:depth=1,width=8")  # the real answer is a row
    assert good.latency["p50_ms"] > 0
    prof = Profile(name="box")
    prof.record(good)
    save_profile(prof, tmp_path / "box.yaml")
    before = (tmp_path / "box.yaml").read_bytes()
    with pytest.raises(AgentError) as err:  # the recording flow: a row, then the profile saved
        prof.record(Measurement.from_result(_set(answer, path, value), spec="cnn:depth=1,width=8"))
        save_profile(prof, tmp_path / "box.yaml")
    msg = str(err.value)
    assert "\n" not in msg and path.split(".")[0] in msg and "measure again" in msg
    # nothing was recorded: the profile is byte for byte what it was, and loads
    assert (tmp_path / "box.yaml").read_bytes() == before and len(Profile.load(tmp_path / "box.yaml").measurements) == 1


@pytest.mark.parametrize("path,value", [("settings.batch", 8192), ("latency.min_ms", 0.0), ("latency.p50_ms", 0.0),
                                        ("latency.throughput_per_s", None), ("settings.threads", None)])
def test_what_a_real_measurement_may_hold_passes(answer, path, value):
    """A batch of 8192 (requests allow up to 65536), a timer tick of 0 ms, an infinite throughput sent
    as null, the runtime's own threads: real answers, recorded."""
    m = Measurement.from_result(_set(answer, path, value), spec="cnn:depth=1,width=8")
    assert m.latency is not None
