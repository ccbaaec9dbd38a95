"""`mobilenetv3`: MobileNetV3-Small and -Large (Howard et al., ICCV 2019): inverted residuals with
squeeze-and-excitation and hard-swish, width multiplier, input resolution part of the spec."""
from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.common import ConvBNAct
from edgekd.models.mobilenet import InvertedResidual
from edgekd.models.scaled import HeadClassifier, check_range, make_divisible, real_strides
from edgekd.models.spec import register_family

# (kernel, expanded channels, output channels, squeeze-excite, activation RE|HS, stride): the paper's
# Tables 1 (large) and 2 (small)
LAYOUTS = {
    "large": [
        (3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
        (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
        (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
        (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
        (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1),
    ],
    "small": [
        (3, 16, 16, True, "RE", 2), (3, 72, 24, False, "RE", 2), (3, 88, 24, False, "RE", 1),
        (5, 96, 40, True, "HS", 2), (5, 240, 40, True, "HS", 1), (5, 240, 40, True, "HS", 1),
        (5, 120, 48, True, "HS", 1), (5, 144, 48, True, "HS", 1), (5, 288, 96, True, "HS", 2),
        (5, 576, 96, True, "HS", 1), (5, 576, 96, True, "HS", 1),
    ],
}
HEAD = {"large": 1280, "small": 1024}  # the hidden Linear after pooling (scaled by width, as torchvision)
ACTS = {"RE": nn.ReLU, "HS": nn.Hardswish}


def _validate(kw: dict) -> None:
    if kw["layout"] not in LAYOUTS:
        raise ConfigError(f"model 'mobilenetv3': layout={kw['layout']} must be one of {', '.join(LAYOUTS)}")
    check_range("mobilenetv3", "width", kw["width"], 0.1, 2.0)


@register_family(
    "mobilenetv3",
    role="student",
    scale="real",
    defaults={"layout": "large", "width": 1.0, "resolution": 0},
    search_space=[  # ordered by MACs at the spec's own resolution (checked by a test)
        "mobilenetv3:layout=small,width=0.75,resolution=96",
        "mobilenetv3:layout=small,width=1.0,resolution=128",
        "mobilenetv3:layout=large,width=0.75,resolution=128",
        "mobilenetv3:layout=small,width=1.0,resolution=224",
        "mobilenetv3:layout=large,width=1.0,resolution=160",
        "mobilenetv3:layout=large,width=0.75,resolution=224",
        "mobilenetv3:layout=large,width=1.0,resolution=224",
    ],
    validate=_validate,
)
def build_mobilenetv3(input_shape: tuple[int, ...], num_classes: int, *, layout: str, width: float) -> nn.Module:
    """MobileNetV3 as published, `layout` small or large: a 3x3 stride-2 hard-swish stem of 16
    channels, the paper's bneck blocks (expand -> depthwise 3x3/5x5 -> squeeze-excite with hard-sigmoid
    gate where the table says -> linear projection; ReLU or hard-swish), a 1x1 conv to 6x the last
    block's channels, global average pool, a hidden Linear (1280 large / 1024 small, times `width`) with hard-swish,
    and the Linear classifier. Channels scale with `width` (multiples of 8); `resolution` (0 = the
    data's size) fixes the square input. At 224 px, 1000 classes: large 5.48 M params / 217 M MACs,
    small 2.54 M / 57 M (the paper's 219 M and 56 M MACs; torchvision's parameter counts)."""
    blocks = LAYOUTS[layout]
    strides = real_strides(1 + sum(1 for b in blocks if b[5] == 2), input_shape[1], input_shape[2])
    stem = make_divisible(16 * width)
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], stem, 3, stride=strides[0], act=nn.Hardswish)]
    in_ch, place = stem, 1
    for kernel, exp, out, se, act, s in blocks:
        stride = 1
        if s == 2:
            stride, place = strides[place], place + 1
        hidden, out_ch = make_divisible(exp * width), make_divisible(out * width)
        layers.append(InvertedResidual(in_ch, out_ch, stride, hidden=hidden, kernel=kernel, act=ACTS[act],  # the bneck
                                       se_channels=make_divisible(hidden / 4) if se else 0))
        in_ch = out_ch
    last = 6 * in_ch
    layers.append(ConvBNAct(in_ch, last, 1, act=nn.Hardswish))
    return HeadClassifier(nn.Sequential(*layers), last, make_divisible(HEAD[layout] * width), num_classes)
