"""Any ONNX text classifier as a teacher: soft targets computed by ONNX Runtime from token ids.

A model qualifies when one of its inputs is named `input_ids` (integer). It may also take
`attention_mask` (fed `ids != pad_id`) and `token_type_ids` (fed zeros: single-sentence tasks), the
input names that Hugging Face / Optimum exports use. Its first output must be (N, K) logits or
probabilities (as for image ONNX teachers, probabilities become log-probabilities).

The teacher reads the dataset's token ids as they are, so the dataset must be tokenized with the
teacher's own tokenizer: pass it with `--tokenizer DIR` (its tokenizer.json or vocab.txt).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekd.distill.teachers_base import Teacher
from edgekd.errors import ConfigError, ModelError

KNOWN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _session(path: Path) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own exception types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelError(f"teacher {path} is not a loadable ONNX model ({first}); re-export it to ONNX") from None


def is_text_onnx(path: str | Path) -> bool:
    """True when the ONNX model at `path` takes an `input_ids` input."""
    return any(i.name == "input_ids" for i in _session(Path(path)).get_inputs())


class OnnxTextTeacher(Teacher):
    """An ONNX sequence classifier fed `input_ids` (+ `attention_mask`, `token_type_ids`)."""

    kind = "onnx-text"

    def __init__(self, path: Path, outputs: str = "auto", pad_id: int = 0) -> None:
        super().__init__(path)
        if outputs not in ("auto", "logits", "probs"):
            raise ConfigError(f"onnx teacher outputs={outputs!r}: use auto, logits or probs")
        self.outputs, self.pad_id = outputs, int(pad_id)
        self.session = _session(path)
        inputs = self.session.get_inputs()
        unknown = [i.name for i in inputs if i.name not in KNOWN_INPUTS]
        if unknown:
            raise ModelError(f"teacher {path}: inputs {unknown} are not text-classifier inputs "
                             f"({', '.join(KNOWN_INPUTS)}); re-export it with those names")
        self.feeds = {i.name: (np.int32 if "int32" in i.type else np.int64) for i in inputs}
        seq = inputs[0].shape[1] if len(inputs[0].shape) == 2 else None
        self.input_shape = (seq,) if isinstance(seq, int) else None
        k = self.session.get_outputs()[0].shape[-1]
        self.num_classes = k if isinstance(k, int) else None

    def check_compatible(self, input_shape: Sequence[int], num_classes: int, data_name: str = "dataset") -> None:
        if self.input_shape is None:  # a dynamic sequence axis takes any length
            self.input_shape = tuple(int(v) for v in input_shape)
        super().check_compatible(input_shape, num_classes, data_name)

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        ids = np.rint(np.asarray(x)).astype(np.int64) if np.asarray(x).dtype.kind == "f" else np.asarray(x, np.int64)
        if ids.shape[0] == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        parts = [self._batch_logits(ids[i:i + batch_size]) for i in range(0, ids.shape[0], batch_size)]
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    def _batch_logits(self, ids: np.ndarray) -> np.ndarray:
        values = {"input_ids": ids, "attention_mask": (ids != self.pad_id), "token_type_ids": np.zeros_like(ids)}
        feed = {name: np.ascontiguousarray(values[name], dtype=dtype) for name, dtype in self.feeds.items()}
        try:
            out = np.asarray(self.session.run(None, feed)[0], dtype=np.float32)
        except Exception as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise ModelError(f"teacher {self.path} failed on ids of shape {list(ids.shape)}: {first}; "
                             "was the data tokenized with the teacher's tokenizer (--tokenizer)?") from None
        out = out.reshape(out.shape[0], -1)
        if self.num_classes is None:
            self.num_classes = int(out.shape[1])
        probs = self.outputs == "probs" or (self.outputs == "auto" and out.min() >= 0.0 and out.max() <= 1.0
                                             and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))
        return np.log(np.clip(out, 1e-12, None)) if probs else out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "inputs": list(self.feeds), "pad_id": self.pad_id}
