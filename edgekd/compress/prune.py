"""Structured channel pruning over torch-pruning's dependency graph.

Removing an output channel of a conv also removes the matching BatchNorm entries, the input channel
of every layer that reads it, and — through residual adds and depthwise convs — the same channel of
every layer coupled to it. torch-pruning's `DependencyGraph` finds those coupled sets ("groups");
this module decides how many channels each group keeps and which:

- every group keeps ``(1 - ratio)`` of its channels (one ratio for the whole network, so MACs of
  a conv that loses both input and output channels drop by about ``(1 - ratio)**2``);
- the kept count is rounded to the nearest multiple of 8 (ties up, never below 8) when the group has
  at least 8 channels, because vector units and GEMM kernels work in blocks of 8 or 16 channels and
  a 13-channel layer runs no faster than a 16-channel one; smaller groups keep ``round(n*(1-ratio))``,
  at least 1;
- the channels with the smallest group L2 magnitude go (torch-pruning's GroupMagnitudeImportance,
  summed over every coupled weight);
- the classifier's outputs (the classes) are never pruned; grouped convs that are not depthwise are
  left alone (their channel blocks would have to shrink in lock-step).

The result is recorded as one ``resize`` surgery record, so the pruned model reloads from its spec
with `weights_only=True`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from edgekd.compress.passes import CompressionPass, Field, PassData, PassResult
from edgekd.errors import ConfigError

HARDWARE_MULTIPLE = 8


@dataclass
class PruneReport:
    """What `prune_channels` did: per coupled group (named by its root module) channels before/after."""

    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "groups": {k: {"before": a, "after": b} for k, (a, b) in self.groups.items()},
            "skipped": dict(self.skipped),
        }


def kept_channels(n: int, ratio: float, multiple: int = HARDWARE_MULTIPLE) -> int:
    """How many of `n` channels a group keeps at pruning `ratio`.

    Groups of at least `multiple` channels keep a multiple of `multiple` (nearest, ties up, at least
    `multiple`, at most `n`); smaller groups keep ``round(n * (1 - ratio))``, at least 1.
    """
    target = n * (1.0 - ratio)
    if n >= multiple:
        keep = int(math.floor(target / multiple + 0.5)) * multiple
        return min(n, max(multiple, keep))
    return min(n, max(1, int(math.floor(target + 0.5))))


def check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(f"prune: ratio must be a number in [0, 1) (the share of channels removed), got {ratio!r}")
    return float(ratio)


def _classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The layers whose outputs are the model's outputs: the ``classifier`` sub-module (every edgekd
    family has one; after low-rank factorization it is a Sequential whose last Linear is the output),
    else the last Linear of the model."""
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Module):
        leaves = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if leaves:
            return [leaves[-1]]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def _has_plain_grouped_conv(group: Any) -> bool:
    """True if the group touches a grouped conv that is not depthwise (groups == in_channels)."""
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
            if not (module.groups == module.in_channels == module.out_channels):
                return True
    return False


def prune_channels(
    model: nn.Module,
    example: torch.Tensor,
    ratio: float,
    *,
    multiple: int = HARDWARE_MULTIPLE,
    keep_layers: list[nn.Module] | None = None,
) -> PruneReport:
    """Prune `ratio` of the channels of every prunable group of `model`, in place.

    `example` is one input batch used to trace the graph (the model is traced in eval mode, so
    BatchNorm statistics are not touched). `keep_layers` are never pruned at their output (the
    classifier always is). Returns the per-group channel counts.
    """
    import torch_pruning as tp  # heavy import, only when pruning

    ratio = check_ratio(ratio)
    report = PruneReport()
    ignored = _classifier_layers(model) + list(keep_layers or [])
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():  # the graph is traced through autograd
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)
        importance = tp.importance.GroupMagnitudeImportance(p=2)
        plans = []
        # decide every group's cut before pruning any: groups are disjoint, so the index lists stay valid
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=[nn.Conv2d, nn.Linear]):
            root = group[0].dep.target.module
            name = graph._module2name.get(root, type(root).__name__)
            if _has_plain_grouped_conv(group):
                report.skipped[name] = "grouped conv (not depthwise)"
                continue
            n = graph.get_out_channels(root)
            keep = kept_channels(int(n), ratio, multiple)
            if keep >= n:
                report.groups[name] = (int(n), int(n))
                continue
            with torch.no_grad():
                scores = importance(group)
            if scores is None:
                report.skipped[name] = "no importance score"
                continue
            drop = torch.argsort(scores)[: n - keep].tolist()
            plans.append((name, root, group[0].dep.handler, sorted(drop), int(n), keep))
        for name, root, handler, drop, n, keep in plans:
            pruning_group = graph.get_pruning_group(root, handler, drop)
            if not graph.check_pruning_group(pruning_group):
                report.skipped[name] = "would empty a layer"
                continue
            pruning_group.prune()
            report.groups[name] = (n, keep)
    finally:
        model.train(was_training)
    return report


def prune_pass(model: nn.Module, example: torch.Tensor, *, ratio: float = 0.5) -> tuple[list[dict], dict]:
    """The ``prune`` compression pass: prune `ratio` of the channels in place and return the
    ``resize`` surgery record that rebuilds the new shapes, plus a JSON-able report."""
    from edgekd.models.surgery import resize_record

    reference = copy.deepcopy(model)
    report = prune_channels(model, example, ratio)
    record = resize_record(model, reference=reference)
    details = report.as_dict()
    details["ratio"] = float(ratio)
    return ([record] if record["modules"] else []), details


class Prune(CompressionPass):
    """Structured channel pruning (torch-pruning dependency groups; kept counts are multiples of 8)."""

    name = "prune"
    fields = (
        Field("ratio", float, 0.5, "share of channels removed per layer group (0.5 = half)", low=0, high=1,
              high_open=True),
    )

    def run(self, model: nn.Module, data: PassData, cfg: dict[str, Any]) -> PassResult:
        records, details = prune_pass(model, data.example, ratio=cfg["ratio"])
        return PassResult(model, records, details)
