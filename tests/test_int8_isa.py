"""ONNX Runtime INT8 settings follow the device's ISA: 7-bit weights (reduce_range) on x86 without
VNNI, where U8S8 kernels sum in saturating int16; full 8-bit weights with VNNI and on ARM. Both
branches are exported for real by passing identities (this machine's own ISA does not matter)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekd.runtimes import RUNTIMES, read_manifest
from edgekd.runtimes.int8_settings import ort_int8_settings

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
    assert unknown["reduce_range"] is False and "no device identity" in unknown["rule"]
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
