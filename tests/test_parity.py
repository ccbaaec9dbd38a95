"""The parity gate: passes faithful artifacts, fails a deliberately perturbed one (artifact kept,
manifest failed with the reason, load refused), and the accuracy rule for int8."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from edgekd.errors import ModelError
from edgekd.runtimes import load_artifact, read_manifest
from edgekd.runtimes.base import hash_files, update_manifest
from edgekd.runtimes.parity import check_parity, compare, gate


def test_compare_and_gate_rules():
    ref = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    y = np.array([0, 1, 1])
    same = compare(ref, ref + 5e-5, y)
    assert same["top1_agreement"] == 1.0 and same["accuracy_drop_pts"] == 0.0
    assert gate("fp32", same) is None
    assert "fp32 parity" in gate("fp32", compare(ref, ref + 2e-4, y))
    flipped = ref.copy()
    flipped[1] = [1.0, 0.0]  # one of three predictions changes: 33 points lost
    worse = compare(ref, flipped, y)
    assert worse["accuracy_drop_pts"] == pytest.approx(100 / 3)
    assert "int8 accuracy" in gate("int8", worse) and gate("int8", worse, max_drop=40) is None
    assert "labelled" in gate("int8", compare(ref, flipped, None))
    assert "non-finite" in gate("fp32", compare(ref, ref * np.nan, y))
    assert "shape" in gate("fp32", compare(ref, ref[:, :1], y))


def _perturb_onnx(path, change) -> None:
    """Change the biggest weight tensor of model.onnx in place (a deliberately wrong artifact)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path / "model.onnx"))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    arr = numpy_helper.to_array(init).copy()
    arr = change(arr)
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    onnx.save(model, str(path / "model.onnx"))
    update_manifest(path, files=hash_files(path, read_manifest(path)["files"]))


def test_gate_fails_a_perturbed_fp32_artifact(runtime_artifacts, tiny_teacher_ckpt, digits_small, tmp_path):
    from edgekd.models import load_model

    model, _ = load_model(tiny_teacher_ckpt)
    path = tmp_path / "perturbed"
    shutil.copytree(runtime_artifacts("onnxruntime"), path)
    _perturb_onnx(path, lambda w: w + 1e-3 * np.random.default_rng(0).standard_normal(w.shape).astype(w.dtype))
    parity = check_parity(model, path, digits_small.test.x, digits_small.test.y)
    manifest = read_manifest(path)
    assert not parity["passed"] and manifest["status"] == "failed"
    assert "fp32 parity" in manifest["error"] and parity["max_abs"] > 1e-4
    assert (path / "model.onnx").is_file()  # kept for inspection
    with pytest.raises(ModelError, match="failed at export"):
        load_artifact(path)


def test_gate_fails_an_int8_artifact_that_loses_accuracy(runtime_artifacts, tiny_teacher_ckpt, digits_small, tmp_path):
    from edgekd.models import load_model

    model, _ = load_model(tiny_teacher_ckpt)
    path = tmp_path / "int8"
    shutil.copytree(runtime_artifacts("onnxruntime", "int8"), path)
    assert read_manifest(path)["status"] == "ok"
    _perturb_onnx(path, lambda w: np.roll(w, 1, axis=0))  # int8 weights wired to the wrong channels
    parity = check_parity(model, path, digits_small.test.x, digits_small.test.y)
    manifest = read_manifest(path)
    assert not parity["passed"] and parity["accuracy_drop_pts"] > 1.0
    assert manifest["status"] == "failed" and "points below torch" in manifest["error"]
    # the same gate with a generous allowance passes it: the rule, not the artifact, decided
    assert check_parity(model, path, digits_small.test.x, digits_small.test.y, max_drop=100.0)["passed"]


def test_reference_file_is_stored_and_hashed(runtime_artifacts):
    path = runtime_artifacts("onnxruntime")
    manifest = read_manifest(path)
    assert "reference.npz" in manifest["files"] and manifest["reference"]["count"] == 8
    with np.load(path / "reference.npz", allow_pickle=False) as ref:
        assert ref["x"].shape == (8, 1, 8, 8) and ref["logits"].shape == (8, 10) and ref["y"].shape == (8,)


@pytest.mark.parametrize("runtime,precision", [("onnxruntime", "int8"), ("openvino", "int8"), ("onnxruntime", "fp32")])
def test_artifact_accuracy_is_what_the_gate_measured(runtime, precision, runtime_artifacts, digits_small):
    """The joint choice's val figure for an INT8 student is its artifact's own accuracy on the host
    runtime: on the test split it equals what the gate recorded there, and it follows the labels."""
    from edgekd.runtimes.parity import artifact_accuracy

    art = runtime_artifacts(runtime, precision)
    x, y = digits_small.test.x, digits_small.test.y
    acc = artifact_accuracy(art, x, y, threads=1)
    assert acc == pytest.approx(read_manifest(art)["parity"]["accuracy"] / 100.0, abs=1e-9)
    assert 0.5 < acc <= 1.0
    wrong = (np.asarray(y) + 1) % 10  # every label moved: what was right is now wrong
    assert artifact_accuracy(art, x, wrong, threads=1) <= 1.0 - acc + 1e-9
