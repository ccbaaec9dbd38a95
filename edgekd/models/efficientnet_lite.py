"""`efficientnet_lite`: EfficientNet-Lite (Tan & Le 2019; the TensorFlow "lite" variants): the
EfficientNet-B0 block layout with no squeeze-excite and ReLU6, the INT8- and TFLite-friendly one."""
from __future__ import annotations

import math

from torch import nn

from edgekd.models.common import ConvBNAct, ImageClassifier
from edgekd.models.mobilenet import InvertedResidual
from edgekd.models.scaled import check_range, make_divisible, real_strides
from edgekd.models.spec import register_family

# (expansion, kernel, stride, output channels, repeats) of EfficientNet-B0
B0_BLOCKS = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
             (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
STEM, HEAD = 32, 1280  # lite: stem and head are not scaled


def _validate(kw: dict) -> None:
    check_range("efficientnet_lite", "width", kw["width"], 0.25, 2.0)
    check_range("efficientnet_lite", "depth", kw["depth"], 0.5, 2.5)


@register_family(
    "efficientnet_lite",
    role="student",
    scale="real",
    defaults={"width": 1.0, "depth": 1.0, "resolution": 0},
    search_space=[  # ordered by MACs at the spec's own resolution (checked by a test)
        "efficientnet_lite:width=0.5,depth=1.0,resolution=96",
        "efficientnet_lite:width=0.75,depth=1.0,resolution=128",
        "efficientnet_lite:width=1.0,depth=1.0,resolution=128",
        "efficientnet_lite:width=1.0,depth=1.0,resolution=160",
        "efficientnet_lite:width=1.0,depth=1.0,resolution=192",
        "efficientnet_lite:width=1.0,depth=1.0,resolution=224",
        "efficientnet_lite:width=1.0,depth=1.1,resolution=240",
        "efficientnet_lite:width=1.1,depth=1.2,resolution=260",
    ],
    validate=_validate,
)
def build_efficientnet_lite(input_shape: tuple[int, ...], num_classes: int, *, width: float, depth: float) -> nn.Module:
    """EfficientNet-Lite: a 3x3 stride-2 stem of 32 channels, EfficientNet-B0's seven MBConv stages
    (expand -> 3x3/5x5 depthwise -> linear projection, ReLU6, no squeeze-excite), a 1x1 conv to 1280
    channels, global average pool, Linear classifier. `width` scales the stage channels (multiples of
    8), `depth` the repeats of the middle stages (ceil; the first and last stage and the stem/head stay
    fixed, as in the lite variants): lite0 = 1.0/1.0 at 224 px, lite1 = 1.0/1.1 at 240, lite2 =
    1.1/1.2 at 260, lite3 = 1.2/1.4 at 280, lite4 = 1.4/1.8 at 300. `resolution` (0 = the data's size)
    fixes the square input. lite0 at 224 px, 1000 classes: 4.65 M params / 385 M MACs."""
    strides = real_strides(5, input_shape[1], input_shape[2])
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], STEM, 3, stride=strides[0], act=nn.ReLU6)]
    in_ch, place = STEM, 1
    for i, (t, k, s, c, n) in enumerate(B0_BLOCKS):
        out_ch = make_divisible(c * width)
        repeats = n if i in (0, len(B0_BLOCKS) - 1) else int(math.ceil(depth * n))
        for j in range(repeats):
            stride = 1
            if j == 0 and s == 2:
                stride, place = strides[place], place + 1
            layers.append(InvertedResidual(in_ch, out_ch, stride, t, kernel=k))  # MBConv without SE
            in_ch = out_ch
    layers.append(ConvBNAct(in_ch, HEAD, 1, act=nn.ReLU6))
    return ImageClassifier(nn.Sequential(*layers), HEAD, num_classes)
