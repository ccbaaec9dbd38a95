"""TensorRT (NVIDIA GPU, Jetson). Written against the TensorRT 10 Python API; NOT verified on
hardware here (TensorRT cannot be installed on this x86 CPU machine).

Host side (here): a TensorRT-ready ONNX (static shapes, opset 18, every op checked against TensorRT
10's ONNX operator list so an unsupported op fails the export by name) plus `calibration.npz`
(real training samples) for INT8. Parity on the host is checked by running that ONNX with ONNX
Runtime; the engine itself is checked on the device.

Device side: builds the engine there (plans are not portable across GPUs or TensorRT versions),
FP16 or INT8 with an IInt8EntropyCalibrator2 fed from calibration.npz, caches the plan under a key
of (ONNX sha256, TensorRT version, GPU name, precision), and runs it with cuda-python buffers. A
`trtexec` path times the engine with NVIDIA's own tool and parses its --exportTimes JSON.
Imports numpy + tensorrt (+ cuda-python) only, lazily.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgekd.errors import ExportError, ModelError, RuntimeMissingError
from edgekd.fileio import atomic_write_bytes
from edgekd.runtimes.base import Calibration, check_feeds, read_manifest, run_in_chunks, write_manifest
from edgekd.runtimes.tensorrt_ops import (CalibrationBatches, check_tensorrt_onnx, engine_cache_key,
                                          parse_trtexec_times, summarize_ms)

MODEL_FILE = "model.onnx"
CALIBRATION_FILE = "calibration.npz"


def _import_trt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise RuntimeMissingError(f"tensorrt is not installed here ({err}); TensorRT runs on an NVIDIA GPU or "
                                  "Jetson with TensorRT 10 (JetPack 6 ships it)") from None
    return tensorrt


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise RuntimeMissingError(f"cuda-python is not installed ({err}); pip install cuda-python") from None
    return cudart


def _cuda(result: Any) -> Any:
    """cuda-python returns (err, value...); raise on a non-zero error, return the value(s)."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ModelError(f"CUDA call failed with error {err}")
    return rest[0] if len(rest) == 1 else tuple(rest)


def gpu_name() -> str:
    cudart = _import_cudart()
    props = _cuda(cudart.cudaGetDeviceProperties(0))
    name = props.name
    return name.decode("utf-8", "replace").rstrip("\x00") if isinstance(name, bytes) else str(name)


def make_entropy_calibrator(trt: Any, batches: CalibrationBatches, cache_path: Path) -> Any:
    """An IInt8EntropyCalibrator2 serving CalibrationBatches through one device buffer."""
    cudart = _import_cudart()

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.nbytes = int(np.prod(batches.shape)) * 4
            self.device = _cuda(cudart.cudaMalloc(self.nbytes))

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = batches.next_batch()
            if batch is None:
                return None
            _cuda(cudart.cudaMemcpy(self.device, batch.ctypes.data, self.nbytes,
                                    cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write_bytes(cache_path, bytes(cache))

    return EntropyCalibrator()


def build_engine(onnx_path: Path, precision: str, *, calibration: Path | None, cache_dir: Path,
                 workspace_mb: int = 1024) -> tuple[bytes, str, bool]:
    """(serialized plan, cache key, came from cache). Builds with the ONNX parser when not cached."""
    trt = _import_trt()
    from edgekd.fileio import sha256_file

    key = engine_cache_key(sha256_file(onnx_path), trt.__version__, gpu_name(), precision)
    plan_path = cache_dir / f"{key}.plan"
    if plan_path.is_file():
        return plan_path.read_bytes(), key, True
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT could not parse the ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers INT8 cannot take fall back to FP16, not FP32
    if precision == "int8":
        if calibration is None or not calibration.is_file():
            raise ModelError(f"{onnx_path.parent}: int8 needs {CALIBRATION_FILE}; re-export with --data")
        shape = tuple(network.get_input(0).shape)
        batches = CalibrationBatches(calibration, batch_size=int(shape[0]))
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_entropy_calibrator(trt, batches, cache_dir / f"{key}.calib")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"{onnx_path}: TensorRT engine build failed for {precision}; see the TensorRT log above")
    data = bytes(plan)
    atomic_write_bytes(plan_path, data)
    return data, key, False


class TensorRTRunner:
    """A deserialized engine with one execution context and device buffers per I/O tensor."""

    def __init__(self, artifact_dir: Path, *, threads: int | None = None, cache_dir: Path | None = None,
                 workspace_mb: int = 1024) -> None:
        trt = _import_trt()
        cudart = _import_cudart()
        self._cudart = cudart
        manifest = read_manifest(artifact_dir)
        artifact_dir = Path(artifact_dir)
        cache_dir = Path(cache_dir) if cache_dir else artifact_dir / "engines"
        cache_dir.mkdir(parents=True, exist_ok=True)
        plan, key, cached = build_engine(artifact_dir / manifest["model_file"], manifest["precision"],
                                         calibration=artifact_dir / CALIBRATION_FILE, cache_dir=cache_dir,
                                         workspace_mb=workspace_mb)
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self.stream = _cuda(cudart.cudaStreamCreate())
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, int] = {}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [n for n in names if n not in self._inputs]
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            host = np.zeros(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self._host[name] = host
            self._device[name] = int(_cuda(cudart.cudaMalloc(host.nbytes)))
            self.context.set_tensor_address(name, self._device[name])
        self.input_names = [manifest["inputs"][0]["name"]]
        self._batch = int(self._host[self._inputs[0]].shape[0])
        self.info = {"runtime": "tensorrt", "version": trt.__version__, "threads": None,
                     "precision": manifest["precision"], "device": gpu_name(), "engine_key": key,
                     "engine_cached": cached}

    def _run_batch(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        cudart, stream = self._cudart, self.stream
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        src = np.ascontiguousarray(feeds[self.input_names[0]], dtype=self._host[self._inputs[0]].dtype)
        _cuda(cudart.cudaMemcpyAsync(self._device[self._inputs[0]], src.ctypes.data, src.nbytes, h2d, stream))
        if not self.context.execute_async_v3(int(stream)):
            raise ModelError("TensorRT execute_async_v3 failed")
        out = self._host[self._outputs[0]]
        _cuda(cudart.cudaMemcpyAsync(out.ctypes.data, self._device[self._outputs[0]], out.nbytes, d2h, stream))
        _cuda(cudart.cudaStreamSynchronize(stream))
        return out.astype(np.float32, copy=True)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        check_feeds(feeds, self.input_names, "tensorrt")
        return run_in_chunks(self._run_batch, dict(feeds), self._batch)

    def __del__(self) -> None:  # free device memory; best effort at interpreter shutdown
        for ptr in getattr(self, "_device", {}).values():
            try:
                self._cudart.cudaFree(ptr)
            except Exception:
                pass


def trtexec_command(artifact_dir: Path, precision: str, *, times_path: Path, plan_path: Path,
                    iterations: int = 200, warmup_ms: int = 200, trtexec: str = "trtexec") -> list[str]:
    """The trtexec command line that builds and times an artifact's engine and exports per-inference
    times as JSON. INT8 under trtexec uses no calibration (timing only: accuracy comes from the runner)."""
    manifest = read_manifest(artifact_dir)
    cmd = [trtexec, f"--onnx={Path(artifact_dir) / manifest['model_file']}", f"--saveEngine={plan_path}",
           f"--exportTimes={times_path}", f"--iterations={int(iterations)}", f"--warmUp={int(warmup_ms)}",
           "--avgRuns=1", "--useSpinWait"]
    if precision == "fp16":
        cmd.append("--fp16")
    elif precision == "int8":
        cmd += ["--int8", "--fp16"]
    return cmd


def run_trtexec(artifact_dir: Path, *, out_dir: Path | None = None, iterations: int = 200, warmup_ms: int = 200,
                timeout_s: float = 900) -> dict[str, Any]:
    """Time an artifact with trtexec (on the device) and return summarized latencies in ms."""
    exe = shutil.which("trtexec") or next((p for p in ("/usr/src/tensorrt/bin/trtexec",) if Path(p).is_file()), None)
    if exe is None:
        raise RuntimeMissingError("trtexec not found on PATH or in /usr/src/tensorrt/bin; install TensorRT")
    manifest = read_manifest(artifact_dir)
    out_dir = Path(out_dir or Path(artifact_dir) / "trtexec")
    out_dir.mkdir(parents=True, exist_ok=True)
    times = out_dir / "times.json"
    cmd = trtexec_command(Path(artifact_dir), manifest["precision"], times_path=times,
                          plan_path=out_dir / "engine.plan", iterations=iterations, warmup_ms=warmup_ms, trtexec=exe)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise ModelError(f"trtexec failed (exit {proc.returncode}): {' | '.join(tail)}")
    parsed = parse_trtexec_times(times, warmup_ms=0.0)
    return {"count": parsed["count"], "latency_ms": summarize_ms(parsed["latency_ms"]),
            "compute_ms": summarize_ms(parsed["compute_ms"]), "end_to_end_ms": summarize_ms(parsed["end_to_end_ms"]),
            "command": cmd}


class TensorRTAdapter:
    """Registered as `tensorrt`: TensorRT-ready ONNX, engine built and run on the NVIDIA device."""

    name = "tensorrt"
    format = "tensorrt-onnx"
    precisions = ("fp32", "fp16", "int8")
    # the host side needs only onnx + onnxruntime (parity proxy), so exports work without TensorRT
    host_export_without_runtime = True

    def unavailable_reason(self) -> str | None:
        try:
            _import_trt()
            _import_cudart()
        except RuntimeMissingError as err:
            return str(err)
        return None

    def export(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
               opset: int | None = None, batch: int = 1, calibration_samples: int = 512, **_: Any) -> Path:
        """Static-shape ONNX checked op by op against TensorRT 10, plus calibration.npz for int8."""
        import onnx

        from edgekd.fileio import atomic_write_with
        from edgekd.runtimes.host import (DEFAULT_OPSET, INPUT_NAME, build_manifest, calibration_arrays, export_onnx,
                                          host_versions)

        if precision not in self.precisions:
            raise ExportError(f"tensorrt exports {', '.join(self.precisions)}, not {precision}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        opset = opset or DEFAULT_OPSET
        path = export_onnx(model, info, out_dir / MODEL_FILE, opset=opset, batch=batch, dynamic_batch=False)
        check_tensorrt_onnx(onnx.load(str(path)), source=str(path))
        files = [MODEL_FILE]
        if precision == "int8":
            rows = np.concatenate(calibration_arrays(calibration, INPUT_NAME, calibration_samples))
            rows = rows[:(rows.shape[0] // batch) * batch]

            def write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the temp name
                    np.savez(fh, x=rows)

            atomic_write_with(out_dir / CALIBRATION_FILE, write)
            files.append(CALIBRATION_FILE)
        options = {"opset": opset, "batch": batch, "engine": "built on the device, cached per GPU/TensorRT version",
                   "calibrator": "IInt8EntropyCalibrator2" if precision == "int8" else None}
        manifest = build_manifest(model, info, out_dir, fmt=self.format, runtime=self.name, precision=precision,
                                  model_file=MODEL_FILE, files=files, shape=[batch, *info.input_shape],
                                  versions=host_versions("onnxruntime"), options=options)
        write_manifest(out_dir, manifest)
        return out_dir

    def load(self, artifact_dir: Path, *, threads: int | None = None, **options: Any) -> TensorRTRunner:
        return TensorRTRunner(Path(artifact_dir), threads=threads, **options)
