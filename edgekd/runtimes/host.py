"""Host-side helpers shared by the adapters' `export`: torch -> ONNX, calibration arrays, manifest.

Host side only: torch and onnx are imported inside the functions, so importing this module stays
cheap, but nothing on a device ever calls it.
"""
from __future__ import annotations

import contextlib
import io
import os
import platform
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekd import __version__
from edgekd.errors import ExportError
from edgekd.runtimes.base import MANIFEST_SCHEMA, Calibration, hash_files
from edgekd.runtimes.preprocess_record import image_preprocess

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# Opset 18 is the newest every runtime we target accepts (TensorRT 10 parses up to 20+, OpenVINO and
# ONNX Runtime far beyond); pinning it keeps artifacts identical across torch upgrades.
DEFAULT_OPSET = 18


@contextlib.contextmanager
def export_step(what: str, *temporaries: Path) -> Iterator[None]:
    """One converter/quantizer call: any failure inside becomes ExportError("<what> failed: ..."),
    an ExportError passes through as it is, and the `temporaries` are removed either way."""
    try:
        yield
    except ExportError:
        raise
    except Exception as err:
        raise ExportError(f"{what} failed: {type(err).__name__}: {err}") from err
    finally:
        for path in temporaries:
            Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, warnings and C++ log lines (they would drown the
    export table). Output is captured at the file-descriptor level; if the block raises, the
    captured tail goes to stderr so a converter crash is still diagnosable."""
    import logging
    import sys
    import tempfile

    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sink = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    previous_level = logging.root.level
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 1)
        os.dup2(capture.fileno(), 2)
        try:
            logging.root.setLevel(logging.ERROR)
            with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                warnings.simplefilter("ignore")
                yield
        except BaseException:
            _restore(saved)
            capture.seek(0)
            tail = (capture.read().decode("utf-8", "replace") + sink.getvalue()).strip().splitlines()[-15:]
            if tail:
                print("\n".join(tail), file=sys.stderr)
            raise
        finally:
            logging.root.setLevel(previous_level)
            _restore(saved)


def _restore(saved: list[int]) -> None:
    """Put back the real stdout/stderr descriptors (idempotent)."""
    import sys

    if saved[0] < 0:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])
    saved[0] = saved[1] = -1


def input_shape(info: Any, batch: int = 1) -> tuple[int, ...]:
    """(batch, C, H, W) from a ModelInfo's (C, H, W)."""
    return (int(batch), *(int(d) for d in info.input_shape))


def example_input(info: Any, batch: int = 1, seed: int = 0) -> Any:
    """A deterministic torch tensor of the model's input shape, for tracing."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.randn(input_shape(info, batch), generator=gen)


def export_onnx(model: Any, info: Any, path: Path, *, opset: int = DEFAULT_OPSET, batch: int = 1,
                dynamic_batch: bool = False) -> Path:
    """torch.onnx.export with the dynamo exporter into ONE self-contained file (no external data).

    Static batch by default: edge runtimes plan memory and pick kernels ahead of time for fixed shapes.
    """
    import torch

    from edgekd.runtimes.onnx_registry import reused_registry

    model = model.eval()
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    try:
        with quiet(), torch.no_grad(), reused_registry():
            # a traced batch of 1 would specialize a dynamic batch dimension to the constant 1
            example = example_input(info, max(batch, 2) if dynamic_batch else batch)
            torch.onnx.export(model, (example,), str(path), dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=False,
                              dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
    except Exception as err:  # the exporter raises many types; the row records the reason
        raise ExportError(f"torch.onnx.export failed: {type(err).__name__}: {_first_line(err)}") from err
    return path


def calibration_arrays(calibration: Calibration | None, input_name: str = INPUT_NAME,
                       limit: int | None = None) -> list[np.ndarray]:
    """Materialize a calibration iterable as a list of float32 batches; ExportError when empty."""
    if calibration is None:
        raise ExportError("int8 export needs calibration data (real training samples); pass --data")
    arrays: list[np.ndarray] = []
    count = 0
    for item in calibration:
        if input_name not in item:
            raise ExportError(f"calibration item has inputs {sorted(item)}, expected {input_name!r}")
        arr = np.asarray(item[input_name], dtype=np.float32)
        arrays.append(arr)
        count += arr.shape[0]
        if limit is not None and count >= limit:
            break
    if not arrays:
        raise ExportError("calibration data is empty; int8 needs real training samples")
    return arrays


def split_rows(arrays: list[np.ndarray], batch: int = 1) -> list[np.ndarray]:
    """Re-batch calibration arrays into chunks of exactly `batch` rows (static-shape models)."""
    rows = np.concatenate(arrays, axis=0)
    usable = (rows.shape[0] // batch) * batch or rows.shape[0]
    return [rows[i:i + batch] for i in range(0, usable, batch)]


def source_info(model: Any, info: Any) -> dict[str, Any]:
    """Spec, params and MACs of the torch model (checkpoint path/hash are added by the orchestrator)."""
    params = int(sum(p.numel() for p in model.parameters()))
    macs = None
    try:
        from edgekd.models import count_macs

        macs = int(count_macs(model, tuple(info.input_shape)))
    except Exception:  # MAC counting is informative only; never fail an export over it
        macs = None
    return {"checkpoint": None, "checkpoint_sha256": None, "spec": getattr(info, "spec", None),
            "params": params, "macs": macs}


def host_versions(*extra: str) -> dict[str, str]:
    """edgekd, python, torch, and the named packages' versions, as installed on the host."""
    from importlib import metadata

    out = {"edgekd": __version__, "python": platform.python_version()}
    for pkg in ("torch", "onnx", *extra):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def build_manifest(model: Any, info: Any, out_dir: Path, *, fmt: str, runtime: str, precision: str,
                   model_file: str, files: list[str], shape: list[int], layout: str = "NCHW",
                   versions: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    """The manifest every adapter writes; parity is empty and status "ok" until the gate runs."""
    return {
        "schema": MANIFEST_SCHEMA,
        "format": fmt,
        "runtime": runtime,
        "precision": precision,
        "model_file": model_file,
        "files": hash_files(out_dir, files),
        "inputs": [{"name": INPUT_NAME, "shape": [int(d) for d in shape], "dtype": "float32", "layout": layout}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [int(shape[0]), int(info.num_classes)], "dtype": "float32"}],
        "normalization": getattr(info, "normalization", None),
        "preprocess": image_preprocess(info, layout),
        "class_names": list(getattr(info, "class_names", None) or []),
        "num_classes": int(info.num_classes),
        "task": getattr(info, "task", "image"),
        "source": source_info(model, info),
        "parity": {},
        "status": "ok",
        "error": None,
        "versions": versions,
        "options": {k: v for k, v in options.items() if _jsonable(v)},
    }


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else ""
