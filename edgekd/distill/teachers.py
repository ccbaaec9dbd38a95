"""Teachers: where soft targets come from.

    teacher = load_teacher("runs/teacher/student.pt")   # an edgekd checkpoint -> TorchTeacher
    teacher = load_teacher("keras_teacher.onnx")         # ANY ONNX classifier  -> OnnxTeacher
    logits = teacher.logits(dataset.train.x)             # float32 N×K, batched

A teacher's `identity` is the sha256 of its file: the soft-target cache keys on it, so retraining or
replacing the teacher can never reuse stale logits.

The ONNX path is how a Keras / TensorFlow (or any other framework's) teacher is used: export it to
ONNX (e.g. `tf2onnx`), and ONNX Runtime computes its soft targets. The ONNX teacher receives the same
normalized arrays as the student (`Dataset.normalization` already applied); a channels-last model
(N×H×W×C, the Keras default) is detected from its input shape and fed transposed. If the model ends
in a softmax (its outputs are probabilities), `log p` is used as logits: softmax(log p / T) is exactly
the temperature-T distribution, so KD is unchanged. An ONNX model that takes `input_ids` is a text
classifier (`teachers_onnx_text.OnnxTextTeacher`). The base class `Teacher` lives in `teachers_base.py`
(re-exported here) so the text teacher can subclass it without importing this module.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekd.distill.teachers_base import Teacher
from edgekd.errors import ConfigError, ModelError


class TorchTeacher(Teacher):
    """An edgekd checkpoint (`save_model` format). `module` is the eval-mode nn.Module, usable online
    with feature taps (FitNets hints need the teacher's intermediate features)."""

    kind = "torch"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        from edgekd.models import count_params, load_model

        self.module, self.info = load_model(path)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.input_shape = tuple(int(v) for v in self.info.input_shape)
        self.num_classes = int(self.info.num_classes)
        self.params = int(count_params(self.module))

    def _batch_logits(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.module(torch.from_numpy(x)).float().numpy()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "spec": self.info.spec, "params": self.params}


class OnnxTeacher(Teacher):
    """Any ONNX image classifier run by ONNX Runtime (CPU). One input (NCHW or NHWC float), first
    output N×K logits or probabilities (`outputs`: "auto" detects probabilities, "logits", "probs")."""

    kind = "onnx"

    def __init__(self, path: Path, outputs: str = "auto") -> None:
        super().__init__(path)
        if outputs not in ("auto", "logits", "probs"):
            raise ConfigError(f"onnx teacher outputs={outputs!r}: use auto, logits or probs")
        self.outputs = outputs
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - onnxruntime is part of the host extra
            raise ModelError("onnxruntime is not installed; install edgekd[host] to use an ONNX teacher") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # warnings about unused initializers are noise for the user
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ModelError(f"teacher {path} is not a loadable ONNX model ({first}); re-export it to ONNX") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(f"teacher {path} has {len(inputs)} inputs ({names}); an image classifier takes one")
        self.input_name = inputs[0].name
        if "float" not in inputs[0].type:
            raise ModelError(f"teacher {path}: input {self.input_name!r} is {inputs[0].type}; expected a float tensor")
        self.declared_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]
        if len(self.declared_shape) != 4:
            raise ModelError(
                f"teacher {path}: input {self.input_name!r} has rank {len(self.declared_shape)}; expected N×C×H×W or N×H×W×C"
            )
        out = self.session.get_outputs()[0]
        k = out.shape[-1] if out.shape else None
        self.num_classes = k if isinstance(k, int) else None
        self.channels_last = False

    def check_compatible(self, input_shape: Sequence[int], num_classes: int, data_name: str = "dataset") -> None:
        """Decide the layout from the declared input shape; raise ConfigError if neither fits."""
        c, h, w = (int(v) for v in input_shape)
        dims = self.declared_shape[1:]

        def fits(expected: tuple[int, int, int]) -> bool:
            return all(d is None or d == e for d, e in zip(dims, expected))

        if fits((c, h, w)):
            self.channels_last = False
        elif fits((h, w, c)):
            self.channels_last = True  # a Keras-style NHWC model
        else:
            shown = ["?" if d is None else d for d in dims]
            raise ConfigError(
                f"teacher {self.path} expects inputs of shape {shown} (without the batch) but {data_name} gives "
                f"{[c, h, w]} (C×H×W); re-export the teacher for this input size or pick --image-size to match"
            )
        self.input_shape = (c, h, w)
        super().check_compatible(input_shape, num_classes, data_name)

    def _batch_logits(self, x: np.ndarray) -> np.ndarray:
        feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.channels_last else x
        try:
            out = np.asarray(self.session.run(None, {self.input_name: feed})[0], dtype=np.float32)
        except Exception as err:  # shape/type mismatch surfaces here for models with symbolic dims
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ModelError(f"teacher {self.path} failed on a batch of shape {list(feed.shape)}: {first}") from None
        out = out.reshape(out.shape[0], -1)
        if self.num_classes is None:
            self.num_classes = int(out.shape[1])
        if self._is_probs(out):
            out = np.log(np.clip(out, 1e-12, None))
        return out

    def _is_probs(self, out: np.ndarray) -> bool:
        if self.outputs != "auto":
            return self.outputs == "probs"
        return bool(out.size and out.min() >= 0.0 and out.max() <= 1.0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "channels_last": self.channels_last}


def load_teacher(path: str | Path, **options: Any) -> Teacher:
    """A Teacher from an edgekd checkpoint (.pt/.pth) or an ONNX file (.onnx); ModelError otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"teacher {p} does not exist; train one with `edgekd teacher -o RUN` and pass RUN/student.pt")
    if not p.is_file():
        raise ModelError(f"teacher {p} is a directory; pass the checkpoint file (e.g. {p}/student.pt)")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from edgekd.distill.teachers_onnx_text import OnnxTextTeacher, is_text_onnx

        if is_text_onnx(p):  # takes input_ids: a text classifier
            return OnnxTextTeacher(p, **options)
        return OnnxTeacher(p, **options)
    if suffix in (".pt", ".pth"):
        if options:
            raise ConfigError(f"teacher {p}: options {sorted(options)} apply to ONNX teachers only")
        return TorchTeacher(p)
    raise ModelError(
        f"teacher {p}: unknown file type {suffix or '(no suffix)'}; give an edgekd checkpoint (.pt) or an ONNX model (.onnx)"
    )
