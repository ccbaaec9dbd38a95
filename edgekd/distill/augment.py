"""Offline augmentation: fixed shifted views of the training images, drawn once from a seed.

The views are plain arrays, so the teacher's logits on them are cached per augmentation seed
(see `edgekd.distill.cache`): the same (train split, shift, copies, seed) always gives the same
arrays and therefore the same cache key.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def shifted_views(x: np.ndarray, y: np.ndarray, *, shift: int, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (x', y') = the originals followed by `copies` views, each image translated by a random
    (dy, dx) in [-shift, shift]², the uncovered border filled with the image's minimum value."""
    if shift <= 0 or copies <= 0:
        return x, y
    rng = np.random.default_rng(seed)
    n, _, h, w = x.shape
    views = [x]
    for _ in range(copies):
        offsets = rng.integers(-shift, shift + 1, size=(n, 2))
        out = np.empty_like(x)
        for i, (dy, dx) in enumerate(offsets):
            img = x[i]
            fill = img.min()
            shifted = np.full_like(img, fill)
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            shifted[:, yd, xd] = img[:, ys, xs]
            out[i] = shifted
        views.append(out)
    return np.concatenate(views).astype(np.float32, copy=False), np.concatenate([y] * (copies + 1))


def augment_record(shift: int, copies: int, seed: int) -> dict[str, Any] | None:
    """The part of the cache key that describes the augmentation (None when there is none)."""
    if shift <= 0 or copies <= 0:
        return None
    return {"kind": "shift", "shift": int(shift), "copies": int(copies), "seed": int(seed)}
