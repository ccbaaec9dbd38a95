"""`resnet`: the teacher family, residual conv blocks (He et al. 2016, basic block)."""
from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.common import ConvBNAct, ImageClassifier, stride_plan
from edgekd.models.spec import register_family


class BasicBlock(nn.Module):
    """3x3 conv-bn-relu -> 3x3 conv-bn, added to the input (through a 1x1 conv-bn when the shape
    changes), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(in_ch, out_ch, 3, stride=stride)
        self.conv2 = ConvBNAct(out_ch, out_ch, 3, act=None)
        self.shortcut: nn.Module = (
            ConvBNAct(in_ch, out_ch, 1, stride=stride, act=None)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


def _validate(kw: dict) -> None:
    if not 4 <= kw["width"] <= 512:
        raise ConfigError(f"model 'resnet': width must be in 4..512, got {kw['width']}")
    if not 1 <= kw["depth"] <= 6:
        raise ConfigError(f"model 'resnet': depth (stages) must be in 1..6, got {kw['depth']}")
    if not 1 <= kw["blocks"] <= 8:
        raise ConfigError(f"model 'resnet': blocks per stage must be in 1..8, got {kw['blocks']}")


@register_family(
    "resnet",
    role="teacher",
    defaults={"width": 32, "depth": 3, "blocks": 1},
    search_space=[
        "resnet:width=8,depth=2",
        "resnet:width=16,depth=2",
        "resnet:width=16,depth=3",
        "resnet:width=32,depth=3",
        "resnet:width=32,depth=3,blocks=2",
        "resnet:width=64,depth=3",
        "resnet:width=64,depth=3,blocks=2",
    ],
    validate=_validate,
)
def build_resnet(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, blocks: int
) -> nn.Module:
    """ResNet with basic blocks: a 3x3 stem of `width` channels, then `depth` stages of `blocks`
    residual blocks, channels doubling per stage (w, 2w, 4w, ...). Stages start with stride 2 as the
    input size needs; global average pool, Linear classifier. The default teacher family."""
    # stage 0 runs at the stem resolution; the stem strides only if the stages cannot do it all
    strides = stride_plan(depth, input_shape[1], input_shape[2])
    layers: list[nn.Module] = [ConvBNAct(input_shape[0], width, 3, stride=strides[0])]
    in_ch = width
    for stage in range(depth):
        out_ch = width * 2**stage
        for b in range(blocks):
            layers.append(BasicBlock(in_ch, out_ch, strides[stage] if b == 0 and stage > 0 else 1))
            in_ch = out_ch
    return ImageClassifier(nn.Sequential(*layers), in_ch, num_classes)
