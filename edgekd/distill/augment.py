"""Offline augmentation: shifted views of the training images, drawn from a seed, so the teacher's
logits on exactly those views can be cached (see `edgekd.distill.cache`).

Two ways to use the views:
- `copies` (`shifted_views`): the originals plus `copies` fixed views, all trained on every epoch
  (the epoch grows by a factor copies + 1).
- `draws` (`shift_draws`): `draws` independent views of the train split; epoch e trains on draw
  (e − 1) mod draws only, so an epoch costs what an un-augmented one does, yet the student sees a
  new view of every image each epoch (until the draws cycle). The teacher labels every draw once
  (cached): the soft targets are for the very view the student sees ("consistent teaching",
  Beyer et al., CVPR 2022), without running the teacher on every step.

The same (train split, shift, copies|draws, seed) always gives the same arrays and so the same
cache key.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def shift_images(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each image x[i] (C×H×W) translated by offsets[i] = (dy, dx), the uncovered border filled with
    that image's minimum value. Vectorized per distinct offset."""
    n, _, h, w = x.shape
    out = np.empty_like(x)
    fills = x.reshape(n, -1).min(axis=1)
    for dy, dx in np.unique(offsets, axis=0):
        idx = np.flatnonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))
        shifted = np.broadcast_to(fills[idx, None, None, None], (len(idx), *x.shape[1:])).copy()
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        shifted[:, :, yd, xd] = x[idx][:, :, ys, xs]
        out[idx] = shifted
    return out


def shifted_views(x: np.ndarray, y: np.ndarray, *, shift: int, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (x', y') = the originals followed by `copies` views, each image translated by a random
    (dy, dx) in [-shift, shift]², the uncovered border filled with the image's minimum value."""
    if shift <= 0 or copies <= 0:
        return x, y
    rng = np.random.default_rng(seed)
    views = [x]
    for _ in range(copies):
        views.append(shift_images(x, rng.integers(-shift, shift + 1, size=(x.shape[0], 2))))
    return np.concatenate(views).astype(np.float32, copy=False), np.concatenate([y] * (copies + 1))


def shift_draws(x: np.ndarray, y: np.ndarray, *, shift: int, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`draws` stacked views of the split (rows [d·N, (d+1)·N) are draw d), each image shifted by a
    random (dy, dx) in [-shift, shift]². Draw 0 is the un-shifted split, so the first epoch (and a
    cycle's start) sees the clean images. Labels are repeated per draw."""
    if shift <= 0 or draws <= 1:
        return x, y
    rng = np.random.default_rng(seed)
    views = [x] + [shift_images(x, rng.integers(-shift, shift + 1, size=(x.shape[0], 2))) for _ in range(draws - 1)]
    return np.concatenate(views).astype(np.float32, copy=False), np.concatenate([y] * draws)


def augment_record(shift: int, copies: int, seed: int, draws: int = 0, mixup: float = 0.0) -> dict[str, Any] | None:
    """The part of the cache key that describes the augmentation (None when there is none)."""
    if mixup > 0 and draws > 1:
        return {"kind": "shift-mix-draws", "shift": int(max(shift, 0)), "draws": int(draws), "seed": int(seed),
                "mixup": float(mixup)}
    if shift > 0 and draws > 1:
        return {"kind": "shift-draws", "shift": int(shift), "draws": int(draws), "seed": int(seed)}
    if shift <= 0 or copies <= 0:
        return None
    return {"kind": "shift", "shift": int(shift), "copies": int(copies), "seed": int(seed)}


def mix_draws(x: np.ndarray, y: np.ndarray, num_classes: int, *, draws: int, alpha: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixup views for function matching (Zhang et al., "mixup", ICLR 2018; Beyer et al., "Knowledge
    distillation: a good teacher is patient and consistent", CVPR 2022). `x`, `y` hold `draws`
    stacked views (rows [d·N, (d+1)·N) are draw d, as `shift_draws` returns). In every draw d ≥ 1
    each image i is mixed with a partner j = π_d(i) of the same draw (π_d a random permutation):

        λ_i ~ Beta(α, α),  λ_i ← max(λ_i, 1 − λ_i)        (image i dominates: y_i stays the arg-max)
        x'_i = λ_i · x_i + (1 − λ_i) · x_j
        q_i  = λ_i · onehot(y_i) + (1 − λ_i) · onehot(y_j)  (the mixed hard label, K columns)

    Draw 0 stays clean (q = onehot(y)). Returns (x', q) with q float32 N·draws × K; `y` keeps the
    dominant labels (what accuracy is counted against). Like the shifts, the mixes are a fixed
    function of the seed, so the teacher's logits on exactly these images are cached per seed."""
    n_all = x.shape[0]
    if alpha <= 0 or draws <= 1 or n_all % draws:
        raise ValueError(f"mix_draws needs alpha > 0 and {n_all} rows in {draws} > 1 equal draws")
    n = n_all // draws
    rng = np.random.default_rng([int(seed), 1])  # a stream of its own, apart from the shifts'
    q = np.zeros((n_all, num_classes), dtype=np.float32)
    q[np.arange(n_all), y] = 1.0
    out = x.astype(np.float32, copy=True)
    for d in range(1, draws):
        rows = np.arange(d * n, (d + 1) * n)
        partner = rows[rng.permutation(n)]
        lam = rng.beta(alpha, alpha, size=n).astype(np.float32)
        lam = np.maximum(lam, 1.0 - lam)
        shape = (n,) + (1,) * (x.ndim - 1)
        out[rows] = lam.reshape(shape) * x[rows] + (1.0 - lam).reshape(shape) * x[partner]
        q[rows] *= lam[:, None]
        q[rows, y[partner]] += 1.0 - lam
    return out, q


def tile_draws(x: np.ndarray, y: np.ndarray, draws: int) -> tuple[np.ndarray, np.ndarray]:
    """`draws` copies of the split stacked like `shift_draws` (for mixing without a shift)."""
    return np.concatenate([x] * draws).astype(np.float32, copy=False), np.concatenate([y] * draws)
