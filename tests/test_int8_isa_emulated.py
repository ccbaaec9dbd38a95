"""The INT8 rule's reason holds on the CPU it is for: run by the kernels of an x86 CPU without VNNI
(qemu user mode, `-cpu Haswell`: AVX2 + FMA, no AVX-512, no VNNI), an artifact quantized with the
settings edgekd picks for such a device computes what it computes here, and one quantized with the
settings for a VNNI device saturates. The model is built to saturate: a 3x3 conv over 16 channels
whose weights are all equal (each quantizes to the top of its range) reading inputs near the top of
theirs, so every u8 x s8 pair sum (255 x 127 x 2) overflows int16 unless the weights are 7-bit.
The second case puts that conv behind another layer, where a first-layer-only fix does not reach.
The emulated run is a real ONNX Runtime / OpenVINO process (`scripts/bench_int8_isa.py`'s worker)."""
from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_int8_isa import IDENTITIES, find_qemu, run_logits  # noqa: E402
from bench_models import saturating_conv_onnx, saturating_inputs, saturation_error  # noqa: E402

from edgekd.runtimes.int8_settings import openvino_int8_settings, ort_int8_settings, recipe_of  # noqa: E402

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or find_qemu() is None,
                                reason="needs an x86-64 host with qemu-x86_64 user mode (qemu-user-static)")

NO_VNNI, VNNI = IDENTITIES["x86 without VNNI"], IDENTITIES["x86 with VNNI"]
@pytest.mark.parametrize("behind_a_layer", [False, True], ids=["first-layer", "behind-a-layer"])
def test_onnxruntime_no_vnni_rule_does_not_saturate_there(behind_a_layer, tmp_path):
    from edgekd.runtimes.onnxruntime import quantize_onnx_int8

    x, exact = saturating_inputs()
    saturating_conv_onnx(tmp_path / "fp32.onnx", behind_a_layer)
    calib = [{"input": x[i:i + 1]} for i in range(len(x))]
    arts = {}
    # an export for no particular device gets the same recipe (it may run on such a CPU)
    assert recipe_of("onnxruntime", ort_int8_settings(None)) == recipe_of("onnxruntime", ort_int8_settings(NO_VNNI))
    for name, identity in (("no_vnni", NO_VNNI), ("vnni", VNNI)):
        arts[name] = tmp_path / f"{name}.onnx"
        quantize_onnx_int8(tmp_path / "fp32.onnx", arts[name], calib, batch=1, settings=ort_int8_settings(identity))
    here = run_logits("onnxruntime", [arts["no_vnni"], arts["vnni"]], x)
    emulated = run_logits("onnxruntime", [arts["no_vnni"], arts["vnni"]], x, cpu="Haswell")
    assert saturation_error(here[0], exact) < 0.02  # the rule's artifact is exact on any x86 host
    if _host_has_vnni():  # and here the VNNI one is too: this host's parity gate cannot see the loss below
        assert saturation_error(here[1], exact) < 0.02
    # on the CPU without VNNI: the rule's artifact still is; the VNNI one's pair sums clip (~ half the value),
    # which proves the emulated process ran the saturating kernels
    assert saturation_error(emulated[0], exact) < 0.02
    assert saturation_error(emulated[1], exact) > 0.2
    # the host-side checks' option (parity gate, joint choice): on this CPU the VNNI recipe then computes
    # what a VNNI device computes, so a host without VNNI judges an artifact made for one fairly
    checked = run_logits("onnxruntime", [arts["vnni"]], x, cpu="Haswell", exact_integer=True)
    assert saturation_error(checked[0], exact) < 0.02


@pytest.mark.parametrize("behind_a_layer", [False, True], ids=["first-layer", "behind-a-layer"])
def test_openvino_no_vnni_rule_does_not_saturate_there(behind_a_layer, tmp_path):
    from edgekd.runtimes import RUNTIMES

    if RUNTIMES.get("openvino").unavailable_reason():
        pytest.skip(RUNTIMES.get("openvino").unavailable_reason())
    import openvino as ov

    from edgekd.runtimes.openvino import quantize_ir_int8

    x, exact = saturating_inputs()
    saturating_conv_onnx(tmp_path / "fp32.onnx", behind_a_layer)
    calib = [{"input": x[i:i + 1]} for i in range(len(x))]
    arts = []
    first_layer_only = {**openvino_int8_settings(NO_VNNI), "overflow_fix": "first_layer_only"}  # NNCF's default
    for settings in (openvino_int8_settings(NO_VNNI), openvino_int8_settings(VNNI), first_layer_only):
        q = quantize_ir_int8(ov.Core().read_model(str(tmp_path / "fp32.onnx")), calib, batch=1, calibration_samples=8,
                             accuracy_control=False, max_drop=1.0, validation=None, settings=settings)
        arts.append(tmp_path / f"q{len(arts)}.xml")
        ov.save_model(q, str(arts[-1]), compress_to_fp16=False)
    emulated = run_logits("openvino", arts, x, cpu="Haswell")
    assert saturation_error(emulated[0], exact) < 0.02
    assert saturation_error(emulated[1], exact) > 0.2
    assert recipe_of("openvino", openvino_int8_settings(None)) == recipe_of("openvino", openvino_int8_settings(NO_VNNI))
    # NNCF's first-layer fix saves the first conv only: behind a layer the same conv saturates
    assert (saturation_error(emulated[2], exact) > 0.2) if behind_a_layer else (saturation_error(emulated[2], exact) < 0.02)


def _host_has_vnni() -> bool:
    from edgekd.bench.devices import local_fingerprint

    return bool(ort_int8_settings(local_fingerprint())["int32_dot"])  # the ISA facts the rule reads
