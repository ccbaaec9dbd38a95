"""`resnet_basic`: ImageNet ResNet-10/18/26/34 with basic blocks (He et al., CVPR 2016), base width
and input resolution part of the spec."""
from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.common import ConvBNAct, ImageClassifier
from edgekd.models.resnet import BasicBlock
from edgekd.models.scaled import check_range, real_strides
from edgekd.models.spec import register_family

# blocks per stage for each depth (ResNet-18 and -34 as published; 10 and 26 fill the gaps)
STAGE_BLOCKS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 26: [2, 3, 4, 3], 34: [3, 4, 6, 3]}


def _validate(kw: dict) -> None:
    if kw["depth"] not in STAGE_BLOCKS:
        raise ConfigError(f"model 'resnet_basic': depth={kw['depth']} must be one of "
                          f"{', '.join(map(str, STAGE_BLOCKS))}")
    check_range("resnet_basic", "width", kw["width"], 8, 128)


@register_family(
    "resnet_basic",
    role="student",
    scale="real",
    defaults={"width": 64, "depth": 18, "resolution": 0},
    search_space=[  # ordered by MACs at the spec's own resolution (checked by a test)
        "resnet_basic:width=16,depth=10,resolution=96",
        "resnet_basic:width=32,depth=10,resolution=128",
        "resnet_basic:width=32,depth=18,resolution=160",
        "resnet_basic:width=64,depth=10,resolution=160",
        "resnet_basic:width=64,depth=18,resolution=160",
        "resnet_basic:width=64,depth=18,resolution=224",
        "resnet_basic:width=64,depth=34,resolution=224",
    ],
    validate=_validate,
)
def build_resnet_basic(input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int) -> nn.Module:
    """ImageNet ResNet with basic blocks: a 7x7 stride-2 stem of `width` channels and a 3x3
    stride-2 max pool, four stages of basic blocks (3x3 conv-bn-relu -> 3x3 conv-bn + shortcut, 1x1
    projection where the shape changes) with w, 2w, 4w, 8w channels and stride 2 at the start of
    stages 2-4, global average pool, Linear classifier. `depth` 10/18/26/34 sets the blocks per stage
    (18 = 2,2,2,2; 34 = 3,4,6,3). `resolution` (0 = the data's size) fixes the square input. At 224 px,
    1000 classes: ResNet-18 11.69 M params / 1.82 G MACs, ResNet-34 21.80 M / 3.67 G (the paper's)."""
    strides = real_strides(5, input_shape[1], input_shape[2])  # stem conv, max pool, stages 2-4
    stem: list[nn.Module] = [ConvBNAct(input_shape[0], width, 7, stride=strides[0])]
    if strides[1] == 2:
        stem.append(nn.MaxPool2d(3, stride=2, padding=1))
    layers: list[nn.Module] = [nn.Sequential(*stem)]
    in_ch = width
    for stage, blocks in enumerate(STAGE_BLOCKS[depth]):
        out_ch = width * 2**stage
        for b in range(blocks):
            stride = strides[stage + 1] if b == 0 and stage > 0 else 1
            layers.append(BasicBlock(in_ch, out_ch, stride))
            in_ch = out_ch
    return ImageClassifier(nn.Sequential(*layers), in_ch, num_classes)
