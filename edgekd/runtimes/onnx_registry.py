"""One aten -> ONNX registry per process for torch's dynamo exporter.

`torch.onnx.export(dynamo=True)` rebuilds its registry of ONNX decompositions (torchlib, thousands of
onnxscript functions) on every call: ~1.0 s of the ~1.3 s a small student takes to export on a 2-vCPU
x86 VM (torch 2.13, measured with `scripts/bench_export_registry.py`). A calibration exports dozens of
untrained students and a deploy several more, so that second is paid again and again for the same
table. The registry depends only on the opset version, and an export without a
`custom_translation_table` (edgekd never passes one) only reads it; so `reused_registry()` builds it
once per opset and hands each export its own shallow copy (its own dict and lists: nothing an export
could register leaks into the next).

Torch internals: if they move (another torch than the pinned one), the context manager does nothing
and every export builds its own registry, as torch does. Host side only; torch is imported lazily.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

_BUILT: dict[int, Any] = {}  # opset version -> the registry built once in this process


def _copy(registry: Any) -> Any:
    fresh = type(registry)()
    fresh.__dict__.update(registry.__dict__)
    fresh.functions = {op: list(metas) for op, metas in registry.functions.items()}
    return fresh


@contextlib.contextmanager
def reused_registry() -> Iterator[None]:
    """Within the block, torch's exporter gets a copy of a registry built once per opset (see module doc)."""
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
        build = original.__func__
        default_opset = _registration._constants.TORCHLIB_OPSET
    except (ImportError, AttributeError, KeyError):
        yield  # another torch: leave its exporter as it is
        return

    def from_torchlib(klass: Any, opset_version: int = default_opset) -> Any:
        if opset_version not in _BUILT:
            _BUILT[opset_version] = build(klass, opset_version)
        return _copy(_BUILT[opset_version])

    cls.from_torchlib = classmethod(from_torchlib)
    try:
        yield
    finally:
        cls.from_torchlib = original
