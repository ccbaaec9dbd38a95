"""An example of "bring your own family": a user's PyTorch model builder that edgekd searches,
counts, predicts, distills, exports and deploys like a built-in family.

    edgekd models --family my_models:build --family-grid examples/my_grid.yaml   (with examples/ on PYTHONPATH)

`build` returns an ordinary nn.Module mapping N x C x H x W images to N x num_classes logits.
edgekd passes `num_classes` and `in_channels` because the signature takes them; every other
argument comes from the grid file (each combination of its values is one student).

The network is a small ConvMixer-style classifier: a strided patch convolution, then `depth`
blocks of a depthwise 3x3 conv (with a residual) and a grouped 1x1 conv, GELU and BatchNorm
between them — layer kinds (GELU, grouped convolutions) the built-in families do not use.
"""
from __future__ import annotations

from torch import nn


class MixerBlock(nn.Module):
    def __init__(self, width: int, groups: int):
        super().__init__()
        self.spatial = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=width), nn.GELU(),
                                     nn.BatchNorm2d(width))
        self.channel = nn.Sequential(nn.Conv2d(width, width, 1, groups=groups), nn.GELU(), nn.BatchNorm2d(width))

    def forward(self, x):
        return self.channel(x + self.spatial(x))


def build(num_classes: int, in_channels: int = 1, width: int = 16, depth: int = 2, patch: int = 2,
          groups: int = 1) -> nn.Module:
    """ConvMixer-style: patch conv, `depth` (depthwise + grouped pointwise) blocks, GELU, BatchNorm."""
    if width % groups:
        raise ValueError(f"width {width} is not a multiple of groups {groups}")
    stem = nn.Sequential(nn.Conv2d(in_channels, width, patch, stride=patch), nn.GELU(), nn.BatchNorm2d(width))
    blocks = [MixerBlock(width, groups) for _ in range(depth)]
    return nn.Sequential(stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
