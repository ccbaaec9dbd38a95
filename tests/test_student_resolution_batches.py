"""A student at its own resolution trains on batches resampled as they are used
(`StudentObjective(input_size=)`): the same inputs, to float precision, as the val and test splits
resampled up front (`edgekd.data.resolution`), without holding the train views at that size."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from edgekd.data.resolution import resample_images
from edgekd.distill.losses import build_loss_stack
from edgekd.distill.trainer import StudentObjective


def _student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10))


def test_batches_are_resampled_like_the_splits():
    x = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    y = torch.arange(6) % 10
    student = _student()
    objective = StudentObjective(student, build_loss_stack([{"key": "ce"}]), input_size=20)
    _, _, logits = objective(torch.from_numpy(x), y, None, {}, {})
    expected = student(torch.from_numpy(resample_images(x, 20)))
    assert torch.allclose(logits, expected, atol=1e-5)
    # without the size the student would see the 8 px batch, which gives other logits
    assert not torch.allclose(student(torch.from_numpy(x)), expected, atol=1e-3)


def test_batches_already_at_the_size_are_left_alone():
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((4, 1, 20, 20)).astype(np.float32))
    student = _student()
    objective = StudentObjective(student, build_loss_stack([{"key": "ce"}]), input_size=20)
    _, _, logits = objective(x, torch.zeros(4, dtype=torch.long), None, {}, {})
    assert torch.equal(logits, student(x))
