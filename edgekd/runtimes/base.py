"""The runtime-adapter contract, the artifact manifest, and helpers every runner shares.

Device side: this module imports numpy and the standard library only. It is what the on-device agent
uses to read an artifact and feed a runner, so it must work where torch cannot be imported.

An *artifact* is a directory holding the model file(s) and `manifest.json`:

    {"schema": "edgekd.artifact/1", "format": <an adapter's `format`: onnx|openvino|tflite|tensorrt-onnx|...>,
     "runtime": <RUNTIMES name>, "precision": "fp32"|"fp16"|"int8", "model_file": <relative name>,
     "files": {name: sha256}, "inputs": [{"name", "shape", "dtype", "layout"}], "outputs": [...],
     "normalization": {"mean": [...], "std": [...]}, "class_names": [...], "num_classes": int,
     "source": {"checkpoint", "checkpoint_sha256", "spec", "params", "macs"},
     "parity": {...}, "status": "ok"|"failed", "error": str|null, "versions": {...}, "options": {...}}

A dimension of -1 in a shape is dynamic (only the batch dimension ever is). Inputs are always fed as
float32, already normalized with `normalization`, in the layout the manifest names (NCHW or NHWC);
a runner whose model is integer-only quantizes and dequantizes at its edges itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

import numpy as np

from edgekd.errors import ConfigError, ModelError
from edgekd.fileio import atomic_write_json, sha256_file
from edgekd.runtimes.catalog import PRECISION_NAMES, manifest_formats

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "edgekd.artifact/1"
PRECISIONS = PRECISION_NAMES  # the formats a manifest may name are the registered adapters' (catalog)
STATUSES = ("ok", "failed")
REQUIRED_KEYS = ("schema", "format", "runtime", "precision", "model_file", "files", "inputs", "outputs", "status")

# A calibration set: an iterable of {input_name: float32 array}, drawn from real training samples.
Calibration = Iterable[Mapping[str, np.ndarray]]


@runtime_checkable
class Runner(Protocol):
    """A loaded artifact ready to run on this machine.

    `run` takes {input_name: float32 array} with any leading batch size (a static-batch model is run
    in chunks) in the manifest's layout and returns the logits as a float32 (N, num_classes) array.
    `info` says what actually runs: runtime, version, threads, precision (and the precision hint
    the runtime was given, where it has one), device.
    """

    input_names: list[str]
    info: dict[str, Any]

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray: ...


@runtime_checkable
class RuntimeAdapter(Protocol):
    """One runtime: its export on the host (torch imported lazily inside) and its runner on the device.

    The identity (name, formats, suffixes, precisions, accelerators, device modules) is declared on the
    class, which subclasses `edgekd.runtimes.catalog.AdapterBase` (see there for every field).
    `export(model, info, out_dir, *, precision, calibration, **options) -> Path` writes the model
    file(s) and `manifest.json` (status "ok", parity empty: the parity gate fills it in) into
    `out_dir` and returns it. `load(artifact_dir, *, threads=None, accelerator=<declared name>,
    **options) -> Runner` runs on that accelerator (its `info["accelerator"]` says so).
    `unavailable_reason()` is None when this runtime's package imports here, else why not.
    """

    name: str
    format: str
    export_format: str
    suffixes: tuple[str, ...]
    precisions: tuple[str, ...]
    accelerators: Mapping[str, str]
    device_modules: tuple[tuple[str, str, tuple[str, ...]], ...]

    def unavailable_reason(self) -> str | None: ...

    def export(self, model: Any, info: Any, out_dir: Path, *, precision: str, calibration: Calibration | None,
               **options: Any) -> Path: ...

    def load(self, artifact_dir: Path, *, threads: int | None = None, **options: Any) -> Runner: ...


# ---------------------------------------------------------------- manifest

def write_manifest(artifact_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write `manifest.json` atomically after checking its required keys."""
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest is missing {missing}")  # a bug in an adapter, not a user error
    path = Path(artifact_dir) / MANIFEST_NAME
    atomic_write_json(path, dict(manifest))
    return path


def read_manifest(artifact_dir: str | Path) -> dict[str, Any]:
    """Read and validate an artifact's manifest; ModelError naming the file on anything wrong."""
    path = Path(artifact_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"{path}: no manifest; an artifact is a directory made by `edgekd export`")
    if path.is_symlink():
        raise ModelError(f"{path}: is a symbolic link; an artifact holds plain files only")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: unreadable manifest ({err}); re-export the artifact") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise ModelError(f"{path}: not an {MANIFEST_SCHEMA} manifest; re-export with this edgekd version")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"{path}: manifest lacks {', '.join(missing)}; re-export the artifact")
    if manifest["format"] not in manifest_formats() or manifest["precision"] not in PRECISIONS:
        raise ModelError(f"{path}: unknown format/precision {manifest['format']}/{manifest['precision']}")
    from edgekd.runtimes.confine import check_manifest_paths

    check_manifest_paths(artifact_dir, manifest)  # every named file stays inside the artifact
    return manifest


def update_manifest(artifact_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Read, change top-level keys, write back atomically; returns the new manifest."""
    manifest = read_manifest(artifact_dir)
    manifest.update(changes)
    write_manifest(artifact_dir, manifest)
    return manifest


def hash_files(artifact_dir: str | Path, names: Iterable[str]) -> dict[str, str]:
    """{relative name: sha256} for the files that make up an artifact."""
    root = Path(artifact_dir)
    return {name: sha256_file(root / name) for name in sorted(names)}


def verify_files(artifact_dir: str | Path, manifest: Mapping[str, Any]) -> None:
    """ModelError when a file named in the manifest is missing or its sha256 differs (torn copy)."""
    root = Path(artifact_dir)
    for name, digest in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise ModelError(f"{path}: missing from the artifact; copy the whole artifact directory again")
        if sha256_file(path) != digest:
            raise ModelError(f"{path}: sha256 differs from the manifest (corrupt or changed); copy it again")


def artifact_size(artifact_dir: str | Path, manifest: Mapping[str, Any]) -> int:
    """Bytes of the model files (not the manifest, reference or calibration data)."""
    root = Path(artifact_dir)
    return sum((root / name).stat().st_size for name in manifest["files"] if not name.startswith(("reference", "calibration")))


# ---------------------------------------------------------------- feeding a runner

def to_layout(x_nchw: np.ndarray, layout: str) -> np.ndarray:
    """Turn an NCHW float batch into the layout an artifact's input wants (NCHW or NHWC)."""
    if layout == "NHWC":
        return np.ascontiguousarray(np.transpose(x_nchw, (0, 2, 3, 1)))
    return np.ascontiguousarray(x_nchw)


def feeds_from_nchw(manifest: Mapping[str, Any], x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """{input_name: array} for a single-input image artifact from normalized NCHW float32 data.

    For a text artifact (`task` "text") `x_nchw` is the (N, L) token-id array of a text dataset; the
    feeds are `input_ids` and `attention_mask` (ids != the manifest's pad id), both int64."""
    if manifest.get("task") == "text":
        ids = np.rint(np.asarray(x_nchw)).astype(np.int64) if np.asarray(x_nchw).dtype.kind == "f" else np.asarray(x_nchw, dtype=np.int64)
        pad_id = int((manifest.get("text") or {}).get("pad_id", 0))
        return {"input_ids": np.ascontiguousarray(ids), "attention_mask": (ids != pad_id).astype(np.int64)}
    spec = manifest["inputs"][0]
    return {spec["name"]: to_layout(np.asarray(x_nchw, dtype=np.float32), spec.get("layout", "NCHW"))}


def static_batch(shape: list[int] | tuple[int, ...]) -> int | None:
    """The fixed batch size of a shape, or None when the batch dimension is dynamic."""
    first = shape[0] if len(shape) else -1
    return None if first is None or int(first) < 0 else int(first)


def run_in_chunks(run_batch: Callable[[dict[str, np.ndarray]], np.ndarray], feeds: Mapping[str, np.ndarray],
                  batch: int | None) -> np.ndarray:
    """Run a model whose batch is fixed at `batch` over feeds of any batch size, padding the tail.

    Edge models are exported with a static batch (usually 1) because static shapes let every runtime
    plan memory and pick kernels ahead of time; evaluation still wants to push a whole split through.
    """
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    n = next(iter(arrays.values())).shape[0]
    if batch is None or n == batch:
        return run_batch(arrays)
    outs = []
    for start in range(0, n, batch):
        chunk = {k: v[start:start + batch] for k, v in arrays.items()}
        got = next(iter(chunk.values())).shape[0]
        if got < batch:  # pad the last chunk by repeating its final row, then drop the padding
            chunk = {k: np.concatenate([v, np.repeat(v[-1:], batch - got, axis=0)]) for k, v in chunk.items()}
        outs.append(run_batch(chunk)[:got])
    return np.concatenate(outs, axis=0)


def check_feeds(feeds: Mapping[str, np.ndarray], input_names: list[str], runtime: str) -> None:
    """ModelError when the caller's feed names do not match the model's inputs."""
    if sorted(feeds) != sorted(input_names):
        raise ModelError(f"{runtime}: inputs {sorted(feeds)} given, the model takes {input_names}")


def default_threads(threads: int | None) -> int | None:
    """Validate a thread count; None means 'let the runtime decide'."""
    if threads is None:
        return None
    threads = int(threads)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return threads
