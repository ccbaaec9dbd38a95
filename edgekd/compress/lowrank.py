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
the ``factorize`` op of `edgekd.models.surgery` on load (the op owns the pair's structure,
`factor_pair`; this module fills it with the SVD factors).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from edgekd.compress.passes import CompressionPass, Field, PassData, PassResult
from edgekd.errors import ConfigError
from edgekd.models.surgery import FACTOR_PAIR_ATTR, factor_pair, set_submodule, weight_matrix

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


def factor_params(module: nn.Module, rank: int) -> int:
    """Weights of the two factors at `rank` (the bias is the same either way)."""
    out_dim, fan_in = weight_matrix(module).shape
    return rank * (out_dim + fan_in)


@torch.no_grad()
def factorize(module: nn.Module, rank: int) -> nn.Sequential:
    """Two layers whose composition is the rank-`rank` truncated SVD of `module` (exact at full rank)."""
    pair = factor_pair(module, rank)
    matrix = weight_matrix(module).double()
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
    factored = {path for path, m in model.named_modules() if getattr(m, FACTOR_PAIR_ATTR, False)}
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
        matrix = weight_matrix(module)
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
        set_submodule(model, path, pair)
        modules[path] = {"type": type(module).__name__, "rank": rank}
        layers[path] = {**kept, "factorized": True}
    details = {"energy": energy, "ratio": ratio, "min_reduction": min_reduction, "layers": layers}
    return ([{"op": "factorize", "modules": modules}] if modules else []), details


class LowRank(CompressionPass):
    """Low-rank (truncated SVD) factorization of Linear and ungrouped Conv2d layers."""

    name = "lowrank"
    fields = (
        Field("energy", float, None, f"share of the squared singular values each layer keeps (null: {DEFAULT_ENERGY} "
              "unless ratio is given)", low=0, high=1, low_open=True, nullable=True),
        Field("ratio", float, None, "share of each layer's full rank kept (instead of energy)", low=0, high=1,
              low_open=True, nullable=True),
        Field("min_reduction", float, 0.1, "factorize a layer only when this share of its weights goes",
              low=0, high=1, high_open=True),
        Field("exclude", list, None, "module paths left alone, e.g. [classifier]", nullable=True, item=str),
    )

    @classmethod
    def check(cls, cfg: dict[str, Any], where: str) -> dict[str, Any]:
        energy, ratio, min_reduction = check_options(cfg["energy"], cfg["ratio"], cfg["min_reduction"])
        return {**cfg, "energy": energy, "ratio": ratio, "min_reduction": min_reduction}

    def run(self, model: nn.Module, data: PassData, cfg: dict[str, Any]) -> PassResult:
        records, details = lowrank_pass(model, data.example, energy=cfg["energy"], ratio=cfg["ratio"],
                                        min_reduction=cfg["min_reduction"], exclude=cfg["exclude"])
        return PassResult(model, records, details)
