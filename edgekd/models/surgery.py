"""Structural edits recorded in a checkpoint and replayed on load, so nothing is ever unpickled.

A compressed model is no longer what its spec builds: pruning shrinks channels, low-rank
factorization splits layers. Each such edit is registered here under an op name and recorded in the
checkpoint as plain JSON, ``{"op": name, ...}``. Loading builds the model from its spec, replays the
records in order with `replay`, then loads the state dict strictly.

Ops take ``(model, record)`` and edit the model in place; register new ones with
``@SURGERY.register("name")``. Every op lives in this module: an op is part of the checkpoint
format (what a saved model may contain), so loading never has to import the code that *made* the
edit. Compression passes (`edgekd.compress`) only produce records; they depend on this module,
never the other way round.

``resize``: ``{"op": "resize", "modules": {path: {"type": "Conv2d" | "Conv1d" | "Linear" |
"BatchNorm2d" | "BatchNorm1d" | "LayerNorm", "in": int, "out": int, "groups": int}}}`` replaces each
listed module by a fresh one of the new size, keeping every other setting (kernel, stride, bias...).

``factorize``: ``{"op": "factorize", "modules": {path: {"type": "Linear" | "Conv2d", "rank": r}}}``
replaces each listed layer by its factor pair at rank r (`factor_pair`: ``Linear(in, r)`` then
``Linear(r, out)``, or a ``k x k`` conv ``in -> r`` then a ``1 x 1`` conv ``r -> out``); the
weights come from the state dict. `edgekd.compress.lowrank` fills such pairs with a truncated SVD.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from edgekd.errors import ModelError
from edgekd.registry import Registry

SurgeryOp = Callable[[nn.Module, dict], None]
SURGERY: Registry[SurgeryOp] = Registry("surgery op")

_CONVS: dict[str, type[nn.Module]] = {"Conv1d": nn.Conv1d, "Conv2d": nn.Conv2d}
_BNS: dict[str, type[nn.Module]] = {"BatchNorm1d": nn.BatchNorm1d, "BatchNorm2d": nn.BatchNorm2d}
RESIZABLE = (*_CONVS, "Linear", *_BNS, "LayerNorm")


def replay(model: nn.Module, records: list[dict[str, Any]]) -> nn.Module:
    """Apply each surgery record to `model` in order; returns the same (edited) model.

    A record that is not a dict, names an unknown op or does not fit the model raises ModelError.
    """
    for i, record in enumerate(records or []):
        if not isinstance(record, dict) or not isinstance(record.get("op"), str):
            raise ModelError(f"surgery record #{i} is not a {{'op': name, ...}} mapping: {record!r}")
        op = record["op"]
        if op not in SURGERY:
            raise ModelError(f"surgery record #{i}: {SURGERY.unknown_message(op)}")
        try:
            SURGERY.get(op)(model, record)
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ModelError(f"surgery record #{i} ({op}) does not fit the model: {err}") from None
    return model


def set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the sub-module at dotted `path` (e.g. ``features.1.0``) with `module`."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if name not in parent._modules:
        raise AttributeError(f"no sub-module {path!r}")
    setattr(parent, name, module)


def module_size(module: nn.Module) -> dict[str, Any] | None:
    """The resize entry describing `module`'s current size, read from its weights (pruning tools
    edit tensors and attributes; the tensors are the truth), or None for a type resize cannot handle."""
    kind = type(module).__name__
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and kind in _CONVS:
        out_ch, in_per_group = module.weight.shape[:2]
        return {"type": kind, "in": int(in_per_group) * module.groups, "out": int(out_ch), "groups": module.groups}
    if isinstance(module, nn.Linear):
        out_f, in_f = module.weight.shape
        return {"type": "Linear", "in": int(in_f), "out": int(out_f), "groups": 1}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and kind in _BNS:
        ref = module.weight if module.affine else module.running_mean
        n = int(ref.shape[0]) if ref is not None else module.num_features
        return {"type": kind, "in": n, "out": n, "groups": 1}
    if isinstance(module, nn.LayerNorm):
        ref = module.weight
        n = int(ref.shape[-1]) if ref is not None else int(module.normalized_shape[-1])
        return {"type": "LayerNorm", "in": n, "out": n, "groups": 1}
    return None


def resize_record(model: nn.Module, reference: nn.Module | None = None) -> dict[str, Any]:
    """Build a ``resize`` record from a model whose modules were shrunk (or grown) in place.

    With `reference` (the unedited model built from the same spec) only the modules whose size
    differs are listed; without it every resizable module is listed, which replays just as well.
    """
    ref_modules = dict(reference.named_modules()) if reference is not None else {}
    modules: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        size = module_size(module)
        if size is None or not path:
            continue
        if reference is not None and path in ref_modules and module_size(ref_modules[path]) == size:
            continue
        modules[path] = size
    return {"op": "resize", "modules": modules}


@SURGERY.register("resize")
def resize(model: nn.Module, record: dict) -> None:
    """Replace each listed module with a fresh one of the recorded size (weights come from the
    state dict loaded afterwards)."""
    entries = record["modules"]
    if not isinstance(entries, dict):
        raise TypeError("'modules' must map module paths to sizes")
    for path, entry in entries.items():
        old = model.get_submodule(path)
        kind, n_in, n_out = entry["type"], int(entry["in"]), int(entry["out"])
        if type(old).__name__ != kind:
            raise TypeError(f"{path!r} is a {type(old).__name__}, the record says {kind}")
        set_submodule(model, path, _resized(old, kind, n_in, n_out, int(entry.get("groups", 1))))


def _resized(old: nn.Module, kind: str, n_in: int, n_out: int, groups: int) -> nn.Module:
    if min(n_in, n_out, groups) < 1:
        raise ValueError(f"sizes must be positive, got in={n_in} out={n_out} groups={groups}")
    device = next(iter(old.parameters()), None)
    factory: dict[str, Any] = {}
    if device is not None:
        factory = {"device": device.device, "dtype": device.dtype}
    if kind in _CONVS:
        conv = old  # type: ignore[assignment]
        return _CONVS[kind](
            n_in, n_out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
            dilation=conv.dilation, groups=groups, bias=conv.bias is not None,
            padding_mode=conv.padding_mode, **factory,
        )
    if kind == "Linear":
        return nn.Linear(n_in, n_out, bias=old.bias is not None, **factory)
    if kind in _BNS:
        return _BNS[kind](
            n_out, eps=old.eps, momentum=old.momentum, affine=old.affine,
            track_running_stats=old.track_running_stats, **factory,
        )
    if kind == "LayerNorm":
        shape = (*tuple(old.normalized_shape)[:-1], n_out)
        return nn.LayerNorm(shape, eps=old.eps, elementwise_affine=old.elementwise_affine,
                            bias=old.bias is not None, **factory)
    raise TypeError(f"resize cannot handle {kind}; resizable types: {', '.join(RESIZABLE)}")


# ---- factorize ---------------------------------------------------------------------------------
FACTORIZABLE = ("Linear", "Conv2d")
# set on the nn.Sequential of a factor pair, so a second low-rank pass leaves its layers alone
FACTOR_PAIR_ATTR = "_edgekd_factor_pair"


def weight_matrix(module: nn.Module) -> Any:
    """The layer's weight as one ``out x fan_in`` matrix (a view, detached)."""
    return module.weight.detach().reshape(module.weight.shape[0], -1)


def factor_pair(module: nn.Module, rank: int) -> nn.Sequential:
    """Fresh (untrained) factor layers for `module` at `rank`, marked as a factor pair: the
    structure a ``factorize`` record stands for and the shapes its state dict expects."""
    ref = module.weight
    factory = {"device": ref.device, "dtype": ref.dtype}
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        pair = nn.Sequential(
            nn.Linear(module.in_features, rank, bias=False, **factory),
            nn.Linear(rank, module.out_features, bias=has_bias, **factory),
        )
    elif isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise TypeError("grouped convs cannot be factorized")
        pair = nn.Sequential(
            nn.Conv2d(module.in_channels, rank, module.kernel_size, stride=module.stride,
                      padding=module.padding, dilation=module.dilation, bias=False,
                      padding_mode=module.padding_mode, **factory),
            nn.Conv2d(rank, module.out_channels, 1, bias=has_bias, **factory),
        )
    else:
        raise TypeError(f"cannot factorize a {type(module).__name__}; factorizable: {', '.join(FACTORIZABLE)}")
    setattr(pair, FACTOR_PAIR_ATTR, True)
    return pair


@SURGERY.register("factorize")
def factorize(model: nn.Module, record: dict) -> None:
    """Replace each listed layer by its (untrained) factor pair of the recorded rank; the weights
    come from the state dict loaded afterwards."""
    entries = record["modules"]
    if not isinstance(entries, dict):
        raise TypeError("'modules' must map module paths to {type, rank}")
    for path, entry in entries.items():
        old = model.get_submodule(path)
        kind, rank = entry["type"], int(entry["rank"])
        if kind not in FACTORIZABLE or type(old).__name__ != kind:
            raise TypeError(f"{path!r} is a {type(old).__name__}, the record says {kind}")
        full = min(weight_matrix(old).shape)
        if not 1 <= rank <= full:
            raise ValueError(f"rank {rank} of {path!r} is outside 1..{full}")
        set_submodule(model, path, factor_pair(old, rank))
