"""Per-device profiles: schema, replace-and-count, corrupt files, and two real processes writing the
same profile at once without losing a row."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from edgekd.errors import ConfigError, ProfileError
from edgekd.device.profiles import (
    SCHEMA, Measurement, Profile, device_name, profile_path, record_measurements, save_profile,
)

FP = {"arch": "x86_64", "cpu_model": "AMD EPYC", "cores": 2, "ram_bytes": 24 << 30}


def meas(sha="a" * 64, fmt="onnx", precision="fp32", threads=1, batch=1, p50=1.0, **kw):
    return Measurement(model_sha256=sha, format=fmt, precision=precision, threads=threads, batch=batch,
                       latency={"p50_ms": p50, "p90_ms": p50 * 1.2}, spec="cnn:width=8", **kw)


def test_record_replaces_same_key_and_counts():
    p = Profile(name="dev")
    p.record(meas(p50=1.0))
    p.record(meas(p50=2.0))
    p.record(meas(threads=2))
    p.record(meas(precision="int8"))
    assert len(p.measurements) == 3
    m = p.measurements[meas().key]
    assert m.count == 2 and m.latency["p50_ms"] == 2.0
    assert meas().key == "aaaaaaaaaaaa/onnx/fp32/t1/b1"


def test_round_trip_is_readable_yaml_and_keeps_unknown_keys(tmp_path):
    path = tmp_path / "dev.yaml"
    p = Profile(name="dev", device=FP)
    p.record(meas(size_bytes=1234, peak_rss_bytes=5 << 20, accuracy=0.93, dataset_fingerprint="f" * 64,
                  versions={"onnxruntime": "1.31"}))
    p.latency_model = {"kind": "linear", "coef": [1.0, 2.0]}
    p.extra["notes"] = "bench on battery"
    save_profile(p, path)
    text = path.read_text()
    assert text.startswith(f"schema: {SCHEMA}\n") and "p50_ms: 1.0" in text and "AMD EPYC" in text
    q = Profile.load(path)
    assert q.to_dict() == p.to_dict()
    assert q.latency_model["coef"] == [1.0, 2.0] and q.extra == {"notes": "bench on battery"}


@pytest.mark.parametrize("content", [
    "schema: [unclosed\n", "just a string\n", "schema: other/1\n",
    f"schema: {SCHEMA}\nmeasurements: [1, 2]\n", f"schema: {SCHEMA}\nmeasurements:\n  k: {{bogus: 1}}\n",
])
def test_corrupt_profile_names_the_file(tmp_path, content):
    path = tmp_path / "broken.yaml"
    path.write_text(content)
    with pytest.raises(ProfileError, match="broken.yaml"):
        Profile.load(path)
    with pytest.raises(ProfileError, match="broken.yaml"):
        record_measurements(path, [meas()])
    assert path.read_text() == content  # nothing written over a file we could not read


def test_a_profile_cannot_run_code_when_read(tmp_path):
    """A profile comes from another machine: YAML tags that would build Python objects are refused,
    whichever safe loader (libyaml's or PyYAML's) reads it."""
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.yaml"
    content = (f"schema: {SCHEMA}\nmeasurements: !!python/object/apply:os.system [\"touch {marker}\"]\n")
    path.write_text(content)
    with pytest.raises(ProfileError, match="hostile.yaml is not valid YAML"):
        Profile.load(path)
    assert not marker.exists() and path.read_text() == content


def test_missing_profile(tmp_path):
    with pytest.raises(ProfileError, match="nope.yaml"):
        Profile.load(tmp_path / "nope.yaml")


def test_a_profile_belongs_to_one_device(tmp_path):
    path = tmp_path / "dev.yaml"
    record_measurements(path, [meas()], device=FP)
    with pytest.raises(ProfileError, match="cpu_model"):
        record_measurements(path, [meas()], device={**FP, "cpu_model": "Cortex-A76"})
    p = record_measurements(path, [meas()], device={**FP, "temperature_c": 51})  # same machine, new state
    assert p.device["temperature_c"] == 51 and p.measurements[meas().key].count == 2


def test_profile_path_and_device_name(tmp_path):
    assert profile_path("rpi5") == Path("profiles/rpi5.yaml")
    assert profile_path("x", tmp_path) == tmp_path / "x.yaml"
    assert profile_path("some/where.yaml") == Path("some/where.yaml")
    with pytest.raises(ConfigError):
        profile_path("bad name!")
    assert device_name(FP) == "amd-epyc-x86_64-2c"
    assert device_name({"cpu_model": "Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", "arch": "x86_64", "cores": 8}) == \
        "intel-core-i7-1185g7-3.00ghz-x86_64-8c"


WRITER = textwrap.dedent("""
    import sys
    from edgekd.device.profiles import Measurement, record_measurements
    path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(n):
        own = Measurement(model_sha256=who * 64, format="onnx", precision="fp32", threads=1, batch=i + 1,
                          latency={"p50_ms": float(i)})
        shared = Measurement(model_sha256="c" * 64, format="onnx", precision="fp32", threads=1, batch=1)
        record_measurements(path, [own, shared], device={"arch": "x86_64"})
""")


def test_two_processes_writing_one_profile_lose_nothing(tmp_path):
    path = tmp_path / "shared.yaml"
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), who, str(n)]) for who in "ab"]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    prof = Profile.load(path)
    assert len(prof.measurements) == 2 * n + 1
    assert prof.measurements[meas(sha="c" * 64).key].count == 2 * n  # every replace was counted
    assert not list(tmp_path.glob(".shared.yaml.*.tmp"))  # no temp files left behind
    yaml.safe_load(path.read_text())


def test_committed_profiles_load():
    """Every profile in the repository's profiles/ is valid and has real measurements."""
    root = Path(__file__).resolve().parents[1] / "profiles"
    found = sorted(root.glob("*.yaml"))
    assert found, "the repository ships at least one measured profile"
    for path in found:
        prof = Profile.load(path)
        assert prof.device.get("cpu_model") and prof.measurements
        for m in prof.measurements.values():
            assert m.latency["p50_ms"] > 0 and m.peak_rss_bytes > 0 and m.size_bytes > 0


def test_cpu_and_npu_measurements_of_one_model_are_kept_apart(tmp_path):
    """One host, one model, OpenVINO on its CPU and on its NPU: two rows, two keys; the default
    accelerator's key is the key as it always was, so rows written before accelerators mean the CPU."""
    path = tmp_path / "dev.yaml"
    old = meas(fmt="openvino", p50=1.0)  # a row from before accelerators: no accelerator at all
    cpu = meas(fmt="openvino", p50=2.0, runtime="openvino", accelerator="cpu")
    npu = meas(fmt="openvino", p50=0.25, runtime="openvino", accelerator="npu")
    assert old.key == cpu.key == "aaaaaaaaaaaa/openvino/fp32/t1/b1"
    assert npu.key == "aaaaaaaaaaaa/openvino/fp32/t1/b1@npu"
    record_measurements(path, [old], device=FP)
    record_measurements(path, [npu], device=FP)
    prof = record_measurements(path, [cpu], device=FP)
    assert sorted(prof.measurements) == [cpu.key, npu.key]
    assert prof.measurements[cpu.key].count == 2  # the CPU row replaced the old one: they are one key
    again = Profile.load(path)
    assert again.measurements[npu.key].latency["p50_ms"] == 0.25 and again.measurements[npu.key].on_accelerator == "npu"
    assert again.measurements[cpu.key].latency["p50_ms"] == 2.0 and again.measurements[cpu.key].on_accelerator == "cpu"
    assert yaml.safe_load(path.read_text())["measurements"][npu.key]["accelerator"] == "npu"


def test_a_row_without_accelerator_is_written_back_as_it_was(tmp_path):
    path = tmp_path / "dev.yaml"
    save_profile(Profile(name="dev", device=FP, measurements={meas().key: meas()}), path)
    entry = yaml.safe_load(path.read_text())["measurements"]["aaaaaaaaaaaa/onnx/fp32/t1/b1"]
    assert "accelerator" not in entry
    assert Profile.load(path).measurements[meas().key].on_accelerator == "cpu"  # onnxruntime's default
    with pytest.raises(ProfileError, match="accelerator"):  # a wrongly typed one is named, not crashed on
        path.write_text(path.read_text().replace("  batch: 1\n", "  batch: 1\n    accelerator: [npu]\n", 1))
        Profile.load(path)


def test_committed_profiles_keep_their_keys_and_meaning():
    """The profiles in the repository were written before accelerators: they load with every key as
    it was in the file, every row on its runtime's default accelerator."""
    root = Path(__file__).resolve().parents[1] / "profiles"
    for path in sorted(root.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())["measurements"]
        prof = Profile.load(path)
        assert sorted(prof.measurements) == sorted(raw)
        assert {m.on_accelerator for m in prof.measurements.values()} == {"cpu"}
