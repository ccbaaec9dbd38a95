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

from edgekd.runtimes.int8_settings import openvino_int8_settings, ort_int8_settings, recipe_of  # noqa: E402

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64") or find_qemu() is None,
                                reason="needs an x86-64 host with qemu-x86_64 user mode (qemu-user-static)")

NO_VNNI, VNNI = IDENTITIES["x86 without VNNI"], IDENTITIES["x86 with VNNI"]
WEIGHT = 0.05


def _model(path: Path, behind_a_layer: bool) -> None:
    """ONNX: [1x1 identity conv -> Relu ->] 3x3 conv 16 -> 4 channels, every weight WEIGHT, no bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, src = [], [numpy_helper.from_array(np.full((4, 16, 3, 3), WEIGHT, np.float32), "w")], "input"
    if behind_a_layer:
        inits.append(numpy_helper.from_array(np.eye(16, dtype=np.float32).reshape(16, 16, 1, 1), "eye"))
        nodes += [helper.make_node("Conv", ["input", "eye"], ["a"]), helper.make_node("Relu", ["a"], ["r"])]
        src = "r"
    nodes.append(helper.make_node("Conv", [src, "w"], ["logits"]))
    graph = helper.make_graph(nodes, "saturate", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    """Eight inputs in [0.9, 1.0] and the exact conv output (sum over the 16 x 3 x 3 window, x WEIGHT)."""
    x = (0.9 + 0.1 * np.random.default_rng(0).random((8, 16, 6, 6))).astype(np.float32)
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # 8 x 16 x 4 x 4 x 3 x 3
    exact = WEIGHT * win.sum(axis=(1, 4, 5))
    return x, np.repeat(exact[:, None], 4, axis=1).reshape(8, -1)


def _rel_err(out: np.ndarray, exact: np.ndarray) -> float:
    return float(np.max(np.abs(out.reshape(len(exact), -1) - exact)) / np.max(np.abs(exact)))


@pytest.mark.parametrize("behind_a_layer", [False, True], ids=["first-layer", "behind-a-layer"])
def test_onnxruntime_no_vnni_rule_does_not_saturate_there(behind_a_layer, tmp_path):
    from edgekd.runtimes.onnxruntime import quantize_onnx_int8

    x, exact = _inputs()
    _model(tmp_path / "fp32.onnx", behind_a_layer)
    calib = [{"input": x[i:i + 1]} for i in range(len(x))]
    arts = {}
    # an export for no particular device gets the same recipe (it may run on such a CPU)
    assert recipe_of("onnxruntime", ort_int8_settings(None)) == recipe_of("onnxruntime", ort_int8_settings(NO_VNNI))
    for name, identity in (("no_vnni", NO_VNNI), ("vnni", VNNI)):
        arts[name] = tmp_path / f"{name}.onnx"
        quantize_onnx_int8(tmp_path / "fp32.onnx", arts[name], calib, batch=1, settings=ort_int8_settings(identity))
    here = run_logits("onnxruntime", [arts["no_vnni"], arts["vnni"]], x)
    emulated = run_logits("onnxruntime", [arts["no_vnni"], arts["vnni"]], x, cpu="Haswell")
    assert _rel_err(here[0], exact) < 0.02  # the rule's artifact is exact on any x86 host
    if _host_has_vnni():  # and here the VNNI one is too: this host's parity gate cannot see the loss below
        assert _rel_err(here[1], exact) < 0.02
    # on the CPU without VNNI: the rule's artifact still is; the VNNI one's pair sums clip (~ half the value),
    # which proves the emulated process ran the saturating kernels
    assert _rel_err(emulated[0], exact) < 0.02
    assert _rel_err(emulated[1], exact) > 0.2


@pytest.mark.parametrize("behind_a_layer", [False, True], ids=["first-layer", "behind-a-layer"])
def test_openvino_no_vnni_rule_does_not_saturate_there(behind_a_layer, tmp_path):
    from edgekd.runtimes import RUNTIMES

    if RUNTIMES.get("openvino").unavailable_reason():
        pytest.skip(RUNTIMES.get("openvino").unavailable_reason())
    import openvino as ov

    from edgekd.runtimes.openvino import quantize_ir_int8

    x, exact = _inputs()
    _model(tmp_path / "fp32.onnx", behind_a_layer)
    calib = [{"input": x[i:i + 1]} for i in range(len(x))]
    arts = []
    first_layer_only = {**openvino_int8_settings(NO_VNNI), "overflow_fix": "first_layer_only"}  # NNCF's default
    for settings in (openvino_int8_settings(NO_VNNI), openvino_int8_settings(VNNI), first_layer_only):
        q = quantize_ir_int8(ov.Core().read_model(str(tmp_path / "fp32.onnx")), calib, batch=1, calibration_samples=8,
                             accuracy_control=False, max_drop=1.0, validation=None, settings=settings)
        arts.append(tmp_path / f"q{len(arts)}.xml")
        ov.save_model(q, str(arts[-1]), compress_to_fp16=False)
    emulated = run_logits("openvino", arts, x, cpu="Haswell")
    assert _rel_err(emulated[0], exact) < 0.02
    assert _rel_err(emulated[1], exact) > 0.2
    assert recipe_of("openvino", openvino_int8_settings(None)) == recipe_of("openvino", openvino_int8_settings(NO_VNNI))
    # NNCF's first-layer fix saves the first conv only: behind a layer the same conv saturates
    assert (_rel_err(emulated[2], exact) > 0.2) if behind_a_layer else (_rel_err(emulated[2], exact) < 0.02)


def _host_has_vnni() -> bool:
    from edgekd.bench.devices import local_fingerprint
    from edgekd.device.identity import hardware_identity
    from edgekd.runtimes.int8_settings import X86_INT32_DOT_FLAGS

    return bool(set((hardware_identity(local_fingerprint()) or {}).get("isa") or []) & X86_INT32_DOT_FLAGS)
