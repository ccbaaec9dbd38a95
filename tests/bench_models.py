"""Tiny real ONNX artifacts for the harness tests, built with the onnx helper API (no torch, fast).

Each artifact is a directory with the model and an `edgekd.artifact/1` manifest, exactly what
`edgekd export` writes, so the tests go through `edgekd.runtimes.load_artifact` like real use.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_onnx_artifact(out_dir: Path, *, channels: int = 1, size: int = 8, classes: int = 10,
                       hidden: int = 16, extra_mb: float = 0.0, batch: int | None = None, seed: int = 0) -> Path:
    """conv3x3 -> relu -> global average pool -> (optional big dense) -> linear, as an artifact.

    `extra_mb` adds a dense layer with that many MB of float32 weights, so two artifacts differ
    clearly in size and in the memory they need at run time.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekd.fileio import atomic_write_json, sha256_file

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    inits = [
        numpy_helper.from_array(rng.standard_normal((hidden, channels, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g1"]),
        helper.make_node("Flatten", ["g1"], ["f1"]),
    ]
    feat, width = "f1", hidden
    if extra_mb > 0:
        wide = max(1, int(extra_mb * 1e6 / 4 / hidden))
        inits.append(numpy_helper.from_array(rng.standard_normal((hidden, wide)).astype(np.float32) * 0.01, "wx"))
        nodes.append(helper.make_node("MatMul", ["f1", "wx"], ["fx"]))
        feat, width = "fx", wide
    inits.append(numpy_helper.from_array(rng.standard_normal((width, classes)).astype(np.float32) * 0.1, "w2"))
    nodes.append(helper.make_node("MatMul", [feat, "w2"], ["logits"]))
    dim0 = batch if batch else "N"
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim0, channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim0, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out_dir / "model.onnx"))
    atomic_write_json(out_dir / "manifest.json", {
        "schema": "edgekd.artifact/1", "format": "onnx", "runtime": "onnxruntime", "precision": "fp32",
        "model_file": "model.onnx", "files": {"model.onnx": sha256_file(out_dir / "model.onnx")},
        "inputs": [{"name": "x", "shape": [batch or -1, channels, size, size], "dtype": "float32", "layout": "NCHW"}],
        "outputs": [{"name": "logits", "shape": [batch or -1, classes], "dtype": "float32"}],
        "normalization": {"mean": [0.0] * channels, "std": [1.0] * channels},
        "class_names": [str(i) for i in range(classes)], "num_classes": classes,
        "source": {"checkpoint": None, "checkpoint_sha256": None, "spec": f"tiny:hidden={hidden}",
                   "params": int(sum(np.prod(i.dims) for i in inits)), "macs": 0},
        "parity": {}, "status": "ok", "error": None, "versions": {}, "options": {},
    })
    return out_dir


def make_eval_npz(path: Path, *, n: int = 50, channels: int = 1, size: int = 8, classes: int = 10, seed: int = 1) -> Path:
    from edgekd.bench.accuracy import write_eval_npz

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, channels, size, size)).astype(np.float32)
    y = rng.integers(0, classes, size=n)
    return write_eval_npz(path, x, y)


# INT8 saturation (tests/test_int8_isa_emulated.py, tests/test_arm64.py): a 3x3 conv over 16 channels whose
# weights are all equal (each quantizes to the top of its range) reading inputs near the top of
# theirs, so every u8 x s8 pair sum (255 x 127 x 2) overflows int16 unless the weights are 7-bit
SATURATING_WEIGHT = 0.05


def saturating_conv_onnx(path: Path, behind_a_layer: bool) -> None:
    """ONNX: [1x1 identity conv -> Relu ->] 3x3 conv 16 -> 4 channels, every weight SATURATING_WEIGHT, no bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, src = [], [numpy_helper.from_array(np.full((4, 16, 3, 3), SATURATING_WEIGHT, np.float32), "w")], "input"
    if behind_a_layer:
        inits.append(numpy_helper.from_array(np.eye(16, dtype=np.float32).reshape(16, 16, 1, 1), "eye"))
        nodes += [helper.make_node("Conv", ["input", "eye"], ["a"]), helper.make_node("Relu", ["a"], ["r"])]
        src = "r"
    nodes.append(helper.make_node("Conv", [src, "w"], ["logits"]))
    graph = helper.make_graph(nodes, "saturate", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 16, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4, 4, 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))


def saturating_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Eight inputs in [0.9, 1.0] and the exact conv output (sum over the 16 x 3 x 3 window, x SATURATING_WEIGHT)."""
    x = (0.9 + 0.1 * np.random.default_rng(0).random((8, 16, 6, 6))).astype(np.float32)
    win = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # 8 x 16 x 4 x 4 x 3 x 3
    exact = SATURATING_WEIGHT * win.sum(axis=(1, 4, 5))
    return x, np.repeat(exact[:, None], 4, axis=1).reshape(8, -1)


def saturation_error(out: np.ndarray, exact: np.ndarray) -> float:
    """Largest |output - exact| relative to the largest exact output."""
    return float(np.max(np.abs(out.reshape(len(exact), -1) - exact)) / np.max(np.abs(exact)))
