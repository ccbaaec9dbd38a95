"""Architecture features for latency prediction: what a model costs, read from its structure alone.

One zero-input forward on the host (nothing timed), so any student of the search space can be
described before it exists or is trained: `models.model_features` (MACs, params, activation bytes,
layer counts) plus MACs split by layer kind, the MACs of matmuls outside any layer (attention), and
each dense conv's channel counts (`conv_shapes`), from which `padded_conv_macs` prices channel padding
at whatever blocks `edgekd.latency.model` finds the device computes in. Host side (torch imported lazily).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from edgekd.errors import ProfileError

FEATURE_KEYS = ("macs", "params", "activation_bytes", "conv", "depthwise_conv", "linear", "bn", "act", "pool",
                "conv_macs", "conv_shapes", "depthwise_macs", "linear_macs", "matmul_macs")
# Candidate channel block sizes (input, output) for the padding term; 1 = no padding. The fit tries
# every pair and keeps the one with the lowest cross-validated error. On this 2-core AVX-512 EPYC with
# ONNX Runtime fp32 the fit picks 32 in / 64 out in every measurement set; with the fixed 16/16 used
# before, the two 64-channel-aligned CNNs were over-predicted by 9-12 % in every run. (ONNX Runtime
# runs a conv in its 16-channel NCHWc layout only when the channel counts allow; the 64 is an
# empirical fit on top of that, not derived from the kernels.)
PAD_BLOCKS = (1, 8, 16, 32, 64)
# Features recorded before `conv_shapes` existed carry `conv_pad_macs`, computed at 16/16 blocks; it
# is also the pair a fit keeps when it has too few measurements to choose (edgekd.latency.model).
LEGACY_PAD_BLOCK = (16, 16)


def architecture_features(model: Any, input_shape: Sequence[int]) -> dict[str, Any]:
    """`edgekd.models.model_features` plus MACs split by layer kind (conv / depthwise / linear), the
    MACs of matmuls outside layers (`matmul_macs`: attention) and `conv_shapes`, the dense convs'
    channel counts (for the channel-padding term).

    Works on any nn.Module (a pruned or factorized student, a user's family): one zero-input forward,
    no timing. Layers of kinds it does not know (LayerNorm counts as `bn`, GELU as `act`; an
    Upsample, a PixelShuffle, a custom module) add their output to `activation_bytes` only; convs
    and matmuls called as functions (F.conv2d, torch.matmul, einsum) land in `matmul_macs`.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgekd.models import model_features
    from edgekd.models.counting import layer_kind, module_macs

    shape = tuple(int(d) for d in input_shape)
    feats = dict(model_features(model, shape))
    split = {"conv_macs": 0, "depthwise_macs": 0, "linear_macs": 0}
    names = {"conv": "conv_macs", "depthwise_conv": "depthwise_macs", "linear": "linear_macs"}
    shapes: list[str] = []  # "cin:cout:macs" per dense conv, in execution order (see padded_conv_macs)

    def hook(module: Any, inputs: Any, output: Any) -> None:
        kind = layer_kind(module)
        if kind in names:
            macs = int(module_macs(module, inputs, output))
            split[names[kind]] += macs
            if kind == "conv":  # a grouped conv: one group's channels (each group is padded on its own)
                g = module.groups
                shapes.append(f"{module.in_channels // g}:{module.out_channels // g}:{macs}")

    leaves = [m for m in model.modules() if layer_kind(m) in names]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        # the flop counter sees every matmul, also those outside layers (attention's QK^T and
        # probs x V in a transformer), which the per-layer hooks cannot
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros((1, *shape)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    feats = {k: int(v) for k, v in feats.items()}
    feats.update(split)
    feats["matmul_macs"] = max(0, int(counter.get_total_flops()) // 2 - sum(split.values()))
    feats["conv_shapes"] = " ".join(shapes)
    return feats


def padded_conv_macs(features: Mapping[str, Any], cin_block: int, cout_block: int) -> float:
    """Extra MACs the dense convs spend when input and output channels are rounded up to
    `cin_block` / `cout_block` (1 = not rounded). The first conv reads the plain image (1-3
    channels), which kernels take unblocked, so only its output channels are rounded.

    Reads `conv_shapes`; features recorded before it existed carry `conv_pad_macs` at
    LEGACY_PAD_BLOCK only (any other block raises ProfileError).
    """
    shapes = features.get("conv_shapes")
    if shapes is None:
        if (int(cin_block), int(cout_block)) == LEGACY_PAD_BLOCK:
            return float(features.get("conv_pad_macs", 0))
        raise ProfileError("these latency features predate per-conv shapes; re-run `edgekd profile calibrate`")

    def up(n: int, block: int) -> int:
        return -(-n // block) * block

    extra = 0.0
    for i, item in enumerate(str(shapes).split()):
        cin, cout, macs = (int(v) for v in item.split(":"))
        per_pair = macs / max(1, cin * cout)
        extra += per_pair * up(cout, cout_block) * (cin if i == 0 else up(cin, cin_block)) - macs
    return extra


@functools.lru_cache(maxsize=512)
def _spec_features_cached(spec: str, input_shape: tuple[int, ...], num_classes: int) -> tuple[tuple[str, Any], ...]:
    from edgekd.models import create_model, spec_input_shape

    shape = spec_input_shape(spec, input_shape)  # a spec with resolution=r runs at r x r whatever the data's size
    model = create_model(spec, shape, num_classes)
    return tuple(sorted(architecture_features(model, shape).items()))


def spec_features(spec: str, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Architecture features of the model a spec builds (macs, params, activation bytes, layer counts).

    Computed on the host from one zero-input forward of an untrained model (cached per spec/shape);
    nothing is timed, so this works for students that were never trained or measured. `input_shape`
    is the data's; a spec that fixes its own resolution is counted at that resolution.
    """
    return dict(_spec_features_cached(str(spec), tuple(int(d) for d in input_shape), int(num_classes)))
