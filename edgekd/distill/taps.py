"""Read intermediate features by module path with forward hooks (no model rewriting).

    with FeatureTaps(model, ["features.2"]) as taps:
        logits = model(x)
        f = taps.features["features.2"]

Paths are those of `model.named_modules()` ("features.2", "classifier"). An unknown path raises a
ConfigError that lists the nearest valid paths, so a typo in a config is a one-line fix.
"""
from __future__ import annotations

import difflib
from typing import Iterable

from torch import Tensor, nn

from edgekd.errors import ConfigError


def module_paths(model: nn.Module) -> list[str]:
    """Every addressable sub-module path of `model` (the root '' excluded)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_module(model: nn.Module, path: str, *, role: str = "model") -> nn.Module:
    """The sub-module at `path`, or a ConfigError naming close valid paths."""
    modules = dict(model.named_modules())
    if path in modules and path:
        return modules[path]
    valid = module_paths(model)
    close = difflib.get_close_matches(path, valid, n=5, cutoff=0.3)
    if not close:  # fall back to the top-level paths so the user sees the shape of the model
        close = [p for p in valid if "." not in p][:8]
    raise ConfigError(f"{role} has no module {path!r}; nearby valid paths: {', '.join(close)}")


class FeatureTaps:
    """Forward hooks that record the outputs of the named sub-modules on every forward pass.

    The recorded tensors keep their autograd graph (a student feature must back-propagate into the
    student through the hint loss). Use as a context manager or call `close()` to remove the hooks.
    """

    def __init__(self, model: nn.Module, paths: Iterable[str], *, role: str = "model") -> None:
        self.paths = list(dict.fromkeys(paths))
        self.features: dict[str, Tensor] = {}
        self._handles = []
        for path in self.paths:
            module = resolve_module(model, path, role=role)
            self._handles.append(module.register_forward_hook(self._recorder(path)))

    def _recorder(self, path: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, (tuple, list)):  # e.g. an RNN: the first element is the feature
                output = output[0]
            self.features[path] = output  # type: ignore[assignment]

        return hook

    def clear(self) -> None:
        self.features = {}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "FeatureTaps":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
