"""`mlp`: the smallest student family, a plain multilayer perceptron over the flattened image."""
from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.spec import register_family


class MLP(nn.Module):
    """flatten -> [Linear -> ReLU] per hidden width -> Linear."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


def _validate(kw: dict) -> None:
    if not kw["hidden"] or len(kw["hidden"]) > 8:
        raise ConfigError(f"model 'mlp': hidden must list 1 to 8 widths, got {kw['hidden']}")


@register_family(
    "mlp",
    role="student",
    defaults={"hidden": [128]},
    search_space=[
        # ordered so params and MACs grow at any input size (8x8 and 32x32 checked by the tests)
        "mlp:hidden=16",
        "mlp:hidden=32",
        "mlp:hidden=32x2",
        "mlp:hidden=64",
        "mlp:hidden=64x2",
        "mlp:hidden=128",
        "mlp:hidden=128x2",
        "mlp:hidden=256x128",
        "mlp:hidden=256x2",
    ],
    validate=_validate,
)
def build_mlp(input_shape: tuple[int, ...], num_classes: int, *, hidden: list[int]) -> nn.Module:
    """Multilayer perceptron: flatten the C x H x W input, then one Linear + ReLU per width in
    `hidden` (``hidden=256x128`` = two layers, ``hidden=128x2`` = two layers of 128), then a Linear
    classifier. Cheap in MACs at 8x8, but its first layer grows with the pixel count."""
    in_features = 1
    for d in input_shape:
        in_features *= d
    return MLP(in_features, list(hidden), num_classes)
