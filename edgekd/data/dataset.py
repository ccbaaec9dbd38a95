"""The in-memory dataset every stage consumes: normalized float32 arrays, split three ways, with a
content fingerprint that caches and profiles key on.

Pipeline (one direction): a source loader returns `RawImages` (float32 N×C×H×W in [0, 1], int64 labels,
class names) -> optional square resample -> deterministic stratified split from a seed -> per-channel
normalization from the train split -> fingerprint over the final arrays + the preprocessing record.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.errors import DataError


@dataclass(frozen=True)
class Split:
    """One split: `x` float32 N×C×H×W (normalized), `y` int64 N."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class RawImages:
    """What a source loader returns before resampling, splitting and normalization."""

    x: np.ndarray  # float32 N×C×H×W in [0, 1]
    y: np.ndarray  # int64 N, values in [0, len(class_names))
    class_names: list[str]
    source: str  # where it came from (a name or a path), for the preprocessing record


@dataclass(frozen=True)
class Dataset:
    name: str
    task: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    normalization: dict[str, list[float]]
    preprocess: dict[str, Any]
    fingerprint: str
    extra: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise DataError(f"unknown split {name!r}; use one of train, val, test")
        return getattr(self, name)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "sizes": {s: len(self.split(s)) for s in ("train", "val", "test")},
            "normalization": self.normalization,
            "preprocess": self.preprocess,
            "fingerprint": self.fingerprint,
        }


def validate_labels(y: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Labels must be integers in [0, num_classes) and every class must have a sample."""
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D array, got shape {tuple(y.shape)}")
    if y.size == 0:
        raise DataError(f"{where}: the dataset is empty")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(f"{where}: labels must be integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise DataError(f"{where}: label {bad} is out of range [0, {num_classes}); labels must be 0..{num_classes - 1}")
    counts = np.bincount(y, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise DataError(
            f"{where}: class {int(empty[0])} has no samples; every class index 0..{num_classes - 1} needs at least one"
        )
    return y


def resample_square(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resample of N×C×H×W images to N×C×size×size (align-corners=False convention).

    Done with two small interpolation matrices so it is exact, deterministic and needs numpy only.
    """
    if size < 4:
        raise DataError(f"image size {size} is too small; use 4 or more")
    n, c, h, w = x.shape
    if (h, w) == (size, size):
        return x
    rows = _interp_matrix(h, size)  # size×h
    cols = _interp_matrix(w, size)  # size×w
    out = np.einsum("ih,nchw,jw->ncij", rows, x, cols, optimize=True)
    return out.astype(np.float32)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    m = np.zeros((n_out, n_in), dtype=np.float64)
    scale = n_in / n_out
    for i in range(n_out):
        src = (i + 0.5) * scale - 0.5
        src = min(max(src, 0.0), n_in - 1)
        lo = int(np.floor(src))
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1.0 - frac
        m[i, hi] += frac
    return m


def stratified_split(
    y: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic per-class split: the same (labels, seed, fractions) always give the same indices."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"split fractions val={val_fraction}, test={test_fraction} are invalid; each in [0, 1) and summing to < 1"
        )
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        n_test = int(round(len(idx) * test_fraction))
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val : n_val + n_test])
        parts["train"].append(idx[n_val + n_test :])
    out = []
    for name in ("train", "val", "test"):
        joined = np.concatenate(parts[name]) if parts[name] else np.zeros(0, dtype=np.int64)
        rng.shuffle(joined)
        out.append(joined.astype(np.int64))
    if out[0].size == 0:
        raise DataError("the training split is empty; use smaller val/test fractions or more data")
    return out[0], out[1], out[2]


def fingerprint_arrays(arrays: dict[str, np.ndarray], preprocess: dict[str, Any]) -> str:
    """sha256 over every array's dtype, shape and bytes (in name order) plus the preprocessing record."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(json.dumps(list(a.shape)).encode())
        h.update(a.tobytes())
    h.update(json.dumps(preprocess, sort_keys=True, default=str).encode())
    return h.hexdigest()


def build_image_dataset(
    raw: RawImages,
    *,
    name: str,
    image_size: int | None,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> Dataset:
    x = raw.x
    if image_size is not None and tuple(x.shape[2:]) == (int(image_size), int(image_size)):
        image_size = None  # already that size: the same data, so the same fingerprint as asking for nothing
    if image_size is not None:
        x = resample_square(x, int(image_size))
    tr, va, te = stratified_split(raw.y, seed, val_fraction, test_fraction)
    mean = x[tr].mean(axis=(0, 2, 3))
    std = x[tr].std(axis=(0, 2, 3))
    std = np.where(std < 1e-6, 1.0, std)  # a constant channel must not blow up to inf

    def norm(idx: np.ndarray) -> Split:
        xs = (x[idx] - mean[None, :, None, None]) / std[None, :, None, None]
        return Split(np.ascontiguousarray(xs, dtype=np.float32), raw.y[idx].astype(np.int64))

    train, val, test = norm(tr), norm(va), norm(te)
    preprocess = {
        "source": raw.source,
        "image_size": image_size,
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "scale": "[0,1]",
        "normalize": "per-channel mean/std of train split",
    }
    normalization = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    fp = fingerprint_arrays(
        {f"{s}_{k}": getattr(split, k) for s, split in (("train", train), ("val", val), ("test", test)) for k in ("x", "y")},
        preprocess,
    )
    return Dataset(
        name=name,
        task="image",
        train=train,
        val=val,
        test=test,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        num_classes=len(raw.class_names),
        class_names=list(raw.class_names),
        normalization=normalization,
        preprocess=preprocess,
        fingerprint=fp,
    )
