"""OpenVINO: IR (model.xml + model.bin) converted from the ONNX export; fp32 or NNCF INT8.

INT8 is `nncf.quantize` on real training samples (its overflow fix following the device's ISA:
`int8_settings.openvino_int8_settings`, recorded in the manifest's ``options.int8_settings``), or with `accuracy_control=True`
`nncf.quantize_with_accuracy_control`, which keeps layers in fp32 until the drop on the labelled
validation split is at most `max_drop` points. The runner compiles for the accelerator it is given
(cpu -> "CPU", gpu -> "GPU", npu -> "NPU"; the thread count applies to the CPU only) and ALWAYS sets
and records INFERENCE_PRECISION_HINT: on CPUs with AVX512-BF16/AMX, OpenVINO defaults to bf16, which
silently changes results; an fp32 artifact runs with f32. Device side: numpy + openvino, imported lazily.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgekd.errors import ExportError, RuntimeMissingError
from edgekd.runtimes.base import (Calibration, check_feeds, default_threads, read_manifest, run_in_chunks,
                                  static_batch, write_manifest)
from edgekd.runtimes.catalog import AdapterBase

MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
# what the hint is for each artifact precision; INT8 layers run in int8 whatever the hint, the hint
# governs the layers NNCF kept in floating point
HINTS = {"fp32": "f32", "fp16": "f16", "int8": "f32"}


def _import_ov() -> Any:
    try:
        import openvino
    except ImportError as err:
        raise RuntimeMissingError(f"openvino is not installed here ({err}); pip install 'edgekd[openvino]'") from None
    return openvino


class OpenVINORunner:
    """A compiled model on one accelerator (the CPU by default) with explicit threads (CPU) and
    precision hint; `info` records the accelerator, OpenVINO's device name and the hint it reports."""

    def __init__(self, artifact_dir: Path, *, threads: int | None = None, accelerator: str = "cpu",
                 precision_hint: str | None = None, performance_hint: str = "LATENCY") -> None:
        from edgekd.runtimes.catalog import check_accelerator

        accelerator = check_accelerator("openvino", accelerator)
        device = OpenVINOAdapter.accelerators[accelerator]
        ov = _import_ov()
        manifest = read_manifest(artifact_dir)
        threads = default_threads(threads)
        hint = precision_hint or HINTS[manifest["precision"]]
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": performance_hint}
        if threads is not None and device == "CPU":
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        # the CPU plugin ships in every wheel; asking for the device list would load every plugin (load_ms)
        if device != "CPU" and not any(d.split(".")[0] == device for d in core.available_devices):
            raise RuntimeMissingError(f"OpenVINO sees no {device} here (devices: {', '.join(core.available_devices)}); "
                                      f"install the {device} driver, or measure on another accelerator")
        self.compiled = core.compile_model(str(Path(artifact_dir) / manifest["model_file"]), device, config)
        self.request = self.compiled.create_infer_request()
        port = self.compiled.inputs[0]
        # every input, in order (text models take input_ids and attention_mask), with its element type
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self._dtypes = {p.get_any_name(): np.int64 if p.get_element_type().get_type_name() == "i64" else np.float32
                        for p in self.compiled.inputs}
        pshape = port.get_partial_shape()
        self._batch = static_batch([d.get_length() if d.is_static else -1 for d in pshape])
        hint_value = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: record "f32"
        actual_hint = hint_value.to_string() if hasattr(hint_value, "to_string") else str(hint_value)
        actual_threads = self.compiled.get_property("INFERENCE_NUM_THREADS") if device == "CPU" else None
        self.info = {"runtime": "openvino", "version": ov.get_version(), "threads": threads,
                     "effective_threads": actual_threads, "precision": manifest["precision"],
                     "precision_hint": actual_hint, "performance_hint": performance_hint, "device": device,
                     "accelerator": accelerator}

    def _run_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.request.infer({i: feeds[name] for i, name in enumerate(self.input_names)})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds, self.input_names, "openvino")
        feeds = {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in feeds.items()}
        return run_in_chunks(self._run_batch, feeds, self._batch)


def _accuracy_fn(input_name: str):  # type: ignore[no-untyped-def]
    """nncf's validation_fn(compiled_model, data) -> accuracy in [0, 1], over (x, y) pairs."""

    def validate(compiled_model: Any, data: Any) -> float:
        correct = total = 0
        for x, y in data:
            logits = compiled_model({0: x})[compiled_model.outputs[0]]
            correct += int((np.argmax(logits, axis=1) == y).sum())
            total += len(y)
        return correct / max(total, 1)

    return validate


def quantize_ir_int8(ov_model: Any, calibration: Calibration | None, *, batch: int, calibration_samples: int,
                     accuracy_control: bool, max_drop: float, validation: tuple[np.ndarray, np.ndarray] | None,
                     settings: Mapping[str, Any] | None = None) -> Any:
    """NNCF post-training INT8 (optionally accuracy-bounded) of an OpenVINO model. `settings`: the
    device's `int8_settings.openvino_int8_settings` (preset, overflow fix); NNCF's defaults when None."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    from edgekd.runtimes.host import INPUT_NAME, calibration_arrays, export_step, quiet, split_rows
    from edgekd.runtimes.int8_settings import openvino_int8_settings

    chosen = dict(settings or openvino_int8_settings(None))
    preset = nncf.QuantizationPreset(chosen["preset"])
    advanced = AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix(chosen["overflow_fix"]))
    rows = split_rows(calibration_arrays(calibration, INPUT_NAME, calibration_samples), batch)
    calib = nncf.Dataset(rows)
    with export_step("nncf quantization"), quiet():
        if not accuracy_control:
            return nncf.quantize(ov_model, calib, subset_size=len(rows), preset=preset, advanced_parameters=advanced)
        if validation is None:
            raise ExportError("accuracy-controlled int8 needs a labelled validation split; pass --data")
        xv, yv = validation
        pairs = [(xv[i:i + batch], yv[i:i + batch]) for i in range(0, (len(xv) // batch) * batch, batch)]
        return nncf.quantize_with_accuracy_control(
            ov_model, calib, nncf.Dataset(pairs), validation_fn=_accuracy_fn(INPUT_NAME),
            max_drop=max_drop / 100.0, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(rows), preset=preset,
            advanced_quantization_parameters=advanced)


STANDALONE_LOADER = r'''
def load_runner(model, device):
    import openvino as ov

    compiled = ov.Core().compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: compiled(x)[compiled.output(0)]
'''


class OpenVINOAdapter(AdapterBase):
    """Registered as `openvino`: OpenVINO IR run by the OpenVINO runtime (CPU, iGPU, NPU)."""

    name = "openvino"
    format = "openvino"
    suffixes = (".xml", ".bin")
    precisions = ("fp32", "int8")
    accelerators = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}  # edgekd name -> OpenVINO device
    device_modules = (("openvino", "openvino", ("openvino",)),)
    listing_order = 20
    standalone_loader = STANDALONE_LOADER

    def device_options(self, precision: str, device_identity: Mapping[str, Any] | None, *,
                       task: str = "image") -> dict[str, Any]:
        """INT8 image models: NNCF's settings for the device (`int8_settings.openvino_int8_settings`:
        the overflow fix follows VNNI), what `export` applies and records as ``options.int8_settings``."""
        if precision == "int8" and task != "text":
            from edgekd.runtimes.int8_settings import openvino_int8_settings

            return {"int8_settings": openvino_int8_settings(device_identity)}
        return {}

    def unavailable_reason(self) -> str | None:
        try:
            _import_ov()
        except RuntimeMissingError as err:
            return str(err)
        return None

    def export(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
               opset: int | None = None, batch: int = 1, dynamic_batch: bool = False,
               calibration_samples: int = 300, accuracy_control: bool = False, max_drop: float = 1.0,
               validation: tuple[np.ndarray, np.ndarray] | None = None,
               device_identity: Mapping[str, Any] | None = None, **_: Any) -> Path:
        """Export ONNX, convert to IR with fp32 weights, optionally NNCF-quantize, save. INT8 follows
        `device_identity` (`device_options`), recorded in the manifest's ``options.int8_settings``."""
        from edgekd.runtimes.host import DEFAULT_OPSET, build_manifest, export_onnx, export_step, host_versions, quiet

        if precision not in self.precisions:
            raise ExportError(f"openvino exports {', '.join(self.precisions)}, not {precision}")
        if getattr(info, "task", "image") == "text":  # two int64 inputs, dynamic batch and sequence
            return self._export_text(model, info, out_dir, precision=precision, calibration=calibration, opset=opset,
                                     calibration_samples=min(calibration_samples, 128))
        ov = _import_ov()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        opset = opset or DEFAULT_OPSET
        onnx_path = out_dir / "model.source.onnx"
        with export_step("openvino conversion", onnx_path):
            export_onnx(model, info, onnx_path, opset=opset, batch=batch, dynamic_batch=dynamic_batch)
            with quiet():
                ov_model = ov.convert_model(str(onnx_path))
            int8 = self.device_options(precision, device_identity).get("int8_settings")
            if precision == "int8":
                ov_model = quantize_ir_int8(ov_model, calibration, batch=batch, calibration_samples=calibration_samples,
                                            accuracy_control=accuracy_control, max_drop=max_drop,
                                            validation=validation, settings=int8)
            # compress_to_fp16 defaults to True in save_model: that would halve weights precision of an
            # "fp32" artifact, so it is off
            ov.save_model(ov_model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
        shape = [-1 if dynamic_batch else batch, *info.input_shape]
        options: dict[str, Any] = {"opset": opset, "batch": batch, "dynamic_batch": dynamic_batch,
                                   "precision_hint": HINTS[precision]}
        if precision == "int8":
            options.update(calibration_samples=calibration_samples, accuracy_control=accuracy_control,
                           max_drop=max_drop if accuracy_control else None, int8_settings=int8)
        manifest = build_manifest(model, info, out_dir, fmt=self.format, runtime=self.name, precision=precision,
                                  model_file=MODEL_FILE, files=[MODEL_FILE, WEIGHTS_FILE], shape=shape,
                                  versions=host_versions("openvino", "nncf"), options=options)
        write_manifest(out_dir, manifest)
        return out_dir

    def _export_text(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
                     opset: int | None, calibration_samples: int) -> Path:
        """A text model: ONNX with dynamic batch and sequence axes -> IR (fp32 weights); INT8 by NNCF's
        transformer scheme on real training ids."""
        from edgekd.runtimes.host import export_step, host_versions, quiet
        from edgekd.runtimes.text_onnx import (calibration_ids, export_text_onnx, finish_text_artifact,
                                               text_export_setup, text_feeds)

        ov = _import_ov()
        out_dir, max_len, pad_id, options = text_export_setup(info, out_dir, opset)
        source = out_dir / "model.source.onnx"
        with export_step("openvino conversion of the text model", source):
            export_text_onnx(model, source, max_len=max_len, opset=options["opset"])
            with quiet():
                ov_model = ov.convert_model(str(source))
                if precision == "int8":
                    import nncf

                    feeds = [text_feeds(r[None, :], pad_id) for r in calibration_ids(calibration, calibration_samples)]
                    ov_model = nncf.quantize(ov_model, nncf.Dataset(feeds), subset_size=len(feeds),
                                             model_type=nncf.ModelType.TRANSFORMER)
                    options.update(int8_mode="nncf-transformer", calibration_samples=len(feeds))
            ov.save_model(ov_model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
            options["precision_hint"] = HINTS[precision]
        return finish_text_artifact(model, info, out_dir, runtime=self.name, fmt=self.format, precision=precision,
                                    model_file=MODEL_FILE, files=[MODEL_FILE, WEIGHTS_FILE],
                                    versions=host_versions("openvino", "nncf"), options=options)

    def load(self, artifact_dir: Path, *, threads: int | None = None, **options: Any) -> OpenVINORunner:
        return OpenVINORunner(Path(artifact_dir), threads=threads, **options)
