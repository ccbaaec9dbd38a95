"""Host side of TensorRT reduced precision: the precision is written into the ONNX graph here, so a
TensorRT 10 or 11 device only parses a strongly typed network and builds it, with no builder precision
flag and no calibrator (TensorRT 11 removed both; 10.x deprecates the calibrator since 10.1).

- FP16: onnxconverter-common's float16 conversion casts weights and compute to float16, keeps the
  graph inputs and outputs float32 (`keep_io_types`), and keeps the ops in FP32_OPS in float32 behind
  Cast nodes (reductions, normalizations, exponentials: where float16 loses range or accumulates error).
- INT8: ONNX Runtime's static quantizer (the QDQ per-channel path the onnxruntime adapter uses,
  calibrated on real samples) set to TensorRT's explicit-quantization form: Q/DQ only on the inputs of
  the weighted ops (WEIGHTED_OPS: data and weights), never on their outputs, symmetric INT8 with zero
  point 0, weights per output channel (pre-quantized INT8 initializer -> DequantizeLinear), activations
  per tensor, biases left in float. An activation that also feeds another op (a residual Add) shares the
  weighted op's Q/DQ pair, which is also what TensorRT's placement advice asks for skip connections.

Both graphs are verified after writing (`check_fp16_graph`, `check_qdq_graph`), so a graph that is not
in that form fails the export and names the node. Host only: onnx, onnxruntime and
onnxconverter-common are imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import ExportError
from edgekd.runtimes.base import Calibration

# Ops kept in float32 in the FP16 graph: reductions and statistics-computing normalizations (a sum or
# sum of squares in float16 loses precision and can overflow 65504), exponentials/logs/powers (range),
# softmax. Not BatchNormalization: at inference it is a per-channel affine that TensorRT fuses into the
# preceding Conv, and Casts around it would block that fusion.
FP32_OPS = frozenset({
    "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
    "Range", "CumSum", "TopK", "NonMaxSuppression",
})

# The ops TensorRT runs in INT8 from Q/DQ on their inputs ("Q/DQ layer placement": quantize all inputs
# of weighted operations; outputs stay unquantized). Per-channel weight axis = the output-channel axis.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

FLOAT, INT8, FLOAT16 = 1, 3, 10  # onnx.TensorProto element types


def _output_channel_axis(node: Any) -> int:
    """The weight axis that indexes output channels: Conv [K,C,...] 0; ConvTranspose [C,K,...] 1;
    Gemm B [K,N] 1, or [N,K] 0 with transB; MatMul B [K,N] 1."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 1


def _tensor_types(model: Any) -> dict[str, int]:
    """Element type of every named tensor (graph I/O, inferred value_info, initializers, Constants)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.input, *graph.output, *graph.value_info]}
    types.update({init.name: init.data_type for init in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
    return types


def check_fp16_graph(model: Any, *, source: str = "model") -> dict[str, Any]:
    """ExportError unless `model` is the FP16 graph TensorRT should get: float32 graph inputs and
    outputs, every FP32_OPS node entirely in float32, every weighted op computing in float16.
    Returns counts (fp16 weighted nodes, fp32-kept nodes, Cast nodes)."""
    types = _tensor_types(model)
    graph = model.graph
    for vi in [*graph.input, *graph.output]:
        if vi.type.tensor_type.elem_type != FLOAT:
            raise ExportError(f"{source}: graph I/O {vi.name!r} is not float32; the FP16 graph keeps its I/O types")
    kept, fp16 = [], []
    for node in graph.node:
        names = [n for n in [*node.input, *node.output] if n]
        if node.op_type in FP32_OPS:
            if any(types.get(n) == FLOAT16 for n in names):
                raise ExportError(f"{source}: {node.op_type} {node.name!r} was cast to float16; it must stay float32")
            kept.append(node.name)
        elif node.op_type in WEIGHTED_OPS:
            if types.get(node.input[0]) != FLOAT16 or types.get(node.input[1]) != FLOAT16:
                raise ExportError(f"{source}: {node.op_type} {node.name!r} does not compute in float16")
            fp16.append(node.name)
    if not fp16:
        raise ExportError(f"{source}: no weighted op computes in float16; the FP16 cast did nothing")
    return {"fp16_weighted_nodes": len(fp16), "fp32_kept_nodes": kept,
            "casts": sum(node.op_type == "Cast" for node in graph.node)}


def check_qdq_graph(model: Any, *, source: str = "model") -> dict[str, Any]:
    """ExportError unless `model` carries Q/DQ exactly in TensorRT's form: both data inputs of every
    weighted op come from DequantizeLinear (activation: Q->DQ per tensor; weight: INT8 initializer ->
    DQ per output channel), every DequantizeLinear feeds a weighted op (an activation pair may also feed
    another consumer of the same tensor, e.g. a residual Add), none feeds a bias, weights feed nothing
    else, and every Q/DQ is INT8 with a stored zero point of 0. Returns the quantized node names and
    pair counts."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, i))

    def array(name: str) -> Any:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        zp_name = node.input[2] if len(node.input) > 2 else ""
        zp = array(zp_name) if zp_name else None
        if zp is None or inits[zp_name].data_type != INT8 or zp.any():
            raise ExportError(f"{source}: {node.op_type} {node.name!r} is not symmetric INT8 (zero point must be an "
                              "int8 initializer of 0 for TensorRT)")
        if node.op_type == "DequantizeLinear":
            uses = consumers.get(node.output[0], [])
            weighted = [(c, i) for c, i in uses if c.op_type in WEIGHTED_OPS]
            bad = [(c.op_type, c.name, i) for c, i in weighted if i > 1]  # a quantized bias
            if node.input[0] in inits:  # a weight: only ever the weight input of weighted ops
                bad += [(c.op_type, c.name, i) for c, i in uses if c.op_type not in WEIGHTED_OPS or i != 1]
            if not weighted:
                raise ExportError(f"{source}: DequantizeLinear {node.name!r} feeds no weighted op; TensorRT's placement "
                                  "puts Q/DQ on the data and weight inputs of weighted ops only")
            if bad:
                op, name, i = bad[0]
                raise ExportError(f"{source}: DequantizeLinear {node.name!r} feeds {op} {name!r} input {i}; only data "
                                  "and weight inputs of weighted ops are quantized (biases stay float)")
        else:
            bad = [c.op_type for c, _ in consumers.get(node.output[0], []) if c.op_type != "DequantizeLinear"]
            if bad:
                raise ExportError(f"{source}: QuantizeLinear {node.name!r} feeds {bad[0]}, not a DequantizeLinear")

    quantized, per_channel = [], 0
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        act, weight = (producer.get(name) for name in node.input[:2])
        if act is None or act.op_type != "DequantizeLinear" or weight is None or weight.op_type != "DequantizeLinear":
            raise ExportError(f"{source}: {node.op_type} {node.name!r} has an input without Q/DQ; TensorRT would run "
                              "it in float")
        if producer.get(act.input[0]) is None or producer[act.input[0]].op_type != "QuantizeLinear":
            raise ExportError(f"{source}: activation of {node.op_type} {node.name!r} is not a Q->DQ pair")
        if array(act.input[1]) is None or array(act.input[1]).size != 1:
            raise ExportError(f"{source}: activation scale of {node.op_type} {node.name!r} is not per tensor")
        w = array(weight.input[0])
        if w is None or inits[weight.input[0]].data_type != INT8:
            raise ExportError(f"{source}: weight of {node.op_type} {node.name!r} is not a stored INT8 initializer")
        axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        want = _output_channel_axis(node)
        scale = array(weight.input[1])
        if w.shape[want] > 1 and (axis % w.ndim != want or scale is None or scale.size != w.shape[want]):
            raise ExportError(f"{source}: weight of {node.op_type} {node.name!r} is not quantized per output channel "
                              f"(axis {axis}, {0 if scale is None else scale.size} scales, want axis {want})")
        per_channel += int(w.shape[want] > 1)
        quantized.append(node.name)
    if not quantized:
        raise ExportError(f"{source}: no weighted op is quantized; the INT8 graph has no Q/DQ")
    return {"quantized_nodes": quantized, "weights_per_channel": per_channel,
            "quantize_nodes": sum(n.op_type == "QuantizeLinear" for n in graph.node),
            "dequantize_nodes": sum(n.op_type == "DequantizeLinear" for n in graph.node)}


def _save(model: Any, dst: Path) -> None:
    import onnx

    from edgekd.fileio import atomic_write_with

    atomic_write_with(Path(dst), lambda tmp: onnx.save(model, str(tmp)))


def _float32_outputs(model: Any) -> None:
    """Make every float16 graph output float32 again, in place. onnxconverter-common 1.16's
    keep_io_types misses an output produced by a blocked (float32) op: it casts the float32 result down
    to float16 and declares the output float16. Such a trailing Cast is dropped (the float32 value is
    the output); any other float16 output gets a Cast to float32."""
    from onnx import helper

    graph = model.graph
    for out in graph.output:
        if out.type.tensor_type.elem_type != FLOAT16:
            continue
        producer = next(n for n in graph.node if out.name in n.output)
        to = next((a.i for a in producer.attribute if a.name == "to"), None)
        if producer.op_type == "Cast" and to == FLOAT16:
            src = producer.input[0]
            graph.node.remove(producer)
            for node in graph.node:  # the float32 tensor now carries the output's name
                node.output[:] = [out.name if n == src else n for n in node.output]
                node.input[:] = [out.name if n == src else n for n in node.input]
        else:
            half = out.name + "_fp16"
            for node in graph.node:
                node.output[:] = [half if n == out.name else n for n in node.output]
                node.input[:] = [half if n == out.name else n for n in node.input]
            graph.node.append(helper.make_node("Cast", [half], [out.name], to=FLOAT, name=half + "_to_fp32"))
        out.type.tensor_type.elem_type = FLOAT


def cast_fp16(src: Path, dst: Path) -> dict[str, Any]:
    """The FP16 graph of `src` written to `dst` (checked by onnx.checker and check_fp16_graph).
    Returns the manifest options that describe it."""
    import onnx
    from onnxconverter_common import float16

    from edgekd.runtimes.host import export_step, quiet

    block = sorted(FP32_OPS | set(float16.DEFAULT_OP_BLOCK_LIST))
    with export_step("onnxconverter-common float16 cast"), quiet():
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, op_block_list=block)
        _float32_outputs(model)
        onnx.checker.check_model(model, full_check=True)
    summary = check_fp16_graph(model, source=str(dst))
    _save(model, dst)
    return {"precision_in_graph": "fp16 casts (onnxconverter-common float16, keep_io_types)",
            "fp32_ops": sorted(FP32_OPS), **summary}


def quantize_qdq_int8(src: Path, dst: Path, calibration: Calibration | None, *, batch: int,
                      calibration_samples: int = 512, method: str = "minmax") -> dict[str, Any]:
    """Explicit-Q/DQ INT8 graph of `src` written to `dst`, calibrated on real samples, in TensorRT's
    placement (see the module docstring), checked by onnx.checker and check_qdq_graph."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.runtimes.host import INPUT_NAME, calibration_arrays, export_step, quiet, split_rows
    from edgekd.runtimes.onnxruntime import FeedsReader

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"unknown calibration method {method!r}; use one of {', '.join(methods)}")
    rows = split_rows(calibration_arrays(calibration, INPUT_NAME, calibration_samples), batch)
    dst = Path(dst)
    pre, tmp = dst.with_name(dst.stem + ".pre.onnx"), dst.with_name(dst.stem + ".qdq.tmp.onnx")
    with export_step("onnxruntime quantize_static (TensorRT Q/DQ)", pre, tmp), quiet():
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), FeedsReader([{INPUT_NAME: r} for r in rows]),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(WEIGHTED_OPS), per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=methods[method],
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "QuantizeBias": False, "ForceQuantizeNoInputCheck": False,
                                       "OpTypesToExcludeOutputQuantization": list(WEIGHTED_OPS)})
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model, full_check=True)
    summary = check_qdq_graph(model, source=str(dst))
    _save(model, dst)
    return {"precision_in_graph": "explicit Q/DQ (symmetric int8, per-channel weights, per-tensor activations)",
            "calibration_samples": int(sum(r.shape[0] for r in rows)), "calibration_method": method,
            "quantized_nodes": len(summary["quantized_nodes"]), "weights_per_channel": summary["weights_per_channel"],
            "quantize_nodes": summary["quantize_nodes"], "dequantize_nodes": summary["dequantize_nodes"]}
