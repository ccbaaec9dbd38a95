"""Runtime adapters, one module per runtime, registered by name in `RUNTIMES`.

    from edgekd.runtimes import RUNTIMES, load_artifact
    runner = load_artifact("out/onnx-int8", threads=2)
    logits = runner.run({"input": x})            # x: normalized float32, the manifest's layout

Importing this package imports numpy and the standard library only (device side); each adapter
imports its runtime, and torch on the host side, inside the functions that need them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import ModelError
from edgekd.registry import Registry
from edgekd.runtimes.base import (MANIFEST_NAME, MANIFEST_SCHEMA, Runner, RuntimeAdapter, feeds_from_nchw,
                                  read_manifest, verify_files, write_manifest)
from edgekd.runtimes.litert import LiteRTAdapter
from edgekd.runtimes.onnxruntime import OnnxRuntimeAdapter
from edgekd.runtimes.openvino import OpenVINOAdapter
from edgekd.runtimes.tensorrt import TensorRTAdapter

RUNTIMES: Registry[RuntimeAdapter] = Registry("runtime")
for _adapter in (OnnxRuntimeAdapter(), OpenVINOAdapter(), LiteRTAdapter(), TensorRTAdapter()):
    RUNTIMES.add(_adapter.name, _adapter)

# export format name (what users type) -> runtime that runs it
FORMAT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert", "tensorrt": "tensorrt"}


def load_artifact(path: str | Path, threads: int | None = None, *, verify: bool = True, allow_failed: bool = False,
                  **options: Any) -> Runner:
    """Open an artifact directory with the runtime its manifest names and return a Runner.

    `verify` checks every file's sha256 against the manifest first (a torn copy fails clearly).
    An artifact whose export failed its parity gate is refused unless `allow_failed`.
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["status"] != "ok" and not allow_failed:
        raise ModelError(f"{path}: this artifact failed at export ({manifest.get('error')}); "
                         "re-export it, or pass allow_failed to run it anyway")
    if verify:
        verify_files(path, manifest)
    adapter = RUNTIMES.get(manifest["runtime"])
    return adapter.load(path, threads=threads, **options)


__all__ = ["RUNTIMES", "FORMAT_RUNTIME", "MANIFEST_NAME", "MANIFEST_SCHEMA", "Runner", "RuntimeAdapter",
           "load_artifact", "read_manifest", "write_manifest", "feeds_from_nchw"]
