"""INT8 settings follow the device's ISA: ONNX Runtime 7-bit weights (reduce_range) on x86 without VNNI,
where U8S8 kernels sum in saturating int16, full 8-bit weights with VNNI and on ARM; U8 activations on
x86, where S8 ones leave a residual input's convs in fp32, S8 elsewhere; OpenVINO (NNCF)
the overflow fix on every layer without VNNI, none with it. Every runtime records its settings
with the same keys. Both branches are exported for real by passing identities (this machine's own
ISA does not matter)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.runtimes import RUNTIMES, read_manifest
from edgekd.runtimes.int8_settings import (OVERFLOW_FIX_RANGE, RULES, SETTINGS_KEYS, int8_settings,
                                           litert_int8_settings, openvino_int8_settings, ort_int8_settings)

AVX2_ONLY = {"arch": "x86_64", "isa": ["avx", "avx2", "fma", "sse4_2"]}
AVX512_VNNI = {"arch": "x86_64", "isa": ["avx2", "avx512f", "avx512bw", "avx512_vnni"]}
ARM_DOT = {"arch": "aarch64", "isa": ["asimd", "asimddp"]}


def test_rules_per_identity() -> None:
    assert ort_int8_settings(AVX2_ONLY)["reduce_range"] is True
    assert "VPMADDUBSW" in ort_int8_settings(AVX2_ONLY)["rule"]
    assert ort_int8_settings(AVX512_VNNI)["reduce_range"] is False
    assert ort_int8_settings(AVX512_VNNI)["int32_dot"] == ["avx512_vnni"]
    assert ort_int8_settings({"arch": "x86_64", "isa": ["avx2", "avx_vnni"]})["reduce_range"] is False
    assert ort_int8_settings(ARM_DOT)["reduce_range"] is False
    unknown = ort_int8_settings(None)
    # no identity: 7-bit weights, right on any CPU (the artifact may run on x86 without VNNI)
    assert unknown["reduce_range"] is True and "no device identity" in unknown["rule"]
    assert ort_int8_settings({"isa": ["avx512_vnni"]})["reduce_range"] is True  # architecture unknown
    # activations: U8 on any x86 (ORT's x86 QLinearConv takes U8), ORT's default S8 on ARM
    assert ort_int8_settings(AVX2_ONLY)["activation_type"] == "QUInt8"
    assert ort_int8_settings(AVX512_VNNI)["activation_type"] == "QUInt8"
    assert ort_int8_settings(ARM_DOT)["activation_type"] == "QInt8"
    # no identity: U8, the activations every ONNX Runtime build fuses (x86 needs them, ARM takes both)
    assert unknown["activation_type"] == "QUInt8" and "every ONNX Runtime build" in unknown["activation_rule"]
    assert ort_int8_settings({"isa": ["avx2"]})["activation_type"] == "QUInt8"  # architecture unknown
    # an agent fingerprint works as well as a hardware identity, and a model identity too
    fingerprint = {"arch": "x86_64", "cpu": {"vendor": "AuthenticAMD", "flags": ["avx2", "fma", "sse4_2"]}}
    assert ort_int8_settings(fingerprint)["reduce_range"] is True
    assert ort_int8_settings({"hardware": AVX512_VNNI, "runtime": "onnxruntime"})["reduce_range"] is False


def _int8_weight_range(path) -> int:
    """The largest |value| among the INT8 weight initializers of a QDQ model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    values = [np.abs(numpy_helper.to_array(t).astype(np.int32)).max() for t in model.graph.initializer
              if t.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(t).size > 16]
    assert values, "the QDQ model holds INT8 weights"
    return int(max(values))


@pytest.mark.parametrize("identity,reduce_range", [(AVX2_ONLY, True), (AVX512_VNNI, False)], ids=["avx2", "vnni"])
def test_export_applies_and_records_the_settings(identity, reduce_range, tiny_teacher_ckpt, digits_small, tmp_path):
    if RUNTIMES.get("onnxruntime").unavailable_reason():
        pytest.skip(RUNTIMES.get("onnxruntime").unavailable_reason())
    from edgekd.models import load_model
    from edgekd.runtimes.parity import check_parity

    model, info = load_model(tiny_teacher_ckpt)
    calib = [{"input": digits_small.train.x[i:i + 1]} for i in range(64)]
    out = RUNTIMES.get("onnxruntime").export(model, info, tmp_path / "int8", precision="int8", calibration=calib,
                                             device_identity=identity)
    settings = read_manifest(out)["options"]["int8_settings"]
    assert settings["reduce_range"] is reduce_range and settings["rule"] == ort_int8_settings(identity)["rule"]
    # the setting really reached the quantizer: 7-bit weights stay within [-64, 63]
    widest = _int8_weight_range(out / read_manifest(out)["model_file"])
    assert (widest <= 64) if reduce_range else (widest == 127)
    parity = check_parity(model, out, digits_small.test.x, digits_small.test.y, threads=1)
    assert parity["passed"], parity


def _fingerprint(cpu_model: str, vendor: str, flags: list[str]) -> dict:
    """An agent fingerprint as `edgekd.bench.devices.local_fingerprint` writes it (fields the identity reads)."""
    return {"hostname": "dev", "arch": "x86_64", "cpu_model": cpu_model, "cores_logical": 2, "cores_physical": 2,
            "cpu": {"vendor": vendor, "family": "6", "model": "143", "flags": flags},
            "os": "Linux", "python": "3.11", "runtimes": {"onnxruntime": "1"}}


BASE_FLAGS = ["sse4_2", "avx", "avx2", "fma", "f16c"]
# Sapphire Rapids (AVX-512 VNNI + AMX) and a Zen 3 EPYC (AVX2 only, no VNNI: the machine of issue 14)
VNNI_FINGERPRINT = _fingerprint("Intel(R) Xeon(R) Platinum 8481C", "GenuineIntel",
                                BASE_FLAGS + ["avx512f", "avx512bw", "avx512_vnni", "amx_int8", "amx_tile"])
NO_VNNI_FINGERPRINT = _fingerprint("AMD EPYC 7B13", "AuthenticAMD", BASE_FLAGS + ["vaes", "sha_ni"])


@pytest.mark.parametrize("fingerprint,reduce_range", [(NO_VNNI_FINGERPRINT, True), (VNNI_FINGERPRINT, False)],
                         ids=["no-vnni", "vnni"])
def test_deploy_export_follows_the_device_fingerprint(fingerprint, reduce_range, tiny_teacher_ckpt, tmp_path):
    """`edgekd deploy`'s export (deploy.stages.export_for) gives the exporter the device's fingerprint: the
    manifest records the settings its ISA calls for, and an artifact made for another device is not reused."""
    if RUNTIMES.get("onnxruntime").unavailable_reason():
        pytest.skip(RUNTIMES.get("onnxruntime").unavailable_reason())
    from edgekd.deploy.config import DeployConfig
    from edgekd.deploy.stages import export_for

    cfg = DeployConfig(target="cpu", precision="int8")
    art = export_for(cfg, tiny_teacher_ckpt, tmp_path, "onnx", 1, device_identity=fingerprint)
    settings = read_manifest(art)["options"]["int8_settings"]
    assert settings == ort_int8_settings(fingerprint)
    assert settings["reduce_range"] is reduce_range
    assert settings["int32_dot"] == ([] if reduce_range else ["amx_int8", "avx512_vnni"])
    first = (art / "model.onnx").stat().st_mtime_ns
    # the same device again: the cached artifact is reused as it is
    assert export_for(cfg, tiny_teacher_ckpt, tmp_path, "onnx", 1, device_identity=fingerprint) == art
    assert (art / "model.onnx").stat().st_mtime_ns == first
    # the other device: exported again with its own settings
    other = VNNI_FINGERPRINT if reduce_range else NO_VNNI_FINGERPRINT
    export_for(cfg, tiny_teacher_ckpt, tmp_path, "onnx", 1, device_identity=other)
    assert read_manifest(art)["options"]["int8_settings"]["reduce_range"] is (not reduce_range)


def test_calibration_exports_follow_the_device_fingerprint(tmp_path):
    """Untrained students exported for latency calibration get the device's INT8 settings too, and a
    cached one made for another device is exported again."""
    if RUNTIMES.get("onnxruntime").unavailable_reason():
        pytest.skip(RUNTIMES.get("onnxruntime").unavailable_reason())
    from edgekd.latency.calibrate import export_untrained

    spec, shape = "cnn:width=4,depth=1", (1, 8, 8)
    art = export_untrained(spec, shape, 10, "onnxruntime", "int8", tmp_path, device_identity=NO_VNNI_FINGERPRINT)
    assert read_manifest(art)["options"]["int8_settings"]["reduce_range"] is True
    art = export_untrained(spec, shape, 10, "onnxruntime", "int8", tmp_path, device_identity=VNNI_FINGERPRINT)
    assert read_manifest(art)["options"]["int8_settings"]["reduce_range"] is False


def _activation_zero_point_types(path) -> set[int]:
    """ONNX element types of the zero points of a QDQ model's activation QuantizeLinear nodes."""
    import onnx

    model = onnx.load(str(path))
    inits = {t.name: t.data_type for t in model.graph.initializer}
    return {inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
            and n.input[2] in inits}


def test_x86_int8_runs_every_conv_of_a_residual_net_in_integer_kernels(tmp_path):
    """The x86 rule's U8 activations reach the quantizer, and this host's ONNX Runtime then fuses every
    conv of a residual net, the block inputs that two nodes read included (with S8 activations ORT
    1.31 leaves those in fp32: `scripts/bench_ort_int8.py` measures what that costs). The count is
    recorded in the manifest, so an export that stays partly fp32 shows it."""
    if RUNTIMES.get("onnxruntime").unavailable_reason():
        pytest.skip(RUNTIMES.get("onnxruntime").unavailable_reason())
    import onnx

    from edgekd.latency.calibrate import export_untrained

    spec, shape = "resnet_basic:depth=10,resolution=32,width=8", (3, 32, 32)
    art = export_untrained(spec, shape, 10, "onnxruntime", "int8", tmp_path / "x86", device_identity=AVX512_VNNI)
    manifest = read_manifest(art)
    assert manifest["options"]["int8_settings"]["activation_type"] == "QUInt8"
    assert _activation_zero_point_types(art / "model.onnx") == {onnx.TensorProto.UINT8}
    fused = manifest["options"]["fused_convs"]
    assert fused["convs"] == 12 and fused["quantized"] == 12, fused  # 1 stem + 8 block convs + 3 downsamples
    arm = export_untrained(spec, shape, 10, "onnxruntime", "int8", tmp_path / "arm", device_identity=ARM_DOT)
    assert _activation_zero_point_types(arm / "model.onnx") == {onnx.TensorProto.INT8}
    assert read_manifest(arm)["options"]["fused_convs"]["convs"] == 12


@pytest.mark.parametrize("identity", [None, AVX2_ONLY, AVX512_VNNI, ARM_DOT, {"isa": ["avx2"]}],
                         ids=["none", "avx2", "vnni", "arm", "no-arch"])
def test_every_runtime_records_the_same_keys(identity) -> None:
    for runtime in RULES:
        record = int8_settings(runtime, identity)
        assert set(SETTINGS_KEYS) <= set(record), (runtime, record)
        assert record["per_channel"] is True and record["rule"]
    assert int8_settings("tensorrt", identity) is None  # INT8 built on the device: no rule here


def test_openvino_rules_follow_vnni() -> None:
    assert openvino_int8_settings(AVX2_ONLY)["overflow_fix"] == "enable"
    assert openvino_int8_settings(AVX2_ONLY)["weight_range"] == "7-bit"
    assert "VPMADDUBSW" in openvino_int8_settings(AVX2_ONLY)["rule"]
    assert openvino_int8_settings(AVX512_VNNI)["overflow_fix"] == "disable"
    assert openvino_int8_settings(AVX512_VNNI)["weight_range"] == "8-bit"
    assert openvino_int8_settings(ARM_DOT)["overflow_fix"] == "disable"
    assert openvino_int8_settings(None)["overflow_fix"] == "enable"  # for no device: right on any CPU
    # LiteRT's quantizer takes nothing from the device: the same record for any identity
    assert litert_int8_settings(AVX2_ONLY) == litert_int8_settings(AVX512_VNNI) == int8_settings("litert", None)


def _ir_weight_ranges(xml) -> list[int]:
    """The largest |value| of each INT8 weight constant of an OpenVINO IR, in graph order (the first conv's first)."""
    import openvino as ov

    widest = [int(np.abs(op.get_data().astype(np.int32)).max()) for op in ov.Core().read_model(str(xml)).get_ordered_ops()
              if op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"]
    assert widest, "the IR holds no INT8 weights"
    return widest


@pytest.mark.parametrize("identity,fix", [(AVX2_ONLY, "enable"), (AVX512_VNNI, "disable")],
                         ids=["avx2", "vnni"])
def test_openvino_export_applies_and_records_the_overflow_fix(identity, fix, tiny_teacher_ckpt, digits_small,
                                                              tmp_path):
    adapter = RUNTIMES.get("openvino")
    if adapter.unavailable_reason():
        pytest.skip(adapter.unavailable_reason())
    from edgekd.models import load_model

    model, info = load_model(tiny_teacher_ckpt)
    calib = [{"input": digits_small.train.x[i:i + 1]} for i in range(64)]
    out = adapter.export(model, info, tmp_path / "int8", precision="int8", calibration=calib, device_identity=identity)
    manifest = read_manifest(out)
    assert manifest["options"]["int8_settings"] == openvino_int8_settings(identity)
    assert manifest["options"]["int8_settings"]["overflow_fix"] == fix
    # the setting reached NNCF: with the fix every layer's weights use half the range (|w| <= 64)
    widest = _ir_weight_ranges(out / manifest["model_file"])
    assert (max(widest) <= 64 and len(widest) > 1) if fix == "enable" else (widest[0] == 127)
    # a cached artifact is reused for a device with the same settings only
    assert adapter.fits_device(manifest, identity)
    assert not adapter.fits_device(manifest, AVX512_VNNI if fix == "enable" else AVX2_ONLY)


def test_joint_int8_record_reads_any_runtimes_settings(runtime_artifacts) -> None:
    """`deploy.joint.int8_record` (what the joint deploy reports for its chosen artifact) gives the
    manifest's settings with the runtime named, for OpenVINO and LiteRT as for ONNX Runtime."""
    from edgekd.deploy.joint import int8_record

    for runtime in ("onnxruntime", "openvino", "litert"):
        if RUNTIMES.get(runtime).unavailable_reason():
            continue
        art = runtime_artifacts(runtime, "int8")
        record = int8_record(str(art))
        assert record == {"runtime": runtime, **int8_settings(runtime, None)}
        assert set(SETTINGS_KEYS) <= set(record)
    assert int8_record(str(runtime_artifacts("onnxruntime"))) is None  # fp32: nothing quantized


def test_host_checks_run_onnxruntime_exactly_and_devices_as_deployed(tmp_path):
    """The parity gate and the joint choice run ONNX Runtime INT8 without int16 saturation (its U8U8
    kernels on x86 without VNNI: tests/test_int8_isa_emulated.py shows the effect there); the agent
    runs an artifact as deployed."""
    from bench_models import make_onnx_artifact

    from edgekd.runtimes import RUNTIMES, load_artifact
    from edgekd.runtimes.onnxruntime import EXACT_INTEGER_CONFIG
    from edgekd.runtimes.parity import _runner_for_gate
    from edgekd.runtimes.base import read_manifest

    art = make_onnx_artifact(tmp_path / "art")
    key, value = EXACT_INTEGER_CONFIG
    gate, _ = _runner_for_gate(RUNTIMES.get("onnxruntime"), art, read_manifest(art), 1)
    assert gate.session.get_session_options().get_session_config_entry(key) == value
    device = load_artifact(art, threads=1)  # what the agent's measurement loads
    with pytest.raises(RuntimeError, match="does not have configuration"):
        device.session.get_session_options().get_session_config_entry(key)


def test_a_host_without_vnni_says_when_its_openvino_int8_check_can_be_below_the_device() -> None:
    """OpenVINO has no exact-integer mode: an AVX2 host checking an artifact with 8-bit weights (made for
    a VNNI or ARM device) saturates where the device does not (emulated: a MobileNetV2 88.5 % vs 95.9 %),
    and the gate's verdict says so. ONNX Runtime (exact option) and LiteRT (no saturation) need no caveat."""
    from edgekd.runtimes.int8_settings import host_check_caveat

    for_vnni, for_avx2 = openvino_int8_settings(AVX512_VNNI), openvino_int8_settings(AVX2_ONLY)
    caveat = host_check_caveat("openvino", for_vnni, AVX2_ONLY)
    assert caveat and "saturate" in caveat and "8-bit" in caveat and "edgekd bench" in caveat
    assert host_check_caveat("openvino", openvino_int8_settings(ARM_DOT), AVX2_ONLY)
    assert host_check_caveat("openvino", {**for_avx2, "weight_range": OVERFLOW_FIX_RANGE["first_layer_only"]},
                             AVX2_ONLY)
    assert host_check_caveat("openvino", for_avx2, AVX2_ONLY) is None  # 7-bit everywhere: exact here too
    assert host_check_caveat("openvino", for_vnni, AVX512_VNNI) is None  # a VNNI host computes it exactly
    assert host_check_caveat("openvino", for_vnni, ARM_DOT) is None
    assert host_check_caveat("onnxruntime", ort_int8_settings(AVX512_VNNI), AVX2_ONLY) is None
    assert host_check_caveat("litert", litert_int8_settings(), AVX2_ONLY) is None
    assert host_check_caveat("openvino", None, AVX2_ONLY) is None  # no record: nothing to say

