"""Teachers: edgekd checkpoints and ANY ONNX classifier (the Keras/TF route), with clear errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd import api
from edgekd.distill.teachers import OnnxTeacher, TorchTeacher, load_teacher
from edgekd.errors import ConfigError, ModelError
from edgekd.fileio import sha256_file
from edgekd.models import load_model


def export_onnx(model: nn.Module, path: Path, example: torch.Tensor) -> Path:
    """What a user does with a foreign teacher: export it to ONNX with a dynamic batch."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return path


class ChannelsLast(nn.Module):
    """A Keras-style model: takes N×H×W×C, ends in a softmax (outputs probabilities)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x.permute(0, 3, 1, 2)), dim=1)


def test_torch_teacher_logits_and_identity(tiny_teacher_ckpt: Path, digits_small):
    teacher = load_teacher(tiny_teacher_ckpt)
    assert isinstance(teacher, TorchTeacher)
    assert teacher.identity == sha256_file(tiny_teacher_ckpt)
    model, _ = load_model(tiny_teacher_ckpt)
    x = digits_small.test.x[:37]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(teacher.logits(x, batch_size=8), want, atol=1e-5)  # batching is invisible
    teacher.check_compatible(digits_small.input_shape, digits_small.num_classes)
    with pytest.raises(ConfigError, match=r"expects inputs of shape \[1, 8, 8\].*\[1, 16, 16\]"):
        teacher.check_compatible((1, 16, 16), 10)
    with pytest.raises(ConfigError, match="predicts 10 classes but .* has 3"):
        teacher.check_compatible((1, 8, 8), 3)


def test_onnx_teacher_matches_torch(tmp_path: Path, tiny_teacher_ckpt: Path, digits_small):
    model, _ = load_model(tiny_teacher_ckpt)
    path = export_onnx(model, tmp_path / "teacher.onnx", torch.zeros(1, 1, 8, 8))
    teacher = load_teacher(path)
    assert isinstance(teacher, OnnxTeacher) and teacher.identity == sha256_file(path)
    teacher.check_compatible(digits_small.input_shape, digits_small.num_classes)
    x = digits_small.test.x[:50]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(teacher.logits(x, batch_size=16), want, atol=1e-4)


def test_keras_style_nhwc_softmax_teacher(tmp_path: Path, tiny_teacher_ckpt: Path, digits_small):
    model, _ = load_model(tiny_teacher_ckpt)
    path = export_onnx(ChannelsLast(model), tmp_path / "keras.onnx", torch.zeros(1, 8, 8, 1))
    teacher = load_teacher(path)
    teacher.check_compatible(digits_small.input_shape, digits_small.num_classes)
    assert teacher.channels_last
    x = digits_small.test.x[:20]
    with torch.no_grad():
        want = torch.log_softmax(model(torch.from_numpy(x)), dim=1).numpy()
    # probabilities come back as log-probabilities: the same distribution at every temperature
    np.testing.assert_allclose(teacher.logits(x), want, atol=1e-4)


def test_onnx_teacher_with_wrong_input_shape_is_a_clear_error(tmp_path: Path, digits_small):
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    path = export_onnx(net, tmp_path / "rgb16.onnx", torch.zeros(1, 3, 16, 16))
    with pytest.raises(ConfigError, match=r"rgb16\.onnx expects inputs of shape \[3, 16, 16\].*\[1, 8, 8\]"):
        load_teacher(path).check_compatible(digits_small.input_shape, digits_small.num_classes)


def test_distill_from_an_onnx_teacher(tmp_path: Path, tiny_teacher_ckpt: Path, digits_small):
    model, _ = load_model(tiny_teacher_ckpt)
    path = export_onnx(model, tmp_path / "teacher.onnx", torch.zeros(1, 1, 8, 8))
    summary = api.distill({"teacher": str(path), "student": "mlp:hidden=16", "train": {"epochs": 1, "threads": 1},
                           "output": str(tmp_path / "run")}, progress=False)
    test = digits_small.test
    torch_teacher_acc = float((load_teacher(tiny_teacher_ckpt).logits(test.x).argmax(1) == test.y).mean())
    assert summary["teacher_acc"] == pytest.approx(torch_teacher_acc)
    assert summary["soft_target_cache"]["train"] in ("miss", "hit")
    assert (tmp_path / "run" / "student.pt").is_file()


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("missing.pt", None, "does not exist"),
        ("teacher.h5", b"\x89HDF\r\n", "unknown file type .h5"),
        ("broken.onnx", b"this is not protobuf", "not a loadable ONNX model"),
        ("broken.pt", b"PK\x03\x04 garbage", "not a readable edgekd checkpoint"),
    ],
)
def test_bad_teacher_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes | None, match: str):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=match) as info:
        load_teacher(path)
    assert "\n" not in str(info.value)
