"""The terms of the latency model (`edgekd.latency.model`): what each one measures, and the design
row of one feature dict. Apart from the model so that the transfer correction
(`edgekd.latency.correction`), which works in the same terms, needs nothing else of the model.
Numpy only."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from edgekd.errors import ProfileError
from edgekd.latency.features import LEGACY_PAD_BLOCK, matvec_conv_macs, padded_conv_macs

# Terms of the model, in order: (name, unit label, function of (raw feature dict, channel pad blocks)).
TERMS: tuple[tuple[str, str, Any], ...] = (
    ("const", "per inference", lambda f, pad: 1.0),
    # MACs split by layer kind: a dense 3x3 conv, a depthwise conv and a matmul reach very different
    # fractions of peak on the same CPU, so one cost per MAC under- or over-predicts whole families
    ("conv_macs", "per MMAC in dense convs", lambda f, pad: f.get("conv_macs", f["macs"]) / 1e6),
    # CPU conv kernels compute whole blocks of channels, so 12 channels cost what 16 do (measured here:
    # cnn width 12 and 16 run in the same time). The padding is its own term, at the channel blocks
    # the fit chose for this device (`pad_block`); a device where it does not matter fits 0.
    ("conv_pad_macs", "per MMAC of channel padding to the device's channel blocks",
     lambda f, pad: padded_conv_macs(f, *pad) / 1e6),
    ("depthwise_macs", "per MMAC in depthwise convs", lambda f, pad: f.get("depthwise_macs", 0) / 1e6),
    # on top of conv_macs: 1 x 1 dense convs on a map (low arithmetic intensity) and the stem conv that
    # reads the image (1-4 channels: no full SIMD block; `features._conv_kind_macs`). With one cost per
    # conv MAC, fp32 fits priced the mobile families' 1 x 1 convs at the ResNets' 3 x 3 rate. Leave-one-
    # out over the 16 real-scale students of scripts/bench_scale.py (Zen 5 EPYC VM, 1 thread,
    # 2026-12-02), six runtime x precision configurations summed, without -> with: 4.88 -> 5.50 on the
    # calm run they were found on, 4.81 -> 5.31 on a fresh calm run measured after (ONNX Runtime fp32
    # 0.75 -> 1.00, OpenVINO fp32 0.62 -> 0.88, the rest unchanged); on two runs whose halves did not
    # repeat (0.25-0.94) 4.00 -> 3.94 and, 24 students, 5.04 -> 5.00: within their noise. The micro
    # space's calibration table unchanged, its transfer table within 4 points. Tried and not kept: choosing per
    # fit by k-fold CV whether they join (5.56 / 5.25: no better, and on ~15 points the choice flipped
    # with the order of the points). A device where every conv shape runs alike fits both ~0.
    ("pointwise_macs", "extra per MMAC in 1x1 dense convs on a map", lambda f, pad: f.get("pointwise_macs", 0) / 1e6),
    ("stem_macs", "extra per MMAC in convs reading the image (<= 4 channels)",
     lambda f, pad: f.get("stem_macs", 0) / 1e6),
    # convs at a fan-out of the graph (residual blocks, squeeze-excite; edgekd.latency.features): an
    # INT8 runtime may keep them float between dequantize / quantize (ONNX Runtime does), so an INT8
    # fit prices their MACs extra; an fp32 fit, where they cost what any conv does, keeps this at ~0
    ("branch_conv_macs", "extra per MMAC in convs at a graph fan-out (INT8 float islands)",
     lambda f, pad: f.get("branch_conv_macs", 0) / 1e6),
    # elementwise ops no runtime folds into the conv before them: non-clamp activations (hard-swish,
    # hard-sigmoid, SiLU, ...), gate multiplies (squeeze-excite) and reductions / pools (`features.
    # ELEMENTWISE_KINDS`). Their own memory-bound kernels in fp32; in INT8 graphs float islands behind a
    # dequantize / quantize pair. Leave-one-out on the 16 real-scale students of scripts/bench_scale.py
    # (AVX2 EPYC, 1 thread, 2026-11-30, the run whose halves repeated 0.81-0.94): ONNX Runtime INT8
    # 0.56 -> 0.94, OpenVINO fp32 0.75 -> 0.88, INT8 0.69 -> 0.94, LiteRT fp32 0.88 either way; on the
    # micro space's 50-student sets of that day equal or better (0.86-1.00)
    ("unfused_elements", "per M elements of unfused elementwise ops (non-clamp activations, gates, pools)",
     lambda f, pad: (f.get("act_elements", 0) + f.get("mul_elements", 0) + f.get("reduce_elements", 0)) / 1e6),
    # pools and reductions (max / average pools, global means) on top of that: LiteRT's INT8 kernels
    # price them apart from every other elementwise op. Leave-one-out on the real-scale students of
    # scripts/bench_scale.py (AVX2 EPYC, 1 thread, measurements repeating 1.00): LiteRT INT8 0.69 -> 0.94
    # (16 students, 2026-12-01 02:43) and 0.75 -> 0.92 (24 students, 03:19); the other five runtime x
    # precision fits unchanged but ONNX Runtime INT8 on the 16 (0.94 -> 0.88, one student), the micro
    # space's committed 22-student set unchanged (0.91); fits where it does not matter price it ~0
    ("reduce_elements", "extra per M elements entering pools and reductions",
     lambda f, pad: f.get("reduce_elements", 0) / 1e6),
    ("linear_macs", "per MMAC in linear layers", lambda f, pad: f.get("linear_macs", 0) / 1e6),
    # dense convs that are matrix-vector products (1x1 conv on a 1x1 map: squeeze-excite's FCs), on top
    # of their conv MACs: memory-bound, the same time at every input resolution, which a cost per conv
    # MAC cannot say (it made MobileNetV3 at low resolution too fast and at high resolution too slow).
    # Found by OpenVINO's per-node profile (FullyConnected: 0.50 ms of MobileNetV3-large's 4.2 ms at
    # 160 px and of 7.0 ms at 224 px). Leave-one-out on the real-scale students of scripts/bench_scale.py
    # (AVX2 EPYC, 1 thread): OpenVINO fp32 0.88 -> 1.00 (run F, 24 students) and 0.69 -> 0.94 (run D,
    # 16), ONNX Runtime INT8 0.88 -> 1.00 on D; OpenVINO INT8 on D and LiteRT fp32 on C lose one student
    # (0.94 -> 0.88); the rest and the micro space's committed set unchanged
    ("matvec_conv_macs", "extra per MMAC in convs that are matrix-vector products (1x1 conv on a 1x1 map)",
     lambda f, pad: matvec_conv_macs(f) / 1e6),
    # matmuls outside layers: a transformer's attention (QK^T, probs x V) grows with the square of the
    # sequence length, which no layer count or layer MAC sees
    ("matmul_macs", "per MMAC in matmuls outside layers (attention)", lambda f, pad: f.get("matmul_macs", 0) / 1e6),
    ("params", "per M params", lambda f, pad: f["params"] / 1e6),
    ("activation_bytes", "per MB of activations", lambda f, pad: f["activation_bytes"] / 1e6),
    ("conv", "per conv layer", lambda f, pad: f.get("conv", 0)),
    ("depthwise_conv", "per depthwise conv", lambda f, pad: f.get("depthwise_conv", 0)),
    ("linear", "per linear layer", lambda f, pad: f.get("linear", 0)),
    ("pool", "per pooling layer", lambda f, pad: f.get("pool", 0)),
)
TERM_NAMES = tuple(t[0] for t in TERMS)

def design_row(features: Mapping[str, Any], pad_block: Sequence[int] = LEGACY_PAD_BLOCK) -> np.ndarray:
    """The model's term values for one feature dict (see TERMS), channel padding at `pad_block`."""
    missing = [k for k in ("macs", "params", "activation_bytes") if k not in features]
    if missing:
        raise ProfileError(f"latency features lack {missing}; measure with this edgekd version (features are recorded)")
    pad = (int(pad_block[0]), int(pad_block[1]))
    return np.array([float(fn(features, pad)) for _, _, fn in TERMS], dtype=np.float64)
