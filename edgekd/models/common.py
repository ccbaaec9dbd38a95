"""Small pieces shared by the image families: where to downsample, channel rounding, conv-bn-act."""
from __future__ import annotations

import math

from torch import nn

# Stop halving once the feature map is this small: an 8x8 digit gets one stride-2 step, a 32x32
# image three, so every family works from 8x8 up to 32x32 and beyond with the same spec.
MIN_FEATURE_SIZE = 4


def downsample_count(height: int, width: int) -> int:
    """How many stride-2 steps bring min(height, width) down to about MIN_FEATURE_SIZE."""
    size, steps = min(height, width), 0
    while size >= 2 * MIN_FEATURE_SIZE:
        size = math.ceil(size / 2)
        steps += 1
    return steps


def stride_plan(positions: int, height: int, width: int) -> list[int]:
    """Strides for `positions` places where a network may downsample (0 = the stem).

    Stage starts 1, 2, ... are strided first (they also widen the channels); only when the input is
    large enough to need more steps than there are stages does the stem downsample too. Steps that do
    not fit are left to the global average pool.
    """
    steps = downsample_count(height, width)
    order = list(range(1, positions)) + [0]
    strided = set(order[:steps])
    return [2 if i in strided else 1 for i in range(positions)]


def round_channels(value: float, divisor: int = 4, minimum: int = 4) -> int:
    """Round a scaled channel count to a multiple of `divisor` (never below `minimum` or 10% down)."""
    rounded = max(minimum, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvBNAct(nn.Sequential):
    """conv (no bias) -> BatchNorm2d -> activation; `act=None` leaves the activation out."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            # not in-place: a forward hook (FitNets tap, activation count) may hold the BN output
            layers.append(act())
        super().__init__(*layers)


class ImageClassifier(nn.Module):
    """features -> global average pool -> flatten -> classifier; the layout every image family shares,
    so taps can name ``features`` (last feature map) and ``classifier`` (logits) in any family."""

    def __init__(self, features: nn.Module, feature_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(feature_channels, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.flatten(self.pool(self.features(x))))
