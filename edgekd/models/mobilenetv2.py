"""`mobilenetv2`: the ImageNet MobileNetV2 (Sandler et al., CVPR 2018), width multiplier 0.35-1.4,
input resolution part of the spec (96-224 px in the paper's tables)."""
from __future__ import annotations

from torch import nn

from edgekd.models.common import ConvBNAct, ImageClassifier
from edgekd.models.mobilenet import InvertedResidual
from edgekd.models.scaled import check_range, make_divisible, real_strides
from edgekd.models.spec import register_family

# (expansion t, output channels c, repeats n, stride s) of the paper's Table 2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
STEM, LAST = 32, 1280


def _validate(kw: dict) -> None:
    check_range("mobilenetv2", "width", kw["width"], 0.1, 2.0)


@register_family(
    "mobilenetv2",
    role="student",
    scale="real",
    defaults={"width": 1.0, "resolution": 0},
    search_space=[  # ordered by MACs at the spec's own resolution (checked by a test)
        "mobilenetv2:width=0.35,resolution=96",
        "mobilenetv2:width=0.5,resolution=128",
        "mobilenetv2:width=0.75,resolution=128",
        "mobilenetv2:width=0.75,resolution=160",
        "mobilenetv2:width=1.0,resolution=160",
        "mobilenetv2:width=1.0,resolution=192",
        "mobilenetv2:width=1.0,resolution=224",
        "mobilenetv2:width=1.4,resolution=224",
    ],
    validate=_validate,
)
def build_mobilenetv2(input_shape: tuple[int, ...], num_classes: int, *, width: float) -> nn.Module:
    """MobileNetV2 as published: a 3x3 stride-2 stem of 32 channels, 17 inverted residual blocks
    (1x1 expand by t -> 3x3 depthwise -> 1x1 linear projection; identity shortcut where the shape
    allows) in the paper's (t, c, n, s) stages, a 1x1 conv to 1280 channels (scaled up only for
    width > 1), global average pool and a Linear classifier. Channels are scaled by `width` and rounded
    to multiples of 8. `resolution` (0 = the data's size) fixes the square input. At 224 px, 1000
    classes: width 1.0 = 3.50 M params / 300 M MACs (the paper's figures)."""
    strides = real_strides(5, input_shape[1], input_shape[2])  # stem, then the four strided stages
    stem = make_divisible(STEM * width)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], stem, 3, stride=strides[0], act=nn.ReLU6)]
    in_ch, place = stem, 1
    for t, c, n, s in SETTINGS:
        out_ch = make_divisible(c * width)
        for i in range(n):
            stride = 1
            if i == 0 and s == 2:
                stride, place = strides[place], place + 1
            layers.append(InvertedResidual(in_ch, out_ch, stride, t))
            in_ch = out_ch
    last = make_divisible(LAST * max(1.0, width))
    layers.append(ConvBNAct(in_ch, last, 1, act=nn.ReLU6))
    return ImageClassifier(nn.Sequential(*layers), last, num_classes)
