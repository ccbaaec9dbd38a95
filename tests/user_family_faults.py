"""Builders that fail the ways a user's family can fail (tests/test_user_family_deploy.py puts this
directory on PYTHONPATH and names them as --family user_family_faults:NAME). Not a test module."""
from __future__ import annotations

import torch
from torch import nn


def raises(num_classes, width=8):
    raise RuntimeError(f"no weights for width {width}")


def not_a_module(num_classes, width=8):
    return {"width": width}


class Eigen(nn.Module):
    """Runs in torch, but torch.linalg.eigvalsh has no ONNX export."""

    def __init__(self, num_classes, in_channels, width):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return self.head(torch.linalg.eigvalsh(y[:, :, None] * y[:, None, :] + torch.eye(y.shape[1])))


def no_export(num_classes, in_channels, width=4):
    return Eigen(num_classes, in_channels, width)
