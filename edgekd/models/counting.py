"""Parameter, MAC and layer counts of a model, measured by running one sample through it.

MACs (multiply-accumulates) are counted exactly for convolutions (any kernel, stride, dilation and
groups, depthwise included), Linear layers and nn.MultiheadAttention (projections plus the two
attention matmuls); elementwise work (BN, activations, pooling, adds) is not counted as MACs.
`model_features` also reports what a latency model wants beyond MACs: activation bytes and how
many layers of each kind run.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)
_ACT = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Mish, nn.Softmax,
)
_POOL = (
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
LAYER_KINDS = ("conv", "depthwise_conv", "linear", "bn", "act", "pool")


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN running stats excluded)."""
    return sum(p.numel() for p in model.parameters())


def layer_kind(module: nn.Module) -> str | None:
    """The kind a leaf module counts as in `model_features`, or None if it is not counted."""
    if isinstance(module, _CONV):
        depthwise = module.groups > 1 and module.groups == module.in_channels
        return "depthwise_conv" if depthwise else "conv"
    if isinstance(module, (nn.Linear, nn.MultiheadAttention)):
        return "linear"
    if isinstance(module, _BN):
        return "bn"
    if isinstance(module, _ACT):
        return "act"
    if isinstance(module, _POOL):
        return "pool"
    return None


def module_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """MACs of one call of `module` given its inputs and output (0 for modules that do no matmul)."""
    if isinstance(module, _CONV):
        # every output element is a dot product over (in_channels / groups) x kernel elements
        per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
        return int(output.numel()) * per_out
    if isinstance(module, nn.Linear):
        return int(output.numel()) * module.in_features
    if isinstance(module, nn.MultiheadAttention):
        return _attention_macs(module, inputs)
    return 0


def _attention_macs(module: nn.MultiheadAttention, inputs: tuple[Any, ...]) -> int:
    query, key = inputs[0], inputs[1] if len(inputs) > 1 else inputs[0]
    batch_dim = 0 if module.batch_first else 1
    seq_dim = 1 - batch_dim
    if query.dim() == 2:  # unbatched (L, E)
        batch, lq, lk = 1, query.shape[0], key.shape[0]
    else:
        batch, lq, lk = query.shape[batch_dim], query.shape[seq_dim], key.shape[seq_dim]
    e, kd, vd = module.embed_dim, module.kdim, module.vdim
    projections = lq * e * e + lk * kd * e + lk * vd * e + lq * e * e  # q, k, v in; out
    attention = 2 * lq * lk * e  # Q K^T and A V, summed over heads
    return int(batch * (projections + attention))


def _example(model: nn.Module, input_shape: tuple[int, ...] | None, example: torch.Tensor | None) -> torch.Tensor:
    if example is not None:
        return example
    if input_shape is None:
        raise ValueError("give input_shape (without the batch dimension) or an example input")
    try:
        ref = next(model.parameters())
        device, dtype = ref.device, ref.dtype if ref.dtype.is_floating_point else torch.float32
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    return torch.zeros((1, *tuple(int(d) for d in input_shape)), device=device, dtype=dtype)


def _run_with_hooks(
    model: nn.Module,
    input_shape: tuple[int, ...] | None,
    example: torch.Tensor | None,
    on_call: Callable[[nn.Module, tuple[Any, ...], Any], None],
) -> None:
    """One eval-mode, no-grad forward with `on_call` hooked on every leaf module (and every
    MultiheadAttention, whose inner projections are not separate calls); the model's mode is kept."""
    x = _example(model, input_shape, example)
    handles = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) or not any(True for _ in module.children()):
            handles.append(module.register_forward_hook(lambda m, i, o: on_call(m, i, o)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def count_macs(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, *, example: torch.Tensor | None = None
) -> int:
    """Multiply-accumulates of one forward pass on a single sample of `input_shape` (no batch dim),
    or on `example` (batch included) for inputs that are not float images (token ids)."""
    total = 0

    def add(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal total
        total += module_macs(module, inputs, output)

    _run_with_hooks(model, input_shape, example, add)
    return total


def model_features(
    model: nn.Module, input_shape: tuple[int, ...] | None = None, *, example: torch.Tensor | None = None
) -> dict[str, int]:
    """Architecture features for one sample: ``macs``, ``params``, ``activation_bytes`` (float32 size of
    every leaf module's output, summed: a proxy for memory traffic) and, for each kind in LAYER_KINDS,
    how many such layers ran (``conv``, ``depthwise_conv``, ``linear``, ``bn``, ``act``, ``pool``)."""
    feats: dict[str, int] = {"macs": 0, "params": count_params(model), "activation_bytes": 0}
    feats.update({kind: 0 for kind in LAYER_KINDS})

    def add(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        feats["macs"] += module_macs(module, inputs, output)
        out = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(out, torch.Tensor):
            feats["activation_bytes"] += int(out.numel()) * 4
        kind = layer_kind(module)
        if kind is not None:
            feats[kind] += 1

    _run_with_hooks(model, input_shape, example, add)
    return feats
