"""TensorRT facts and pure logic that need no TensorRT: the ONNX operator support list, the opset
range, the TensorRT 10/11 version rules (strong typing, the builder flags and trtexec options 11.x
removed), the engine-cache key and `trtexec --exportTimes` parsing.

Kept apart from tensorrt.py so it is fully tested here, where TensorRT cannot be installed.
Device side: numpy + stdlib only.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import ExportError, ModelError

# Opsets the TensorRT 10.x ONNX parser accepts ("opset 9 and above", up to the ONNX version the
# release bundles; 10.0 ships with ONNX 1.16 = opset 21). TensorRT 11.x accepts 9..25 (ONNX opset
# guide: ONNX 1.20), so this narrower range holds for both. We export opset 18.
TRT10_MIN_OPSET = 9
TRT10_MAX_OPSET = 20

# ONNX operators the TensorRT 10 ONNX parser supports, from onnx-tensorrt's docs/operators.md
# ("Supported ONNX Operators", TensorRT 10.x column Y; TensorRT 11.x's opset guide points to the same
# list). Restrictions (e.g. Conv weights must be initializers, QuantizeLinear zero point 0) are checked
# by the parser itself on the device.
TRT10_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Col2Im Concat Constant ConstantOfShape Conv ConvTranspose Cos
Cosh CumSum DFT DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal
Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean
MeanVarianceNormalization MelWeightMatrix Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze STFT Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze
Upsample Where Xor
""".split())

# Listed as unsupported ("N") in the same table; named in the error so the user knows it is a
# TensorRT limit, not an edgekd bug. Anything in neither set is unknown to TensorRT too.
TRT10_UNSUPPORTED_OPS = frozenset("""
BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Compress ConcatFromSequence ConvInteger Det DynamicQuantizeLinear
MatMulInteger MaxRoiPool MaxUnpool Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul SequenceAt SequenceConstruct SequenceEmpty SequenceErase
SequenceInsert SequenceLength SoftmaxCrossEntropyLoss SplitToSequence StringNormalizer TfIdfVectorizer
Unique
""".split())


def graph_ops(model: Any) -> list[tuple[str, str]]:
    """(domain, op_type) of every node in an onnx.ModelProto, including nested subgraphs."""
    found: list[tuple[str, str]] = []

    def walk(graph: Any) -> None:
        for node in graph.node:
            found.append((node.domain or "", node.op_type))
            for attr in node.attribute:
                if attr.g is not None and len(attr.g.node):
                    walk(attr.g)
                for sub in attr.graphs:
                    walk(sub)

    walk(model.graph)
    return found


def unsupported_ops(model: Any) -> list[str]:
    """Sorted names of the ops TensorRT 10's ONNX parser cannot import (custom domains included)."""
    bad = set()
    for domain, op in graph_ops(model):
        if domain not in ("", "ai.onnx") or op not in TRT10_SUPPORTED_OPS:
            bad.add(op if domain in ("", "ai.onnx") else f"{domain}::{op}")
    return sorted(bad)


def check_tensorrt_onnx(model: Any, *, source: str = "model") -> None:
    """ExportError (naming the op or shape) unless the ONNX graph is TensorRT-10 ready:
    supported ops only, an opset TensorRT 10 parses, and fully static input shapes."""
    bad = unsupported_ops(model)
    if bad:
        known = [op for op in bad if op in TRT10_UNSUPPORTED_OPS]
        why = "listed unsupported by TensorRT 10" if known else "not in TensorRT 10's ONNX operator list"
        raise ExportError(f"{source}: ONNX op(s) {', '.join(bad)} {why}; change the model or pick another format")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not TRT10_MIN_OPSET <= opset <= TRT10_MAX_OPSET:
        raise ExportError(f"{source}: opset {opset} outside TensorRT 10's {TRT10_MIN_OPSET}..{TRT10_MAX_OPSET}; "
                          f"export with --opset in that range")
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            raise ExportError(f"{source}: input {inp.name!r} has a dynamic shape; TensorRT artifacts are static")


# TensorRT majors this code is written for. 10.x: JetPack 6 (Jetson) and x86; strong typing is opt-in
# (NetworkDefinitionCreationFlag.STRONGLY_TYPED, trtexec --stronglyTyped). 11.x: x86 GPUs (no JetPack
# support); every network is strongly typed, the creation flag is deprecated and ignored.
SUPPORTED_TRT_MAJORS = (10, 11)

# Python names removed in TensorRT 11.x (TensorRT 10.x -> 11.x migration guide, "Removed Python APIs"):
# precision comes from the model (FP16 casts, Q/DQ nodes), never from the builder. None is used here
# on any version: the weak-typing ones are deprecated on 10.x too, and explicit Q/DQ needs none of them.
TRT11_REMOVED_BUILDER_FLAGS = frozenset({"FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                                         "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"})
TRT11_REMOVED_CONFIG_ATTRS = frozenset({"int8_calibrator", "set_calibration_profile", "get_calibration_profile",
                                        "set_quantization_flag", "get_quantization_flag", "quantization_flags",
                                        "clear_quantization_flag"})
TRT11_REMOVED_BUILDER_ATTRS = frozenset({"platform_has_fast_fp16", "platform_has_fast_int8"})
# trtexec options removed in 11.x (migration guide, "trtexec"): precision flags and INT8 calibration.
TRT11_REMOVED_TRTEXEC_OPTIONS = ("--fp16", "--int8", "--bf16", "--fp8", "--int4", "--best", "--calib")

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?")
_BANNER = re.compile(r"\[TensorRT v(\d+)(?:\.(\d+)\.(\d+))?\]")


def trt_major(version: str) -> int:
    """The major number of a TensorRT version string ("10.3.0", "11.4.1.5"). ModelError, naming the
    supported majors, for anything unparseable or older than 10 (no strong typing before 9.x, and
    edgekd's parser checks are for 10.x on). A later major is treated like 11.x: strongly typed always."""
    match = _VERSION.match(str(version))
    if match is None:
        raise ModelError(f"cannot read a TensorRT version from {version!r}; expected e.g. 10.3.0")
    major = int(match.group(1))
    if major < SUPPORTED_TRT_MAJORS[0]:
        raise ModelError(f"TensorRT {version} is too old: edgekd builds strongly typed engines on TensorRT "
                         f"{' or '.join(map(str, SUPPORTED_TRT_MAJORS))} (JetPack 6 ships 10.x)")
    return major


def parse_trtexec_banner(text: str) -> str | None:
    """The TensorRT version ("10.5.0") from the line trtexec prints first on every run, e.g.
    `&&&& RUNNING TensorRT.trtexec [TensorRT v100500] [b18] # trtexec --help`. The number is
    MAJOR*10000 + MINOR*100 + PATCH from 10.x on (8.x printed MAJOR*1000 + MINOR*100 + PATCH)."""
    match = _BANNER.search(text or "")
    if match is None:
        return None
    if match.group(2) is not None:  # a dotted banner, [TensorRT v10.5.0]
        return f"{int(match.group(1))}.{int(match.group(2))}.{int(match.group(3))}"
    n = int(match.group(1))
    major, rest = (n // 10000, n % 10000) if n >= 100000 else (n // 1000, n % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"


def trtexec_typing_options(trt_version: str) -> list[str]:
    """trtexec options that make the build strongly typed: `--stronglyTyped` on 10.x, nothing on 11.x
    (always strongly typed; the migration guide says the option is no longer needed). Never a precision
    option: the precision is in the ONNX graph (FP16 casts or Q/DQ nodes)."""
    return ["--stronglyTyped"] if trt_major(trt_version) == 10 else []


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str, precision: str,
                     accelerator: str = "gpu") -> str:
    """The plan-file cache key: an engine is only valid for this exact ONNX, TensorRT version, GPU
    model, precision and accelerator (plans are not portable across any of them). A GPU engine's key
    is the one it always was; another accelerator (dla) is part of the digest and the name."""
    parts = [onnx_sha256, trt_version, gpu_name.strip(), precision] + ([accelerator] if accelerator != "gpu" else [])
    raw = json.dumps(parts, separators=(",", ":"))
    digest = hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name.strip()).strip("-").lower() or "gpu"
    where = "" if accelerator == "gpu" else f"-{accelerator}"
    return f"{precision}-trt{trt_version}-{gpu_slug}{where}-{digest}"


TRTEXEC_TIME_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
                     "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs", "endToEndMs")


def parse_trtexec_times(path: str | Path, *, warmup_ms: float = 0.0) -> dict[str, Any]:
    """Parse a `trtexec --exportTimes=FILE` trace: a JSON list with one object per inference
    (keys TRTEXEC_TIME_KEYS, all in ms, timestamps relative to the run start). Entries whose compute
    starts before `warmup_ms` are warm-up and dropped, as trtexec's own report does. Returns
    per-metric sample lists in ms for latency (H2D+compute+D2H), compute (GPU only), end-to-end
    and enqueue, plus the count."""
    try:
        trace = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: unreadable trtexec times ({err})") from None
    if not isinstance(trace, list) or not all(isinstance(t, dict) for t in trace):
        raise ModelError(f"{path}: trtexec times must be a JSON list of objects")
    for i, entry in enumerate(trace):
        missing = [k for k in ("startComputeMs", "computeMs", "latencyMs") if k not in entry]
        if missing:
            raise ModelError(f"{path}: entry {i} lacks {', '.join(missing)}; is this an --exportTimes file?")
    kept = [t for t in trace if float(t["startComputeMs"]) >= warmup_ms]
    if not kept:
        raise ModelError(f"{path}: no inferences after the {warmup_ms} ms warm-up")

    def col(key: str) -> list[float]:
        return [float(t[key]) for t in kept if key in t]

    enqueue = [float(t["endEnqMs"]) - float(t["startEnqMs"]) for t in kept if "endEnqMs" in t and "startEnqMs" in t]
    return {"count": len(kept), "warmup_dropped": len(trace) - len(kept), "latency_ms": col("latencyMs"),
            "compute_ms": col("computeMs"), "end_to_end_ms": col("endToEndMs"), "h2d_ms": col("h2dMs"),
            "d2h_ms": col("d2hMs"), "enqueue_ms": enqueue}


def summarize_ms(samples: list[float]) -> dict[str, float]:
    """median / mean / p90 / p99 / min / max of a list of milliseconds."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        return {}
    return {"median": float(np.median(arr)), "mean": float(arr.mean()), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "min": float(arr.min()), "max": float(arr.max())}
