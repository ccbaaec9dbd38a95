"""ONNX Runtime: a single-file ONNX model (dynamo exporter, pinned opset), fp32 or static INT8
(text models: dynamic or static INT8, `quantize_text_int8`).

INT8 is `onnxruntime.quantization.quantize_static` in QDQ format with per-channel weights, calibrated
on real training samples. Measured on x86: QOperator and dynamic quantization make conv nets 5-10x
*slower*; QDQ per-channel is the variant ONNX Runtime fuses into integer kernels, so it is the only
one offered. Its settings follow the target device's ISA (`int8_settings`: 7-bit weights on x86
without VNNI, where U8S8 kernels saturate; U8 activations on x86, where S8 ones leave shared tensors'
convs in fp32) and are recorded in the manifest, with how many convs this host's ONNX Runtime fuses
into integer kernels (`fused_convs`). Device side: numpy + onnxruntime, imported lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgekd.errors import ExportError, RuntimeMissingError
from edgekd.runtimes.int8_settings import ort_int8_settings
from edgekd.runtimes.base import (Calibration, check_feeds, default_threads, read_manifest, run_in_chunks,
                                  static_batch, write_manifest)
from edgekd.runtimes.catalog import AdapterBase

MODEL_FILE = "model.onnx"


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeMissingError(f"onnxruntime is not installed here ({err}); pip install 'edgekd[onnxruntime]'") from None
    return onnxruntime


# ONNX Runtime's session option for x86 without VNNI (AVX2 / AVX-512 / SSE4.1): U8U8 integer kernels
# (int32 sums) instead of U8S8 (saturating int16 pair sums); no effect elsewhere. Checked under emulation
# of such a CPU: tests/test_int8_isa_emulated.py
EXACT_INTEGER_CONFIG = ("session.x64quantprecision", "1")


class OnnxRuntimeRunner:
    """An InferenceSession with explicit intra/inter-op thread counts on one accelerator's execution
    provider (cpu: CPUExecutionProvider; gpu: CUDAExecutionProvider, refused when this onnxruntime
    build lacks it rather than silently measured on the CPU). `providers` overrides the list.
    `exact_integer`: on x86 without VNNI, run INT8 products through ONNX Runtime's U8U8 kernels, which
    accumulate in int32 (`EXACT_INTEGER_CONFIG`), instead of its U8S8 ones, whose int16 pair sums
    saturate on full 8-bit weights: the host's parity gate and accuracy runs use it, so an artifact
    made for a device that does not saturate (VNNI, ARM) scores here what it scores there. Devices
    run artifacts as deployed (off)."""

    def __init__(self, artifact_dir: Path, *, threads: int | None = None, providers: list[str] | None = None,
                 model_file: str | None = None, accelerator: str = "cpu", exact_integer: bool = False) -> None:
        from edgekd.runtimes.catalog import check_accelerator

        accelerator = check_accelerator("onnxruntime", accelerator)
        ort = _import_ort()
        provider = OnnxRuntimeAdapter.accelerators[accelerator]
        if providers is None and provider != "CPUExecutionProvider":
            if provider not in ort.get_available_providers():
                raise RuntimeMissingError(f"this onnxruntime has no {provider} (it has "
                                          f"{', '.join(ort.get_available_providers())}); pip install onnxruntime-gpu")
            providers = [provider, "CPUExecutionProvider"]  # ops the GPU provider lacks fall back, as ORT does
        manifest = read_manifest(artifact_dir)
        threads = default_threads(threads)
        opts = ort.SessionOptions()
        # inter-op parallelism only helps graphs with parallel branches; pin it to 1 so `threads`
        # means one thing on every runtime (the intra-op pool size)
        opts.inter_op_num_threads = 1
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if exact_integer:
            opts.add_session_config_entry(*EXACT_INTEGER_CONFIG)
        providers = providers or ["CPUExecutionProvider"]
        path = Path(artifact_dir) / (model_file or manifest["model_file"])
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._output = self.session.get_outputs()[0].name
        self._batch = static_batch([d if isinstance(d, int) else -1 for d in self.session.get_inputs()[0].shape])
        # feed each input in its declared type: float32 for images, int64 ids/masks for text
        self._dtypes = {i.name: np.int64 if i.type == "tensor(int64)" else np.int32 if i.type == "tensor(int32)"
                        else np.float32 for i in self.session.get_inputs()}
        self.info = {"runtime": "onnxruntime", "version": ort.__version__, "threads": threads,
                     "precision": manifest["precision"], "providers": self.session.get_providers(),
                     "device": "CPU" if providers == ["CPUExecutionProvider"] else providers[0],
                     "accelerator": accelerator}

    def _run_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(self.session.run([self._output], feeds)[0], dtype=np.float32)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds, self.input_names, "onnxruntime")
        feeds = {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in feeds.items()}
        return run_in_chunks(self._run_batch, feeds, self._batch)


class FeedsReader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds (get_next / rewind)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self.pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.pos >= len(self.feeds):
            return None
        self.pos += 1
        return self.feeds[self.pos - 1]

    def rewind(self) -> None:
        self.pos = 0


def quantize_onnx_int8(src: Path, dst: Path, calibration: Calibration | None, *, batch: int,
                       calibration_samples: int = 256, method: str = "minmax",
                       settings: Mapping[str, Any] | None = None) -> None:
    """Static QDQ per-channel INT8 of `src` into `dst`, calibrated on real samples. `settings`: the
    device's `int8_settings.ort_int8_settings` (quant types, reduce_range); when None, the record for no identity."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.runtimes.host import INPUT_NAME, calibration_arrays, export_step, quiet, split_rows

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ExportError(f"unknown calibration method {method!r}; use one of {', '.join(methods)}")
    chosen = dict(settings or ort_int8_settings(None))
    rows = split_rows(calibration_arrays(calibration, INPUT_NAME, calibration_samples), batch)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    with export_step("onnxruntime quantize_static", pre), quiet():
        # shape inference + graph cleanup first: ORT's docs recommend it, and it lets the
        # quantizer see every tensor's shape (per-channel axes)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), FeedsReader([{INPUT_NAME: r} for r in rows]),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=getattr(QuantType, str(chosen["activation_type"])),
                        weight_type=getattr(QuantType, str(chosen["weight_type"])),
                        reduce_range=bool(chosen["reduce_range"]), calibrate_method=methods[method],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def fused_convs(model_path: Path) -> dict[str, int]:
    """How many of a model's convs this host's ONNX Runtime (CPU provider, full optimization) runs as
    integer QLinearConv: ``{"quantized": n, "convs": all}``. A conv left in fp32 between a
    DequantizeLinear and a QuantizeLinear costs more than its fp32 twin, so ``quantized < convs`` is an
    INT8 model that is partly slower, not faster (`int8_settings`: why S8 activations did that on x86)."""
    import tempfile

    import onnx

    ort = _import_ort()
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    quantized = ops.count("QLinearConv")
    return {"quantized": quantized,
            "convs": quantized + sum(ops.count(op) for op in ("Conv", "FusedConv", "NhwcFusedConv"))}


def _fused_record(model_path: Path) -> dict[str, Any]:
    """`fused_convs` for the manifest, with the ORT version that fused them; a diagnostic, so a failure
    to build the optimized graph is recorded, never fatal to the export."""
    try:
        got: dict[str, Any] = fused_convs(model_path)
    except Exception as err:  # noqa: BLE001 - ORT's own errors have no common base class
        got = {"error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"}
    return {**got, "onnxruntime": _import_ort().__version__, "where": "this host's ONNX Runtime (CPU provider)"}


#: INT8 of text (transformer) models: `dynamic` (weights int8 offline, activations quantized per call by
#: DynamicQuantizeLinear -> MatMulInteger) or `static` (QDQ, activations calibrated on real training
#: ids); `scripts/bench_text.py` measures both on the machine at hand, and DEFAULT_INT8_MODE is the one
#: that measured faster here (see docs/MEASUREMENTS.md "Text models")
INT8_MODES = ("dynamic", "static")
DEFAULT_INT8_MODE = "dynamic"


def quantize_text_int8(src: Path, dst: Path, *, mode: str = DEFAULT_INT8_MODE, pad_id: int = 0,
                       calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
                       calibration_samples: int = 128) -> dict[str, Any]:
    """INT8 of a text ONNX model with ONNX Runtime's quantizer; returns the options recorded.

    `dynamic`: MatMul/Gemm weights int8 (per-channel), activations quantized at run time -- no
    calibration, the usual choice for transformers. `static`: QDQ, per-channel weights, activations
    calibrated (MinMax) on real token ids. Embedding lookups (Gather) stay float in both: quantizing
    them saves size, not time, and costs accuracy.
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.runtimes.host import export_step, quiet
    from edgekd.runtimes.text_onnx import calibration_ids, text_feeds

    if mode not in INT8_MODES:
        raise ExportError(f"unknown int8 mode {mode!r} for a text model; use one of {', '.join(INT8_MODES)}")
    pre = dst.with_name(dst.stem + ".pre.onnx")
    with export_step(f"onnxruntime int8 ({mode}) of the text model", pre), quiet():
        # the dynamo exporter's value_info for a dynamic (batch, seq) graph contradicts ONNX shape
        # inference ("inferred shape and existing shape differ"), which the quantizer runs: drop
        # it and let inference recompute every shape
        graph = onnx.load(str(src))
        del graph.graph.value_info[:]
        onnx.save(graph, str(pre))
        quant_pre_process(str(pre), str(pre), skip_symbolic_shape=True)
        if mode == "dynamic":
            quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"])
            return {"int8_mode": "dynamic", "per_channel": True, "op_types": ["MatMul", "Gemm"]}
        rows = calibration_ids(calibration, calibration_samples)
        feeds = [text_feeds(r[None, :], pad_id) for r in rows]
        quantize_static(str(pre), str(dst), FeedsReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["MatMul", "Gemm"],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        return {"int8_mode": "static", "quant_format": "QDQ", "per_channel": True,
                "calibration_samples": len(rows), "op_types": ["MatMul", "Gemm"]}

STANDALONE_LOADER = r'''
def load_runner(model, device):
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=[device])
    return lambda x: session.run(None, {INPUT["name"]: x})[0]
'''


class OnnxRuntimeAdapter(AdapterBase):
    """Registered as `onnxruntime`: ONNX files run by ONNX Runtime on the CPU (or an NVIDIA GPU through
    the CUDA execution provider)."""

    name = "onnxruntime"
    format = "onnx"
    suffixes = (".onnx",)
    precisions = ("fp32", "int8")
    accelerators = {"cpu": "CPUExecutionProvider", "gpu": "CUDAExecutionProvider"}
    device_modules = (("onnxruntime", "onnxruntime", ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")),)
    listing_order = 10
    standalone_loader = STANDALONE_LOADER

    def device_options(self, precision: str, device_identity: Mapping[str, Any] | None, *,
                       task: str = "image") -> dict[str, Any]:
        """INT8 image models: the quantizer settings for the device (`int8_settings.ort_int8_settings`),
        what `export` applies and records as ``options.int8_settings``."""
        if precision == "int8" and task != "text":
            return {"int8_settings": ort_int8_settings(device_identity)}
        return {}

    def unavailable_reason(self) -> str | None:
        try:
            _import_ort()
        except RuntimeMissingError as err:
            return str(err)
        return None

    def export(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
               opset: int | None = None, batch: int = 1, dynamic_batch: bool = False,
               calibration_samples: int = 256, calibration_method: str = "minmax",
               device_identity: Mapping[str, Any] | None = None, **_: Any) -> Path:
        """Write model.onnx (+ manifest). `dynamic_batch` keeps the batch dimension symbolic.
        `device_identity` (the target device's fingerprint or hardware identity) chooses the INT8
        settings (`int8_settings.ort_int8_settings`: reduce_range on x86 without VNNI), recorded in
        the manifest's ``options.int8_settings``."""
        from edgekd.runtimes.host import DEFAULT_OPSET, build_manifest, export_onnx, host_versions

        if precision not in self.precisions:
            raise ExportError(f"onnxruntime exports {', '.join(self.precisions)}, not {precision}")
        if getattr(info, "task", "image") == "text":  # two int64 inputs, dynamic batch and sequence
            return self._export_text(model, info, out_dir, precision=precision, calibration=calibration, opset=opset,
                                     calibration_samples=calibration_samples, **_)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        opset = opset or DEFAULT_OPSET
        dst = out_dir / MODEL_FILE
        if precision == "fp32":
            export_onnx(model, info, dst, opset=opset, batch=batch, dynamic_batch=dynamic_batch)
        else:
            fp32 = out_dir / "model.fp32.onnx"
            export_onnx(model, info, fp32, opset=opset, batch=batch, dynamic_batch=dynamic_batch)
            int8 = self.device_options(precision, device_identity)["int8_settings"]
            try:
                quantize_onnx_int8(fp32, dst, calibration, batch=batch, calibration_samples=calibration_samples,
                                   method=calibration_method, settings=int8)
            finally:
                fp32.unlink(missing_ok=True)
        shape = [-1 if dynamic_batch else batch, *info.input_shape]
        options = {"opset": opset, "batch": batch, "dynamic_batch": dynamic_batch}
        if precision == "int8":
            options.update(quant_format="QDQ", per_channel=True, calibration_samples=calibration_samples,
                           calibration_method=calibration_method, int8_settings=int8,
                           fused_convs=_fused_record(dst))
        manifest = build_manifest(model, info, out_dir, fmt=self.format, runtime=self.name, precision=precision,
                                  model_file=MODEL_FILE, files=[MODEL_FILE], shape=shape,
                                  versions=host_versions("onnxruntime"), options=options)
        write_manifest(out_dir, manifest)
        return out_dir

    def _export_text(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
                     opset: int | None, calibration_samples: int, int8_mode: str | None = None, **_: Any) -> Path:
        """A text model: ONNX with dynamic batch and sequence axes; INT8 dynamic or static (`int8_mode`)."""
        from edgekd.runtimes.host import host_versions
        from edgekd.runtimes.text_onnx import export_text_onnx, finish_text_artifact, text_export_setup

        out_dir, max_len, pad_id, options = text_export_setup(info, out_dir, opset)
        if precision == "fp32":
            export_text_onnx(model, out_dir / MODEL_FILE, max_len=max_len, opset=options["opset"])
        else:
            fp32 = out_dir / "model.fp32.onnx"
            try:
                export_text_onnx(model, fp32, max_len=max_len, opset=options["opset"])
                options.update(quantize_text_int8(fp32, out_dir / MODEL_FILE, mode=int8_mode or DEFAULT_INT8_MODE,
                                                  pad_id=pad_id, calibration=calibration,
                                                  calibration_samples=calibration_samples))
            finally:
                fp32.unlink(missing_ok=True)
        return finish_text_artifact(model, info, out_dir, runtime=self.name, fmt=self.format, precision=precision,
                                    model_file=MODEL_FILE, files=[MODEL_FILE], versions=host_versions("onnxruntime"),
                                    options=options)

    def load(self, artifact_dir: Path, *, threads: int | None = None, **options: Any) -> OnnxRuntimeRunner:
        return OnnxRuntimeRunner(Path(artifact_dir), threads=threads, **options)
