"""A small real image dataset that is not digits, made in the test from photos scikit-learn ships
(`load_sample_images`: a photo of a Chinese temple and one of a flower, 427x640 RGB, no download).

Class 0 = patches of the temple photo, class 1 = patches of the flower photo, cut at seeded random
places: real pixels, uint8 0..255, channels last (N x H x W x 3) — the way a user's camera data
arrives, so loading it exercises the scale to [0, 1], the channel move and, with --image-size, the
resize."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_photo_patches_npz(path: Path, *, n_per_class: int = 120, size: int = 12, seed: int = 0,
                           gray: bool = False) -> Path:
    """Patches `size` x `size`, uint8; RGB channels last (N x H x W x 3), or with `gray` luminance
    without a channel axis (N x H x W), the two layouts users' files come in."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, img in enumerate(load_sample_images().images):
        h, w, _ = img.shape
        for _ in range(n_per_class):
            # a patch 2-4x larger than `size`, block-averaged down: a plain picture, not a few pixels
            k = int(rng.integers(2, 5))
            top, left = int(rng.integers(0, h - size * k)), int(rng.integers(0, w - size * k))
            patch = img[top:top + size * k, left:left + size * k].astype(np.float32)
            patch = patch.reshape(size, k, size, k, 3).mean(axis=(1, 3))
            if gray:
                patch = patch @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            xs.append(np.clip(np.round(patch), 0, 255).astype(np.uint8))
            ys.append(label)
    order = rng.permutation(len(ys))
    np.savez(path, x=np.stack(xs)[order], y=np.asarray(ys, dtype=np.int64)[order],
             class_names=np.array(["temple", "flower"]))
    return path
