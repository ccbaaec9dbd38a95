"""A dataset seen at a student's own input resolution (a spec with ``resolution=r``).

The teacher keeps the dataset as loaded (its soft targets are cached on those arrays); the student
trains, validates and is tested on the same samples, in the same order, resampled to r x r. Bilinear
resampling (half-pixel centres, `dataset.resample_square`) has weights that sum to one, so it commutes
with the per-channel ``(x - mean) / std``: resampling the normalized arrays is exactly "resize the
[0, 1] image to r x r, then normalize with the dataset's mean/std", which is the preprocessing
recorded in the student's checkpoint, its artifacts' manifests and its bundle. When the data was
loaded at its native size, that is the same resize a device applies to a raw image.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgekd.data.dataset import Dataset, Split, fingerprint_arrays, resample_square


def resample_images(x: np.ndarray, size: int, chunk: int = 512) -> np.ndarray:
    """N x C x H x W float32 -> N x C x size x size (bilinear, half-pixel centres), in chunks so a
    large split at 224 px does not need one huge intermediate."""
    if x.ndim != 4 or tuple(x.shape[2:]) == (size, size):
        return x
    parts = [resample_square(x[i:i + chunk], int(size)) for i in range(0, max(1, x.shape[0]), chunk)]
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)


def at_resolution(ds: Dataset, input_shape: tuple[int, ...]) -> Dataset:
    """`ds` with every image split resampled to `input_shape` (C, r, r); the same Dataset when the
    shape already matches or the data are not images. The preprocessing record gains
    ``student_resize`` (from, to, method) and the fingerprint changes with it; labels, class names and
    normalization are kept."""
    shape = tuple(int(d) for d in input_shape)
    if getattr(ds, "task", "image") != "image" or shape == tuple(ds.input_shape):
        return ds
    size = shape[1]

    def view(split: Split) -> Split:
        return Split(resample_images(split.x, size), split.y)

    train, val, test = view(ds.train), view(ds.val), view(ds.test)
    preprocess: dict[str, Any] = {
        **dict(ds.preprocess),
        "student_resize": {"from": [int(d) for d in ds.input_shape[1:]], "to": [size, size],
                           "method": "bilinear", "align_corners": False},
    }
    fp = fingerprint_arrays(
        {f"{s}_{k}": getattr(split, k) for s, split in (("train", train), ("val", val), ("test", test)) for k in ("x", "y")},
        preprocess,
    )
    return dataclasses.replace(ds, train=train, val=val, test=test, input_shape=shape,
                               preprocess=preprocess, fingerprint=fp)
