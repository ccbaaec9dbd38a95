"""`edgekd.runtimes.onnx_registry`: torch's aten -> ONNX registry built once per process and handed to
each export as its own copy. The files must not change, an export must not see what another one
registered, and torch's exporter is left as it was outside the block. Real exports, no mocks."""
from __future__ import annotations

from pathlib import Path

from edgekd.models import ModelInfo, create_model
from edgekd.runtimes import onnx_registry
from edgekd.runtimes.host import export_onnx


def _export(spec: str, path: Path) -> bytes:
    import torch

    torch.manual_seed(0)
    shape = (1, 8, 8)
    model = create_model(spec, shape, 10).eval()
    info = ModelInfo(spec=spec, input_shape=shape, num_classes=10, class_names=[str(i) for i in range(10)])
    export_onnx(model, info, path)
    return path.read_bytes()


def test_a_reused_registry_exports_the_same_bytes_and_is_built_once(tmp_path):
    onnx_registry._BUILT.clear()
    first = _export("cnn:width=8,depth=1", tmp_path / "a.onnx")  # builds the registry
    [built] = onnx_registry._BUILT.values()
    again = _export("cnn:width=8,depth=1", tmp_path / "b.onnx")  # reuses it
    _export("mlp:hidden=16", tmp_path / "c.onnx")
    assert first == again
    assert list(onnx_registry._BUILT.values()) == [built]  # not rebuilt by the next exports


def test_each_export_gets_its_own_copy_and_torch_is_restored_after():
    from torch.onnx._internal.exporter import _registration

    original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    with onnx_registry.reused_registry():
        mine = _registration.ONNXRegistry.from_torchlib()
        size = len(mine.functions)
        some_op = next(iter(mine.functions))
        mine.functions[some_op].clear()  # what an export registering its own op would change
        mine.functions.clear()
        theirs = _registration.ONNXRegistry.from_torchlib()
        assert len(theirs.functions) == size > 100 and theirs.functions[some_op]
        assert theirs.opset_version == mine.opset_version
    assert _registration.ONNXRegistry.__dict__["from_torchlib"] is original
