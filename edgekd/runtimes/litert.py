"""LiteRT (TFLite): `.tflite` converted by litert-torch (no TensorFlow), fp32 or full-integer INT8.

INT8 goes through litert-torch's PT2E quantizer (symmetric per-channel weights, int8 activations
observed on real training samples), which yields a full-integer model whose input and output
tensors are int8 too; the runner quantizes the float input and dequantizes the logits itself, with
the scale/zero-point stored in the model. `layout="NHWC"` wraps the model so the file takes
channels-last images (what cameras and most edge pipelines produce) and skips a transpose on device.
Device side: numpy + ai_edge_litert (or the older tflite_runtime), imported lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgekd.errors import ExportError, RuntimeMissingError
from edgekd.runtimes.base import (Calibration, check_feeds, default_threads, read_manifest, run_in_chunks,
                                  static_batch, write_manifest)
from edgekd.runtimes.catalog import AdapterBase

MODEL_FILE = "model.tflite"
LAYOUTS = ("NCHW", "NHWC")
CALIBRATION_BATCH = 64


def _interpreter_class() -> tuple[Any, str, str]:
    """(Interpreter class, package name, version): ai_edge_litert first, tflite_runtime as a fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        from importlib import metadata

        try:
            version = metadata.version("ai-edge-litert")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return Interpreter, "ai_edge_litert", version
    except ImportError as first:
        try:
            import tflite_runtime
            from tflite_runtime.interpreter import Interpreter

            return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
        except ImportError:
            raise RuntimeMissingError(
                f"no LiteRT interpreter here ({first}); pip install 'edgekd[litert]' (ai-edge-litert) "
                "or tflite-runtime") from None


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: Any) -> np.ndarray:
    """Float -> integer with the tensor's affine parameters, rounded to nearest and saturated."""
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer -> float: (q - zero_point) * scale."""
    return ((q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class LiteRTRunner:
    """A LiteRT Interpreter with `num_threads`; integer I/O is (de)quantized here."""

    def __init__(self, artifact_dir: Path, *, threads: int | None = None, accelerator: str = "cpu") -> None:
        from edgekd.runtimes.catalog import check_accelerator

        check_accelerator("litert", accelerator)  # the CPU (XNNPACK) only: no delegate is loaded
        interpreter_cls, package, version = _interpreter_class()
        manifest = read_manifest(artifact_dir)
        threads = default_threads(threads)
        path = str(Path(artifact_dir) / manifest["model_file"])
        self.interpreter = interpreter_cls(model_path=path, num_threads=threads)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]
        self._out = self.interpreter.get_output_details()[0]
        # the manifest's name is the public one; the file's own tensor name is an exporter detail
        self.input_names = [manifest["inputs"][0]["name"]]
        self._batch = static_batch([int(d) for d in self._in["shape_signature"]])
        self._in_q = self._in["quantization"] if np.issubdtype(self._in["dtype"], np.integer) else None
        self._out_q = self._out["quantization"] if np.issubdtype(self._out["dtype"], np.integer) else None
        self.info = {"runtime": "litert", "package": package, "version": version, "threads": threads,
                     "precision": manifest["precision"], "device": "CPU", "accelerator": "cpu",
                     "io_dtype": np.dtype(self._in["dtype"]).name}

    def _run_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        x = feeds[self.input_names[0]]
        if self._in_q is not None:
            x = quantize(x, self._in_q[0], self._in_q[1], self._in["dtype"])
        self.interpreter.set_tensor(self._in["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._out["index"])
        if self._out_q is not None:
            return dequantize(y, self._out_q[0], self._out_q[1])
        return np.array(y, dtype=np.float32, copy=True)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds, self.input_names, "litert")
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        return run_in_chunks(self._run_batch, feeds, self._batch)


def _to_eval(graph: Any) -> None:
    """Put an exported graph in eval mode (exported modules refuse .eval(); torchao has a helper)."""
    try:
        from torchao.quantization.pt2e import move_exported_model_to_eval

        move_exported_model_to_eval(graph)
    except Exception:  # only affects a converter warning; the graph has no dropout/BN left after folding
        pass


def _convert(model: Any, sample: Any, precision: str, calibration: Calibration | None, *,
             layout: str, calibration_samples: int) -> Any:
    """litert_torch.convert, through the PT2E quantizer for int8. Returns the edge model."""
    import litert_torch
    import torch

    from edgekd.runtimes.host import INPUT_NAME, calibration_arrays

    if precision == "fp32":
        return litert_torch.convert(model, (sample,))
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    arrays = calibration_arrays(calibration, INPUT_NAME, calibration_samples)
    rows = np.concatenate(arrays, axis=0)[:calibration_samples]
    if layout == "NHWC":  # calibration data arrives NCHW like every other edgekd array
        rows = np.transpose(rows, (0, 2, 3, 1))
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    # calibrate with a dynamic batch (observers are slow per call, so few big calls beat many
    # batch-1 calls 30x); litert_torch.convert re-exports with `sample`, so the file stays static
    traced = torch.cat([sample, sample])  # a batch of 1 would specialize the dynamic dimension
    graph = torch.export.export(model, (traced,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    graph = quantize_pt2e.prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for start in range(0, rows.shape[0], CALIBRATION_BATCH):
            chunk = rows[start:start + CALIBRATION_BATCH]
            if chunk.shape[0] < 2:  # a batch of 1 would specialize the symbolic batch dimension
                chunk = np.concatenate([chunk, chunk])
            graph(torch.from_numpy(np.ascontiguousarray(chunk)))
    graph = quantize_pt2e.convert_pt2e(graph, fold_quantize=False)
    _to_eval(graph)
    return litert_torch.convert(graph, (sample,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


STANDALONE_LOADER = r'''
def load_runner(model, device):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    interp = Interpreter(model_path=model)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]

    def run(x):
        if i["dtype"] != np.float32:  # full-integer model: quantize the input, dequantize the output
            scale, zero = i["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(i["dtype"])
        interp.set_tensor(i["index"], x)
        interp.invoke()
        y = interp.get_tensor(o["index"])
        if o["dtype"] != np.float32:
            scale, zero = o["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y

    return run
'''


class LiteRTAdapter(AdapterBase):
    """Registered as `litert`: .tflite files run by the LiteRT interpreter (XNNPACK on ARM/x86 CPUs)."""

    name = "litert"
    format = "tflite"
    suffixes = (".tflite",)
    precisions = ("fp32", "int8")
    accelerators = {"cpu": "CPU"}
    # the older tflite_runtime wheel runs the same files; the agent reports it under its own name
    device_modules = (("litert", "ai_edge_litert", ("ai-edge-litert",)),
                      ("tflite_runtime", "tflite_runtime", ("tflite-runtime",)))
    listing_order = 30
    standalone_loader = STANDALONE_LOADER

    def unavailable_reason(self) -> str | None:
        try:
            _interpreter_class()
        except RuntimeMissingError as err:
            return str(err)
        return None

    def export(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
               layout: str = "NCHW", calibration_samples: int = 256, batch: int = 1, **_: Any) -> Path:
        """Convert with litert-torch (static batch) and write model.tflite + manifest."""
        if getattr(info, "task", "image") == "text":
            raise ExportError("LiteRT export of text (transformer) models is not implemented; use --format onnx,openvino")
        import torch

        from edgekd.runtimes.host import build_manifest, example_input, export_step, host_versions, quiet

        if precision not in self.precisions:
            raise ExportError(f"litert exports {', '.join(self.precisions)}, not {precision}")
        layout = str(layout).upper()
        if layout not in LAYOUTS:
            raise ExportError(f"litert layout must be one of {', '.join(LAYOUTS)}, got {layout}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = torch_model = model.eval()
        sample = example_input(info, batch)
        if layout == "NHWC":
            import litert_torch

            model = litert_torch.to_channel_last_io(model, args=[0]).eval()
            sample = sample.permute(0, 2, 3, 1).contiguous()
        with export_step("litert-torch conversion"), quiet(), torch.no_grad():
            edge = _convert(model, sample, precision, calibration, layout=layout,
                            calibration_samples=calibration_samples)
            edge.export(str(out_dir / MODEL_FILE))
        shape = [batch, *info.input_shape]
        if layout == "NHWC":
            shape = [batch, shape[2], shape[3], shape[1]]
        options: dict[str, Any] = {"layout": layout, "batch": batch}
        if precision == "int8":
            from edgekd.runtimes.int8_settings import litert_int8_settings

            # the same for every device, so not a `device_options`: a cached artifact fits them all
            options.update(quantizer="pt2e", per_channel=True, full_integer=True,
                           calibration_samples=calibration_samples, int8_settings=litert_int8_settings())
        manifest = build_manifest(torch_model, info, out_dir, fmt=self.format, runtime=self.name,
                                  precision=precision, model_file=MODEL_FILE, files=[MODEL_FILE], shape=shape,
                                  layout=layout,
                                  versions=host_versions("litert-torch", "ai-edge-litert"), options=options)
        write_manifest(out_dir, manifest)
        return out_dir

    def load(self, artifact_dir: Path, *, threads: int | None = None, **options: Any) -> LiteRTRunner:
        return LiteRTRunner(Path(artifact_dir), threads=threads, **options)
