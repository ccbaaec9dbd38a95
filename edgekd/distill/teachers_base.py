"""The teacher interface: a frozen classifier that turns a dataset's arrays into logits, identified by
its file's sha256 (the soft-target cache keys on it). Kinds of teacher live in `teachers.py` (edgekd
checkpoints, ONNX image classifiers, and `load_teacher`) and `teachers_onnx_text.py` (ONNX text
classifiers); both build on this class, which imports nothing of theirs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekd.errors import ConfigError
from edgekd.fileio import sha256_file


class Teacher:
    """A frozen classifier that maps normalized N×C×H×W float32 arrays to N×K logits."""

    kind = "teacher"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.identity = sha256_file(path)
        self.input_shape: tuple[int, ...] | None = None
        self.num_classes: int | None = None

    def logits(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Teacher logits for `x` (float32 N×C×H×W), computed in batches; float32 N×K."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        parts = [self._batch_logits(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
        return np.concatenate(parts, axis=0).astype(np.float32, copy=False)

    def _batch_logits(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_compatible(self, input_shape: Sequence[int], num_classes: int, data_name: str = "dataset") -> None:
        """Raise ConfigError if this teacher cannot take the dataset's inputs or classes."""
        want = tuple(int(v) for v in input_shape)
        if self.input_shape is not None and tuple(self.input_shape) != want:
            raise ConfigError(
                f"teacher {self.path} expects inputs of shape {list(self.input_shape)} but {data_name} gives "
                f"{list(want)}; use a matching --image-size or a teacher trained on this data"
            )
        if self.num_classes is not None and int(self.num_classes) != int(num_classes):
            raise ConfigError(
                f"teacher {self.path} predicts {self.num_classes} classes but {data_name} has {num_classes}; "
                f"use a teacher trained on this dataset"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "identity": self.identity,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "num_classes": self.num_classes,
        }
