"""`cnn`: plain conv-bn-relu stacks, the workhorse student family."""
from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.common import ConvBNAct, ImageClassifier, stride_plan
from edgekd.models.spec import register_family


def _validate(kw: dict) -> None:
    if not 1 <= kw["width"] <= 1024:
        raise ConfigError(f"model 'cnn': width must be in 1..1024, got {kw['width']}")
    if not 1 <= kw["depth"] <= 16:
        raise ConfigError(f"model 'cnn': depth must be in 1..16, got {kw['depth']}")


def cnn_channels(width: int, depth: int) -> list[int]:
    """Channels per block: `width`, then doubling on the next two blocks, then flat (w, 2w, 4w, 4w...)."""
    return [width * 2 ** min(i, 2) for i in range(depth)]


@register_family(
    "cnn",
    role="student",
    defaults={"width": 8, "depth": 2},
    search_space=[
        "cnn:width=4,depth=1",
        "cnn:width=4,depth=2",
        "cnn:width=8,depth=2",
        "cnn:width=8,depth=3",
        "cnn:width=12,depth=3",
        "cnn:width=16,depth=3",
        "cnn:width=16,depth=4",
        "cnn:width=24,depth=4",
        "cnn:width=32,depth=4",
    ],
    validate=_validate,
)
def build_cnn(input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int) -> nn.Module:
    """Plain CNN: `depth` blocks of 3x3 conv -> BatchNorm -> ReLU. Channels start at `width` and
    double on the second and third blocks (w, 2w, 4w, 4w, ...). Stride 2 on block starts as the input
    size needs (one step at 8x8, three at 32x32; the first block strides only when the later ones are
    not enough), then global average pool and a Linear classifier."""
    channels = cnn_channels(width, depth)
    strides = stride_plan(depth, input_shape[1], input_shape[2])
    blocks: list[nn.Module] = []
    in_ch = input_shape[0]
    for out_ch, stride in zip(channels, strides):
        blocks.append(ConvBNAct(in_ch, out_ch, 3, stride=stride))
        in_ch = out_ch
    return ImageClassifier(nn.Sequential(*blocks), in_ch, num_classes)
