"""`mobilenet`: MobileNetV2-style students built from inverted residual blocks with depthwise convs."""
from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.common import ConvBNAct, ImageClassifier, round_channels, stride_plan
from edgekd.models.scaled import SqueezeExcite
from edgekd.models.spec import register_family

# Output channels of the stem and of each stage at width 1.0 (MobileNetV2's progression, trimmed
# for small inputs); deeper stages repeat the last entry.
STEM_CHANNELS = 16
STAGE_CHANNELS = [16, 24, 32, 64, 96, 160]


class InvertedResidual(nn.Module):
    """1x1 expand -> act -> kxk depthwise (stride) -> act -> [squeeze-excite] -> 1x1 linear projection,
    plus the identity shortcut when stride is 1 and the channel count is unchanged. The defaults are
    MobileNetV2's block (3x3, ReLU6, no SE; Sandler 2018); EfficientNet-lite's MBConv takes `kernel`,
    MobileNetV3's bneck `hidden`, `kernel`, `act` and `se_channels`. The expand conv is left out when
    the hidden width equals the input's (expansion 1)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int = 1, *, kernel: int = 3,
                 hidden: int | None = None, act: type[nn.Module] = nn.ReLU6, se_channels: int = 0) -> None:
        super().__init__()
        hidden = in_ch * expansion if hidden is None else hidden
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(ConvBNAct(in_ch, hidden, 1, act=act))
        layers.append(ConvBNAct(hidden, hidden, kernel, stride=stride, groups=hidden, act=act))
        if se_channels:
            layers.append(SqueezeExcite(hidden, se_channels))
        layers.append(ConvBNAct(hidden, out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x):  # type: ignore[no-untyped-def]
        out = self.block(x)
        return x + out if self.use_residual else out


def _validate(kw: dict) -> None:
    if not 0.05 <= kw["width"] <= 4.0:
        raise ConfigError(f"model 'mobilenet': width multiplier must be in 0.05..4.0, got {kw['width']}")
    if not 1 <= kw["depth"] <= 8:
        raise ConfigError(f"model 'mobilenet': depth (stages) must be in 1..8, got {kw['depth']}")
    if not 1 <= kw["expansion"] <= 8:
        raise ConfigError(f"model 'mobilenet': expansion must be in 1..8, got {kw['expansion']}")
    if not 1 <= kw["blocks"] <= 4:
        raise ConfigError(f"model 'mobilenet': blocks per stage must be in 1..4, got {kw['blocks']}")


@register_family(
    "mobilenet",
    role="student",
    defaults={"width": 0.5, "depth": 3, "expansion": 4, "blocks": 2},
    search_space=[
        "mobilenet:width=0.25,depth=1,blocks=1",
        "mobilenet:width=0.25,depth=2",
        "mobilenet:width=0.5,depth=2",
        "mobilenet:width=0.5,depth=3",
        "mobilenet:width=0.75,depth=3",
        "mobilenet:width=1.0,depth=3",
        "mobilenet:width=1.0,depth=4",
        "mobilenet:width=1.5,depth=4",
    ],
    validate=_validate,
)
def build_mobilenet(
    input_shape: tuple[int, ...], num_classes: int, *, width: float, depth: int, expansion: int, blocks: int
) -> nn.Module:
    """MobileNetV2-style: a 3x3 stem, then `depth` stages of `blocks` inverted residual blocks
    (1x1 expand by `expansion` -> 3x3 depthwise -> 1x1 linear projection, identity shortcut when the
    shape allows). Channels are MobileNetV2's 16, 24, 32, 64, ... scaled by the `width` multiplier.
    Stages start with stride 2 as the input size needs; global average pool, Linear classifier."""
    stem_ch = round_channels(STEM_CHANNELS * width)
    # stage 0 runs at the stem resolution; the stem strides only if the stages cannot do it all
    strides = stride_plan(depth, input_shape[1], input_shape[2])
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], stem_ch, 3, stride=strides[0], act=nn.ReLU6)]
    in_ch = stem_ch
    for stage in range(depth):
        out_ch = round_channels(STAGE_CHANNELS[min(stage, len(STAGE_CHANNELS) - 1)] * width)
        for b in range(blocks):
            stride = strides[stage] if b == 0 and stage > 0 else 1
            layers.append(InvertedResidual(in_ch, out_ch, stride, expansion))
            in_ch = out_ch
    return ImageClassifier(nn.Sequential(*layers), in_ch, num_classes)
