"""Pieces shared by the ImageNet-scale families (`mobilenetv2`, `mobilenetv3`, `efficientnet_lite`,
`resnet_basic`): channel rounding as the papers do it, the real networks' stride schedule, squeeze-
and-excitation, a classifier with a hidden head layer, and the resolution check.

These families follow the published layouts exactly at 96-300 px (so their parameter and MAC counts
can be checked against the papers, `tests/test_scaled_families.py`); only at tiny inputs (tests at
8-16 px) do they drop stride-2 steps that would shrink the map below one pixel.
"""
from __future__ import annotations

import math

from torch import nn

from edgekd.errors import ConfigError


def make_divisible(value: float, divisor: int = 8, minimum: int | None = None) -> int:
    """Channels rounded to a multiple of `divisor` (at least `minimum`, never more than 10 % below
    `value`): the rounding of MobileNetV2/V3 and EfficientNet's reference code."""
    minimum = divisor if minimum is None else minimum
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def real_strides(positions: int, height: int, width: int) -> list[int]:
    """Strides for `positions` downsampling places in network order (stem first), as the real network
    has them (all 2) when the input allows; at inputs under 2**positions px only the first
    floor(log2(min side)) places stride, so the last map keeps at least one pixel."""
    steps = min(positions, max(0, int(math.floor(math.log2(max(1, min(height, width)))))))
    return [2 if i < steps else 1 for i in range(positions)]


def check_range(family: str, key: str, value: float, low: float, high: float) -> None:
    """ConfigError naming the family, key and allowed range unless low <= value <= high."""
    if not low <= value <= high:
        raise ConfigError(f"model {family!r}: {key}={value} must be in {low}..{high}")


class SqueezeExcite(nn.Module):
    """x * gate(mean over H, W): 1x1 reduce -> ReLU -> 1x1 expand -> hard-sigmoid (MobileNetV3)."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))


class HeadClassifier(nn.Module):
    """features -> global average pool -> `head` (Linear + activation, MobileNetV3's 1280/1024-wide
    layer) -> `classifier` (Linear). Same tap names as `common.ImageClassifier`."""

    def __init__(self, features: nn.Module, feature_channels: int, head_channels: int, num_classes: int,
                 act: type[nn.Module] = nn.Hardswish) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.head = nn.Sequential(nn.Linear(feature_channels, head_channels), act())
        self.classifier = nn.Linear(head_channels, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.head(self.flatten(self.pool(self.features(x)))))
