"""Runtime adapters, one module per runtime, registered by name in `RUNTIMES`.

    from edgekd.runtimes import RUNTIMES, load_artifact
    runner = load_artifact("out/onnx-int8", threads=2, accelerator="cpu")
    logits = runner.run({"input": x})            # x: normalized float32, the manifest's layout

A runtime is ONE module in this folder: its adapter class subclasses `catalog.AdapterBase` and
declares its name, formats, file suffixes, precisions, accelerators and device-side module; defining
the class registers it (`edgekd.runtimes.catalog`). This package imports every module of its folder
except the host-side ones that *use* the registry (`_USES_THE_REGISTRY`), so there is no list of
runtimes to keep in step, and every table (formats, accelerators, what the agent looks for) is derived.

Importing this package imports numpy and the standard library only (device side); each adapter
imports its runtime, and torch on the host side, inside the functions that need them.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from edgekd.errors import ModelError
from edgekd.runtimes.base import (MANIFEST_NAME, MANIFEST_SCHEMA, Runner, RuntimeAdapter, feeds_from_nchw,
                                  read_manifest, verify_files, write_manifest)
from edgekd.runtimes.catalog import (FORMAT_RUNTIME, RUNTIMES, AdapterBase, accelerators, default_accelerator,
                                     export_formats, format_runtime)

# host-side modules of this folder that use the registry rather than add to it (never imported here)
_USES_THE_REGISTRY = frozenset({"export"})


def _discover() -> None:
    """Import every module of this folder (each declares at most its own adapter) once."""
    for module in pkgutil.iter_modules(__path__):
        if module.name not in _USES_THE_REGISTRY and not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_discover()


def load_artifact(path: str | Path, threads: int | None = None, *, verify: bool = True, allow_failed: bool = False,
                  accelerator: str | None = None, **options: Any) -> Runner:
    """Open an artifact directory with the runtime its manifest names and return a Runner.

    `accelerator` (None = the runtime's default) must be one the runtime declares (ConfigError else).
    `verify` checks every file's sha256 against the manifest first (a torn copy fails clearly).
    An artifact whose export failed its parity gate is refused unless `allow_failed`.
    """
    from edgekd.runtimes.catalog import check_accelerator

    path = Path(path)
    manifest = read_manifest(path)
    if manifest["status"] != "ok" and not allow_failed:
        raise ModelError(f"{path}: this artifact failed at export ({manifest.get('error')}); "
                         "re-export it, or pass allow_failed to run it anyway")
    if verify:
        verify_files(path, manifest)
    adapter = RUNTIMES.get(manifest["runtime"])
    return adapter.load(path, threads=threads, accelerator=check_accelerator(adapter.name, accelerator), **options)


__all__ = ["RUNTIMES", "FORMAT_RUNTIME", "MANIFEST_NAME", "MANIFEST_SCHEMA", "AdapterBase", "Runner", "RuntimeAdapter",
           "accelerators", "default_accelerator", "export_formats", "format_runtime", "load_artifact",
           "read_manifest", "write_manifest", "feeds_from_nchw"]
