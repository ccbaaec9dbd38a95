"""TensorRT (NVIDIA GPU, Jetson), 10.x and 11.x. Written against the TensorRT 10 and 11 Python API
docs and the 10.x -> 11.x migration guide; NOT verified on hardware here (TensorRT cannot be
installed on this x86 CPU machine).

Host side (here): the precision is made on the host and written into the ONNX graph
(tensorrt_precision.py): fp32 as exported, fp16 as float16 casts with the numerically sensitive ops
kept float32, int8 as explicit Q/DQ in TensorRT's placement, calibrated on real samples. Every graph
is static-shape opset 18 with each op checked against TensorRT's ONNX operator list, and passes the
parity gate under ONNX Runtime, which runs the same reduced-precision graph.

Device side: parses the ONNX into a strongly typed network (NetworkDefinitionCreationFlag.STRONGLY_TYPED
on 10.x; 11.x networks are always strongly typed) and builds it with no precision flag and no
calibrator (TensorRT 11 removed them), so the engine computes in exactly the types the graph holds.
The plan is cached under (ONNX sha256, TensorRT version, GPU name, precision) and run with cuda-python
buffers. A `trtexec` path times the engine with NVIDIA's own tool (`--stronglyTyped` on 10.x, no
precision option on any version) and parses its --exportTimes JSON.
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
from edgekd.runtimes.catalog import AdapterBase
from edgekd.runtimes.tensorrt_ops import (check_tensorrt_onnx, engine_cache_key, parse_trtexec_banner,
                                          parse_trtexec_times, summarize_ms, trt_major, trtexec_typing_options)

MODEL_FILE = "model.onnx"
# The manifest option an artifact carries when its precision is in the graph (this module's export).
# An older artifact without it relied on builder flags / a calibrator that TensorRT 11 removed.
PRECISION_IN_GRAPH = "precision_in_graph"


def _import_trt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise RuntimeMissingError(f"tensorrt is not installed here ({err}); TensorRT runs on an NVIDIA GPU or "
                                  "Jetson with TensorRT 10 (JetPack 6 ships it) or 11 (x86)") from None
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


def network_creation_flags(trt: Any) -> int:
    """The `Builder.create_network` flags for a strongly typed network on the installed TensorRT:
    1 << STRONGLY_TYPED on 10.x (opt-in there; RuntimeMissingError if this 10.x lacks it), 0 on 11.x
    (every network is strongly typed; the flag is deprecated and ignored)."""
    major = trt_major(trt.__version__)
    if major >= 11:
        return 0
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    if flag is None:
        raise RuntimeMissingError(f"TensorRT {trt.__version__} has no NetworkDefinitionCreationFlag.STRONGLY_TYPED; "
                                  "install TensorRT 10.x from JetPack 6 / pip install tensorrt-cu12")
    return 1 << int(flag)


def build_engine(onnx_path: Path, precision: str, *, cache_dir: Path, workspace_mb: int = 1024,
                 accelerator: str = "gpu") -> tuple[bytes, str, bool]:
    """(serialized plan, cache key, came from cache). Builds a strongly typed network from the ONNX
    when not cached. The precision is the graph's own (float16 casts, Q/DQ): no builder precision
    flag and no calibrator is set on any TensorRT version; `precision` only names the cache entry.
    `accelerator` "dla" builds for DLA core 0 with GPU fallback for layers the DLA cannot run
    (Jetson AGX/NX; written from the TensorRT docs, not verified on hardware here)."""
    trt = _import_trt()
    from edgekd.fileio import sha256_file

    key = engine_cache_key(sha256_file(onnx_path), trt.__version__, gpu_name(), precision, accelerator)
    plan_path = cache_dir / f"{key}.plan"
    if plan_path.is_file():
        return plan_path.read_bytes(), key, True
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_creation_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelError(f"{onnx_path}: TensorRT could not parse the ONNX: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if accelerator == "dla":
        if int(getattr(builder, "num_DLA_cores", 0)) < 1:
            raise RuntimeMissingError("this device has no DLA core (Jetson AGX/NX have them); use accelerator gpu")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = 0
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelError(f"{onnx_path}: TensorRT engine build failed for {precision}; see the TensorRT log above")
    data = bytes(plan)
    atomic_write_bytes(plan_path, data)
    return data, key, False


def check_artifact_precision(manifest: dict[str, Any], artifact_dir: Path) -> None:
    """ModelError for an fp16/int8 artifact whose precision is not in its graph (exported before
    strong typing): TensorRT 11 cannot build it, and 10.x would build it in fp32."""
    if manifest["precision"] != "fp32" and PRECISION_IN_GRAPH not in manifest.get("options", {}):
        raise ModelError(f"{artifact_dir}: this {manifest['precision']} artifact relies on builder precision flags "
                         "that TensorRT 11 removed; re-export it with `edgekd export` from this version")


class TensorRTRunner:
    """A deserialized engine with one execution context and device buffers per I/O tensor."""

    def __init__(self, artifact_dir: Path, *, threads: int | None = None, cache_dir: Path | None = None,
                 workspace_mb: int = 1024, accelerator: str = "gpu") -> None:
        from edgekd.runtimes.catalog import check_accelerator

        accelerator = check_accelerator("tensorrt", accelerator)
        trt = _import_trt()
        cudart = _import_cudart()
        self._cudart = cudart
        manifest = read_manifest(artifact_dir)
        artifact_dir = Path(artifact_dir)
        cache_dir = Path(cache_dir) if cache_dir else artifact_dir / "engines"
        check_artifact_precision(manifest, artifact_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        plan, key, cached = build_engine(artifact_dir / manifest["model_file"], manifest["precision"],
                                         cache_dir=cache_dir, workspace_mb=workspace_mb, accelerator=accelerator)
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
                     "engine_cached": cached, "strongly_typed": True, "accelerator": accelerator}

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


def trtexec_command(artifact_dir: Path, trt_version: str, *, times_path: Path, plan_path: Path,
                    iterations: int = 200, warmup_ms: int = 200, trtexec: str = "trtexec") -> list[str]:
    """The trtexec command line that builds an artifact's engine strongly typed for TensorRT
    `trt_version` and times it, exporting per-inference times as JSON. `--stronglyTyped` on 10.x,
    nothing on 11.x (always strongly typed); never --fp16/--int8/--best/--calib: the precision is
    in the ONNX graph, so trtexec times the same engine the runner builds."""
    manifest = read_manifest(artifact_dir)
    check_artifact_precision(manifest, Path(artifact_dir))
    return [trtexec, f"--onnx={Path(artifact_dir) / manifest['model_file']}", f"--saveEngine={plan_path}",
            *trtexec_typing_options(trt_version), f"--exportTimes={times_path}", f"--iterations={int(iterations)}",
            f"--warmUp={int(warmup_ms)}", "--avgRuns=1", "--useSpinWait"]


def trtexec_version(exe: str, timeout_s: float = 60) -> str:
    """The TensorRT version of a trtexec binary, read from the banner `trtexec --help` prints first;
    falls back to the installed tensorrt Python package. ModelError when neither says."""
    try:
        proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=timeout_s)
        version = parse_trtexec_banner(proc.stdout + proc.stderr)
    except (OSError, subprocess.TimeoutExpired):
        version = None
    if version is None:
        try:
            version = str(_import_trt().__version__)
        except RuntimeMissingError:
            raise ModelError(f"cannot tell which TensorRT {exe} belongs to (no version banner from --help and no "
                             "tensorrt Python package); check the TensorRT install") from None
    return version


def run_trtexec(artifact_dir: Path, *, out_dir: Path | None = None, iterations: int = 200, warmup_ms: int = 200,
                timeout_s: float = 900) -> dict[str, Any]:
    """Time an artifact with trtexec (on the device) and return summarized latencies in ms."""
    exe = shutil.which("trtexec") or next((p for p in ("/usr/src/tensorrt/bin/trtexec",) if Path(p).is_file()), None)
    if exe is None:
        raise RuntimeMissingError("trtexec not found on PATH or in /usr/src/tensorrt/bin; install TensorRT")
    out_dir = Path(out_dir or Path(artifact_dir) / "trtexec")
    out_dir.mkdir(parents=True, exist_ok=True)
    times = out_dir / "times.json"
    version = trtexec_version(exe)
    cmd = trtexec_command(Path(artifact_dir), version, times_path=times, plan_path=out_dir / "engine.plan",
                          iterations=iterations, warmup_ms=warmup_ms, trtexec=exe)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        raise ModelError(f"trtexec failed (exit {proc.returncode}): {' | '.join(tail)}")
    parsed = parse_trtexec_times(times, warmup_ms=0.0)
    return {"count": parsed["count"], "latency_ms": summarize_ms(parsed["latency_ms"]),
            "compute_ms": summarize_ms(parsed["compute_ms"]), "end_to_end_ms": summarize_ms(parsed["end_to_end_ms"]),
            "command": cmd, "tensorrt_version": version}


STANDALONE_LOADER = r'''
def load_runner(model, device):
    raise SystemExit("tensorrt: build the engine on the device as DEVICE.md says (trtexec), then run it there")
'''


class TensorRTAdapter(AdapterBase):
    """Registered as `tensorrt`: TensorRT-ready ONNX, engine built and run on the NVIDIA device."""

    name = "tensorrt"
    format = "tensorrt-onnx"
    export_format = "tensorrt"
    suffixes = (".onnx",)
    precisions = ("fp32", "fp16", "int8")
    accelerators = {"gpu": "GPU", "dla": "DLA"}  # DLA: the Jetson AGX/NX deep-learning accelerator
    device_modules = (("tensorrt", "tensorrt", ("tensorrt", "tensorrt-cu12", "tensorrt-libs")),)
    listing_order = 40
    standalone_loader = STANDALONE_LOADER
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
               opset: int | None = None, batch: int = 1, calibration_samples: int = 512,
               calibration_method: str = "minmax", **_: Any) -> Path:
        """Static-shape ONNX with the precision in the graph (fp32 as exported, fp16 casts, int8 Q/DQ
        calibrated on `calibration`), every op checked against TensorRT's ONNX operator list."""
        import onnx

        from edgekd.runtimes.host import DEFAULT_OPSET, build_manifest, export_onnx, host_versions
        from edgekd.runtimes.tensorrt_precision import cast_fp16, quantize_qdq_int8

        if precision not in self.precisions:
            raise ExportError(f"tensorrt exports {', '.join(self.precisions)}, not {precision}")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        opset = opset or DEFAULT_OPSET
        dst = out_dir / MODEL_FILE
        options: dict[str, Any] = {"opset": opset, "batch": batch, "strongly_typed": True,
                                   "engine": "built on the device (strongly typed, no precision flags), cached per "
                                             "GPU/TensorRT version", "tensorrt": "10.x or 11.x"}
        if precision == "fp32":
            export_onnx(model, info, dst, opset=opset, batch=batch, dynamic_batch=False)
            options[PRECISION_IN_GRAPH] = "fp32"
        else:
            fp32 = out_dir / "model.fp32.onnx"
            try:
                export_onnx(model, info, fp32, opset=opset, batch=batch, dynamic_batch=False)
                if precision == "fp16":
                    options.update(cast_fp16(fp32, dst))
                else:
                    options.update(quantize_qdq_int8(fp32, dst, calibration, batch=batch,
                                                     calibration_samples=calibration_samples,
                                                     method=calibration_method))
            finally:
                fp32.unlink(missing_ok=True)
        check_tensorrt_onnx(onnx.load(str(dst)), source=str(dst))
        manifest = build_manifest(model, info, out_dir, fmt=self.format, runtime=self.name, precision=precision,
                                  model_file=MODEL_FILE, files=[MODEL_FILE], shape=[batch, *info.input_shape],
                                  versions=host_versions("onnxruntime", "onnxconverter-common"), options=options)
        write_manifest(out_dir, manifest)
        return out_dir

    def load(self, artifact_dir: Path, *, threads: int | None = None, **options: Any) -> TensorRTRunner:
        return TensorRTRunner(Path(artifact_dir), threads=threads, **options)
