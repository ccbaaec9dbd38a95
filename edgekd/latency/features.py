"""Architecture features for latency prediction: what a model costs, read from its structure alone.

One zero-input forward on the host (nothing timed), so any student of the search space can be
described before it exists or is trained: `models.model_features` (MACs, params, activation bytes,
layer counts) plus MACs split by layer kind, the MACs of matmuls outside any layer (attention), and
each dense conv's channel counts (`conv_shapes`), from which `padded_conv_macs` prices channel padding
at whatever blocks `edgekd.latency.model` finds the device computes in. Host side (torch imported lazily).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Iterator, Mapping, Sequence

from edgekd.errors import ProfileError

FEATURE_KEYS = ("macs", "params", "activation_bytes", "conv", "depthwise_conv", "linear", "bn", "act", "pool",
                "conv_macs", "conv_shapes", "depthwise_macs", "linear_macs", "matmul_macs",
                "clamp_elements", "act_elements", "add_elements", "mul_elements", "reduce_elements",
                "branch_conv_macs", "pointwise_macs", "stem_macs")
# a conv with at most this many input channels reads the image itself (gray, RGB, RGBA): `stem_macs`
STEM_MAX_CHANNELS = 4
# Elementwise work by kind, counted per torch op (its output elements; a reduction's input elements),
# whatever module or functional call issued it. The kinds are what runtimes treat differently, not a
# claim about any one runtime: clamp-style activations (ReLU, ReLU6) fold into the conv before them on
# every CPU runtime; other activations (hard-swish, hard-sigmoid, SiLU, GELU, ...) are their own kernels,
# and an INT8 runtime may run one in float behind a dequantize/quantize pair (ONNX Runtime's optimized
# INT8 graphs of our exports keep HardSigmoid, the SE Mul, ReduceMean and residual Adds float);
# adds are residual joins, muls squeeze-excite gates, reductions global pools. Recorded with every
# measurement; act + mul + reduce together are the model's `unfused_elements` term, and reduce is
# also a term of its own, `reduce_elements` (edgekd.latency.terms).
ELEMENTWISE_KINDS = {
    "clamp_elements": ("relu", "relu6", "hardtanh", "clamp", "clamp_min", "clamp_max"),
    "act_elements": ("hardswish", "hardsigmoid", "sigmoid", "silu", "gelu", "tanh", "elu", "leaky_relu", "mish",
                     "softmax", "_softmax"),
    "add_elements": ("add",),
    "mul_elements": ("mul",),
    "reduce_elements": ("mean", "sum", "avg_pool2d", "_adaptive_avg_pool2d", "adaptive_avg_pool2d",
                        "max_pool2d", "max_pool2d_with_indices"),
}
_REDUCTIONS = frozenset(ELEMENTWISE_KINDS["reduce_elements"])
# ops a conv's output passes through unchanged in kind (folded or fused by exporters): the tensor
# after them still "is" that conv's output for `branch_conv_macs`
_PASS_THROUGH = frozenset(ELEMENTWISE_KINDS["clamp_elements"] + ELEMENTWISE_KINDS["act_elements"]
                          + ("native_batch_norm", "_native_batch_norm_legit_no_training", "batch_norm"))
_OP_KIND = {op: kind for kind, ops in ELEMENTWISE_KINDS.items() for op in ops}
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


def _graph_counter() -> Any:
    """A torch dispatch mode that watches one forward: per ELEMENTWISE_KINDS kind, the elements each op
    of that kind writes (a reduction: reads), in `counts`; and `branch_conv_macs()`, the MACs of convs
    at a fan-out of the graph: whose input is also read by another op (the tensor a residual block
    both convolves and adds back) or whose output, through BN / activations, is read by more than one
    op (a block output the next residual reuses, the map a squeeze-excite gate pools and scales).
    Those are where an INT8 graph keeps float islands: in ONNX Runtime 1.31's optimized graphs of
    this project's INT8 exports, a QuantizeLinear with two consumers is not fused, so exactly these
    convs stayed float Conv between DequantizeLinear / QuantizeLinear (MobileNetV2 224 px: 15 of 52,
    the 15 this counts) while the others became QLinearConv."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class GraphCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.counts = {kind: 0 for kind in ELEMENTWISE_KINDS}
            self.keep: list[Any] = []  # every tensor seen stays alive, so no id() is reused mid-forward
            self.readers: dict[int, list[str]] = {}  # tensor id -> ops that read it
            self.conv_readers: dict[int, list[int]] = {}  # tensor id -> convs (index) that read it
            self.origin: dict[int, int] = {}  # tensor id -> the conv (index) whose output it is
            self.conv_macs: list[int] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            kind = _OP_KIND.get(name)
            if kind is not None:
                measured = args[0] if name in _REDUCTIONS else out
                measured = measured[0] if isinstance(measured, (tuple, list)) else measured
                if isinstance(measured, torch.Tensor):
                    self.counts[kind] += int(measured.numel())
            first = out[0] if isinstance(out, (tuple, list)) else out
            inputs = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
            if name == "convolution" and isinstance(first, torch.Tensor):
                weight = args[1]
                self.conv_macs.append(int(first.numel()) * int(weight[0].numel()))
                self.conv_readers.setdefault(id(args[0]), []).append(len(self.conv_macs) - 1)
                self.origin[id(first)] = len(self.conv_macs) - 1
                inputs = inputs[:1]  # the weight and bias are parameters, not graph edges
            elif name in _PASS_THROUGH and inputs and id(inputs[0]) in self.origin and isinstance(first, torch.Tensor):
                self.origin[id(first)] = self.origin[id(inputs[0])]
            for t in inputs:
                self.readers.setdefault(id(t), []).append(name)
            self.keep.extend(inputs)
            self.keep.extend(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
            return out

        def branch_conv_macs(self) -> int:
            branch: set[int] = set()
            for tid, ops in self.readers.items():
                fans_out = len(ops) > 1
                if fans_out:
                    branch.update(self.conv_readers.get(tid, []))
                    if tid in self.origin:
                        branch.add(self.origin[tid])
            return sum(self.conv_macs[i] for i in branch)

    return GraphCounter()


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside (restored after). Counting features is one forward of a
    small model with hooks on every layer: threads only add hand-offs, and on a loaded 2-vCPU machine
    (load 10) torch's own thread pool made `calibration_specs(48)` take 125 s against 7.9 s on one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def architecture_features(model: Any, input_shape: Sequence[int]) -> dict[str, Any]:
    """`edgekd.models.model_features` plus MACs split by layer kind (conv / depthwise / linear), the
    MACs of matmuls outside layers (`matmul_macs`: attention), `conv_shapes`, the dense convs'
    channel counts (for the channel-padding term), elementwise work by kind (ELEMENTWISE_KINDS) and
    `branch_conv_macs` (convs next to a residual fan-out / join or a gate; `_graph_counter`).

    Works on any nn.Module (a pruned or factorized student, a user's family): one zero-input forward,
    no timing. Layers of kinds it does not know (LayerNorm counts as `bn`, GELU as `act`; an
    Upsample, a PixelShuffle, a custom module) add their output to `activation_bytes` only; convs
    and matmuls called as functions (F.conv2d, torch.matmul, einsum) land in `matmul_macs`.
    """
    with one_torch_thread():
        return _architecture_features(model, input_shape)


def _architecture_features(model: Any, input_shape: Sequence[int]) -> dict[str, Any]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from edgekd.models import model_features
    from edgekd.models.counting import layer_kind, module_macs

    shape = tuple(int(d) for d in input_shape)
    feats = dict(model_features(model, shape))
    split = {"conv_macs": 0, "depthwise_macs": 0, "linear_macs": 0}
    shape_split = {"pointwise_macs": 0, "stem_macs": 0}  # parts of conv_macs (see _conv_kind_macs)
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
                for name, part in _conv_kind_macs(module, output, macs).items():
                    shape_split[name] += part

    leaves = [m for m in model.modules() if layer_kind(m) in names]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        # the flop counter sees every matmul, also those outside layers (attention's QK^T and
        # probs x V in a transformer), which the per-layer hooks cannot
        graph = _graph_counter()
        with torch.no_grad(), FlopCounterMode(display=False) as counter, graph:
            model(torch.zeros((1, *shape)))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    feats = {k: int(v) for k, v in feats.items()}
    feats.update(split)
    feats.update(shape_split)
    feats["matmul_macs"] = max(0, int(counter.get_total_flops()) // 2 - sum(split.values()))
    feats["conv_shapes"] = " ".join(shapes)
    feats.update(graph.counts)
    feats["branch_conv_macs"] = graph.branch_conv_macs()
    graph.keep.clear()
    return feats


def _conv_kind_macs(module: Any, output: Any, macs: int) -> dict[str, int]:
    """A dense conv's MACs by what limits its speed, for the `pointwise_macs` / `stem_macs` terms.

    `pointwise_macs`: a 1 x 1 conv on a map of more than one position. It does one MAC per weight
    per position, where a 3 x 3 conv of the same channels does nine per input element, so it moves
    more bytes per MAC and runs further below peak (a 1 x 1 conv on a 1 x 1 map is a
    matrix-vector product, priced apart: `matvec_conv_macs`). `stem_macs`: a conv reading the image
    (at most STEM_MAX_CHANNELS input channels): its 1-4 input channels fill no SIMD lane block,
    so kernels run it in a generic path. Their terms in the model, and what they changed:
    `edgekd.latency.terms`."""
    out = output[0] if isinstance(output, (tuple, list)) else output
    # from the shape only: indexing the tensor here would be an op the graph counter sees as a reader
    positions = math.prod(int(d) for d in tuple(getattr(out, "shape", ()))[2:])
    kernel = tuple(int(k) for k in getattr(module, "kernel_size", (1,)))
    return {"pointwise_macs": macs if all(k == 1 for k in kernel) and positions > 1 else 0,
            "stem_macs": macs if int(module.in_channels) <= STEM_MAX_CHANNELS else 0}


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
    for i, (cin, cout, macs) in enumerate(conv_shape_items(shapes)):
        per_pair = macs / max(1, cin * cout)
        extra += per_pair * up(cout, cout_block) * (cin if i == 0 else up(cin, cin_block)) - macs
    return extra


def matvec_conv_macs(features: Mapping[str, Any]) -> float:
    """MACs of the dense convs that use each weight once per inference: a 1 x 1 conv on a 1 x 1 map
    (squeeze-excite's two FCs, a conv head after the global pool). A matrix-vector product: it reads
    every weight for one MAC, so it is bound by memory, not compute, and costs the same at any input
    resolution; OpenVINO runs it as FullyConnected (profiled on the AVX2 EPYC, MobileNetV3-large at
    160 and 224 px: 0.50 ms of 4.2 and 7.0 ms in FullyConnected either way). Reads `conv_shapes`
    (0 for features recorded before it)."""
    return float(sum(macs for cin, cout, macs in conv_shape_items(features.get("conv_shapes")) if macs == cin * cout))


def conv_shape_items(shapes: str | None) -> Iterator[tuple[int, int, int]]:
    """(cin, cout, macs) per dense conv of a `conv_shapes` string ("cin:cout:macs ..."; none for None)."""
    for item in str(shapes or "").split():
        cin, cout, macs = (int(v) for v in item.split(":"))
        yield cin, cout, macs


@functools.lru_cache(maxsize=512)
def _spec_features_cached(spec: str, input_shape: tuple[int, ...], num_classes: int) -> tuple[tuple[str, Any], ...]:
    from edgekd.latency import features_store
    from edgekd.models import create_model, spec_input_shape

    stored = features_store.load(spec, input_shape, num_classes)  # built once on this machine, by this code
    if stored is not None:
        return tuple(sorted(stored.items()))
    shape = spec_input_shape(spec, input_shape)  # a spec with resolution=r runs at r x r whatever the data's size
    with one_torch_thread():  # the model's init and its one forward
        model = create_model(spec, shape, num_classes)
        feats = _architecture_features(model, shape)
    features_store.save(spec, input_shape, num_classes, feats)
    return tuple(sorted(feats.items()))


def spec_features(spec: str, input_shape: Sequence[int], num_classes: int) -> dict[str, Any]:
    """Architecture features of the model a spec builds (macs, params, activation bytes, layer counts).

    Computed on the host from one zero-input forward of an untrained model (cached per spec/shape,
    and on disk for edgekd's own families: `edgekd.latency.features_store`);
    nothing is timed, so this works for students that were never trained or measured. `input_shape`
    is the data's; a spec that fixes its own resolution is counted at that resolution.
    """
    return dict(_spec_features_cached(str(spec), tuple(int(d) for d in input_shape), int(num_classes)))
