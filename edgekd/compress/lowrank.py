"""Low-rank factorization of Linear and Conv2d layers by truncated SVD, and its ``factorize`` surgery op.

A Linear weight ``W (out x in)`` with SVD ``U S Vᵀ`` is replaced by ``Linear(in, r)`` with weight
``√S_r V_rᵀ`` followed by ``Linear(r, out)`` with weight ``U_r √S_r`` (and the original bias). A
``k x k`` Conv2d is flattened to ``out x (in·k·k)`` the same way: the first factor is a ``k x k``
conv ``in -> r`` keeping stride, padding and dilation, the second a ``1 x 1`` conv ``r -> out``
carrying the bias. At full rank the product is exact; at rank r it is the best rank-r approximation
in the Frobenius norm (Eckart–Young).

The rank comes from an energy threshold (smallest r keeping that share of ``Σ s²``) or a ratio of
the full rank. A layer is factorized only when it saves at least `min_reduction` of its weights —
otherwise the extra layer costs a kernel launch and memory traffic for nothing. Grouped and
depthwise convs are left alone (they are already cheap and their weight is not one matrix).

The replacement is an ``nn.Sequential(first, second)`` at the same module path, recorded as
``{"op": "factorize", "modules": {path: {"type": "Linear" | "Conv2d", "rank": r}}}`` and rebuilt by
the ``factorize`` op on load (see `edgekd.models.surgery`).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.surgery import SURGERY, set_submodule

FACTORIZABLE = ("Linear", "Conv2d")
DEFAULT_ENERGY = 0.9  # used when neither energy nor ratio is given


def rank_for(singular_values: torch.Tensor, *, energy: float | None = None, ratio: float | None = None) -> int:
    """The rank to keep: smallest r with ``Σ_{i<r} s_i² >= energy · Σ s²``, or ``ceil(ratio · full)``."""
    full = int(singular_values.numel())
    if ratio is not None:
        return max(1, min(full, math.ceil(ratio * full)))
    if energy is None:
        raise ValueError("give energy or ratio")
    power = singular_values.double() ** 2
    total = float(power.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(power, 0) / total
    # the first index where the kept share reaches the threshold (tolerance for float round-off)
    reached = (cumulative >= energy - 1e-12).nonzero()
    return max(1, min(full, int(reached[0]) + 1 if len(reached) else full))


def _matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as one ``out x fan_in`` matrix."""
    return module.weight.detach().reshape(module.weight.shape[0], -1)


def factor_params(module: nn.Module, rank: int) -> int:
    """Weights of the two factors at `rank` (the bias is the same either way)."""
    out_dim, fan_in = _matrix(module).shape
    return rank * (out_dim + fan_in)


def _factor_modules(module: nn.Module, rank: int) -> nn.Sequential:
    """Fresh (untrained) factor layers for `module` at `rank` — the shape the state dict expects."""
    ref = module.weight
    factory = {"device": ref.device, "dtype": ref.dtype}
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        return nn.Sequential(
            nn.Linear(module.in_features, rank, bias=False, **factory),
            nn.Linear(rank, module.out_features, bias=has_bias, **factory),
        )
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise TypeError("grouped convs cannot be factorized")
        return nn.Sequential(
            nn.Conv2d(module.in_channels, rank, module.kernel_size, stride=module.stride,
                      padding=module.padding, dilation=module.dilation, bias=False,
                      padding_mode=module.padding_mode, **factory),
            nn.Conv2d(rank, module.out_channels, 1, bias=has_bias, **factory),
        )
    raise TypeError(f"cannot factorize a {type(module).__name__}; factorizable: {', '.join(FACTORIZABLE)}")


@torch.no_grad()
def factorize(module: nn.Module, rank: int) -> nn.Sequential:
    """Two layers whose composition is the rank-`rank` truncated SVD of `module` (exact at full rank)."""
    pair = _factor_modules(module, rank)
    matrix = _matrix(module).double()
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    root = torch.sqrt(s[:rank])
    first = (root[:, None] * vh[:rank]).to(module.weight.dtype)  # r x fan_in
    second = (u[:, :rank] * root[None, :]).to(module.weight.dtype)  # out x r
    pair[0].weight.copy_(first.reshape(pair[0].weight.shape))
    pair[1].weight.copy_(second.reshape(pair[1].weight.shape))
    if module.bias is not None:
        pair[1].bias.copy_(module.bias)
    return pair


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and ungrouped Conv2d layers, excluding ones already produced by factorization (a
    factor pair's layers are named ``<path>.0`` / ``<path>.1`` under a Sequential built here)."""
    factored = {path for path, m in model.named_modules() if getattr(m, "_edgekd_factor_pair", False)}
    out = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(f + ".") for f in factored):
            continue
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1):
            out.append((path, module))
    return out


def check_options(energy: Any, ratio: Any, min_reduction: Any) -> tuple[float | None, float | None, float]:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if energy is not None and ratio is not None:
        raise ConfigError("lowrank: give energy (e.g. 0.9) or ratio (e.g. 0.5), not both")
    if energy is None and ratio is None:
        energy = DEFAULT_ENERGY
    if energy is not None and not (number(energy) and 0.0 < float(energy) <= 1.0):
        raise ConfigError(f"lowrank: energy must be in (0, 1] (share of squared singular values kept), got {energy!r}")
    if ratio is not None and not (number(ratio) and 0.0 < float(ratio) <= 1.0):
        raise ConfigError(f"lowrank: ratio must be in (0, 1] (share of the full rank kept), got {ratio!r}")
    if not (number(min_reduction) and 0.0 <= float(min_reduction) < 1.0):
        raise ConfigError(f"lowrank: min_reduction must be in [0, 1), got {min_reduction!r}")
    return (None if energy is None else float(energy), None if ratio is None else float(ratio), float(min_reduction))


def lowrank_pass(
    model: nn.Module,
    example: torch.Tensor,
    *,
    energy: float | None = None,
    ratio: float | None = None,
    min_reduction: float = 0.1,
    exclude: list[str] | None = None,
) -> tuple[list[dict], dict]:
    """The ``lowrank`` compression pass: factorize every Linear / ungrouped Conv2d whose truncated
    SVD saves at least `min_reduction` of its weights, in place. The rank keeps `energy` of the
    squared singular values (default 0.9) or `ratio` of the full rank; `exclude` lists module paths
    to leave alone. Returns the ``factorize`` surgery record and a JSON-able report of ranks
    (`example` is unused: SVD needs no data)."""
    energy, ratio, min_reduction = check_options(energy, ratio, min_reduction)
    skip = set(exclude or [])
    modules: dict[str, dict[str, Any]] = {}
    layers: dict[str, dict[str, Any]] = {}
    for path, module in _candidates(model):
        if path in skip:
            continue
        matrix = _matrix(module)
        full = min(matrix.shape)
        s = torch.linalg.svdvals(matrix.double())
        rank = rank_for(s, energy=energy, ratio=ratio)
        before = int(matrix.numel())
        after = factor_params(module, rank)
        kept = {"rank": rank, "full_rank": full, "weights_before": before, "weights_after": after}
        if after > (1.0 - min_reduction) * before or after >= before:
            layers[path] = {**kept, "factorized": False}
            continue
        pair = factorize(module, rank)
        pair._edgekd_factor_pair = True  # type: ignore[attr-defined]
        set_submodule(model, path, pair)
        modules[path] = {"type": type(module).__name__, "rank": rank}
        layers[path] = {**kept, "factorized": True}
    details = {"energy": energy, "ratio": ratio, "min_reduction": min_reduction, "layers": layers}
    return ([{"op": "factorize", "modules": modules}] if modules else []), details


@SURGERY.register("factorize")
def factorize_op(model: nn.Module, record: dict) -> None:
    """Surgery op: replace each listed layer by its (untrained) factor pair of the recorded rank;
    the weights come from the state dict loaded afterwards."""
    entries = record["modules"]
    if not isinstance(entries, dict):
        raise TypeError("'modules' must map module paths to {type, rank}")
    for path, entry in entries.items():
        old = model.get_submodule(path)
        kind, rank = entry["type"], int(entry["rank"])
        if kind not in FACTORIZABLE or type(old).__name__ != kind:
            raise TypeError(f"{path!r} is a {type(old).__name__}, the record says {kind}")
        if not 1 <= rank <= min(_matrix(old).shape):
            raise ValueError(f"rank {rank} of {path!r} is outside 1..{min(_matrix(old).shape)}")
        pair = _factor_modules(old, rank)
        pair._edgekd_factor_pair = True  # type: ignore[attr-defined]
        set_submodule(model, path, pair)
