"""What a runtime is, declared once by its adapter; every other table is derived from `RUNTIMES` here.

An adapter class that subclasses `AdapterBase` and sets `name` is registered in `RUNTIMES` as it is
defined (the `__init_subclass__` habit of Olive's pass registry). `edgekd.runtimes` imports every module
of its folder, so a new runtime is one module there: its class declares

    name            "openvino"                the registry key, what targets and manifests name
    format          "openvino"                the manifest's `format` (TensorRT: "tensorrt-onnx")
    export_format   "openvino"                what users type after --format (default: `format`)
    suffixes        (".xml", ".bin")          the model files it writes
    precisions      ("fp32", "int8")          what it exports
    accelerators    {"cpu": "CPU", ...}       edgekd's name -> the runtime's own device string; the
                                              FIRST is the default (what an older key or request meant)
    device_modules  (("openvino", "openvino", ("openvino",)),)
                                              (name reported in the agent's hello, module to look for,
                                              distributions that provide it), found without importing
    listing_order   20                        where it comes in listings (lower first)
    standalone_loader  source of `load_runner(model_path, device)` for a bundle's run_model.py

Accelerator names are edgekd's, lower case, and name the kind of hardware (cpu, gpu, npu, dla), so
one target's `accelerator` means the same thing to every runtime it lists. Device side: stdlib only.
"""
from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

from edgekd.errors import ConfigError
from edgekd.registry import Registry

RUNTIMES: Registry[Any] = Registry("runtime")
PRECISION_NAMES = ("fp32", "fp16", "int8")
_ACCELERATOR_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_ACCELERATOR_CHARS = 32  # a request's accelerator crosses the wire: bounded before it is looked at


class AdapterBase:
    """Base class of every runtime adapter: defining a subclass with a `name` registers an instance."""

    name: str = ""
    format: str = ""
    export_format: str = ""
    suffixes: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ()
    accelerators: Mapping[str, str] = {}
    device_modules: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    listing_order: int = 100
    standalone_loader: str = ""

    def device_options(self, precision: str, device_identity: Mapping[str, Any] | None, *,
                       task: str = "image") -> dict[str, Any]:
        """The manifest `options` an export for the device `device_identity` describes records that
        depend on that device ({} when none do: the artifact fits every device). An adapter whose
        settings follow the device (ONNX Runtime INT8) overrides this and exports with the same values."""
        return {}

    def fits_device(self, manifest: Mapping[str, Any], device_identity: Mapping[str, Any] | None) -> bool:
        """Whether an exported artifact (its manifest) was made with the settings an export for
        `device_identity` would choose now, so it can be reused for that device."""
        options = manifest.get("options") or {}
        wanted = self.device_options(str(manifest.get("precision")), device_identity,
                                     task=str(manifest.get("task") or "image"))
        return all(options.get(k) == v for k, v in wanted.items())

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            return  # an intermediate base class, not a runtime
        if not cls.export_format:
            cls.export_format = cls.format
        _check_declaration(cls)
        RUNTIMES.add(cls.name, cls())


def _check_declaration(cls: type) -> None:
    """A malformed declaration is a bug in the adapter: fail at import, naming what is wrong."""
    where = f"runtime adapter {cls.__module__}.{cls.__qualname__}"
    if not cls.name or not cls.format or not cls.suffixes or not cls.device_modules:
        raise TypeError(f"{where} must declare name, format, suffixes and device_modules")
    if not cls.precisions or set(cls.precisions) - set(PRECISION_NAMES):
        raise TypeError(f"{where}: precisions must be a non-empty subset of {PRECISION_NAMES}")
    if not cls.accelerators or not all(_ACCELERATOR_RE.match(a) for a in cls.accelerators):
        raise TypeError(f"{where}: accelerators must map lower-case names (cpu, gpu, npu, ...) to device strings")
    for other in RUNTIMES.items():
        if cls.export_format in (other[1].export_format, other[1].format) or cls.format == other[1].format:
            raise TypeError(f"{where}: format {cls.export_format!r} is already run by {other[0]!r}")


def adapters() -> list[Any]:
    """Every registered adapter in listing order (how formats and runtimes are listed everywhere)."""
    return sorted((a for _, a in RUNTIMES.items()), key=lambda a: (a.listing_order, a.name))


# ------------------------------------------------------------------------------ formats

def export_formats() -> tuple[str, ...]:
    """What `--format` accepts (onnx, openvino, tflite, tensorrt, ...)."""
    return tuple(a.export_format for a in adapters())


def manifest_formats() -> tuple[str, ...]:
    """What an artifact manifest's `format` may say (onnx, openvino, tflite, tensorrt-onnx, ...)."""
    return tuple(a.format for a in adapters())


def format_runtime(fmt: str) -> str:
    """The runtime that runs an export format; ConfigError listing the formats when unknown."""
    for a in adapters():
        if fmt in (a.export_format, a.format):
            return a.name
    raise ConfigError(f"unknown format {fmt!r}; formats: {', '.join(export_formats())}")


def runtime_format(runtime: str) -> str:
    """The export format a runtime runs (the name itself for an unknown runtime: older profiles)."""
    return RUNTIMES.get(runtime).export_format if runtime in RUNTIMES else runtime


class _FormatRuntime(Mapping[str, str]):
    """{export format: runtime}, read live from the registry (the old FORMAT_RUNTIME table)."""

    def __getitem__(self, fmt: str) -> str:
        for a in adapters():
            if fmt == a.export_format:
                return a.name
        raise KeyError(fmt)

    def __iter__(self) -> Iterator[str]:
        return iter(export_formats())

    def __len__(self) -> int:
        return len(RUNTIMES)


FORMAT_RUNTIME: Mapping[str, str] = _FormatRuntime()


# ------------------------------------------------------------------------------ accelerators

def accelerators(runtime: str) -> tuple[str, ...]:
    """The accelerators a runtime declares, its default first."""
    return tuple(RUNTIMES.get(runtime).accelerators)


def default_accelerator(runtime: str) -> str:
    """What a runtime runs on when nothing says otherwise (and what a key without one means)."""
    return accelerators(runtime)[0]


def all_accelerators() -> tuple[str, ...]:
    """Every accelerator some registered runtime declares, in listing order, each once."""
    seen: dict[str, None] = {}
    for a in adapters():
        seen.update(dict.fromkeys(a.accelerators))
    return tuple(seen)


def canonical_accelerator(value: Any, where: str = "accelerator") -> str:
    """A known accelerator name in edgekd's spelling ("NPU" -> "npu"); one-line ConfigError otherwise.
    Checks the type and length first: the value may come from a peer."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ACCELERATOR_CHARS:
        raise ConfigError(f"{where} must be an accelerator name ({', '.join(all_accelerators())}), got {value!r:.40}")
    name = value.strip().lower()
    if name not in all_accelerators():
        raise ConfigError(f"unknown {where} {value!r}; accelerators: {', '.join(all_accelerators())} "
                          "(a runtime adapter declares the ones it runs on)")
    return name


def check_accelerator(runtime: str, value: Any, where: str = "accelerator") -> str:
    """`value` (None = the runtime's default) as an accelerator `runtime` runs on; ConfigError else."""
    if value is None:
        return default_accelerator(runtime)
    name = canonical_accelerator(value, where)
    if name not in accelerators(runtime):
        raise ConfigError(f"{runtime} does not run on {name}; it runs on {', '.join(accelerators(runtime))}")
    return name


def device_string(runtime: str, accelerator: str | None) -> str:
    """The runtime's own name for an accelerator (OpenVINO "NPU", ONNX Runtime "CUDAExecutionProvider")."""
    adapter = RUNTIMES.get(runtime)
    return adapter.accelerators[check_accelerator(runtime, accelerator)]


def accelerator_suffix(runtime: str | None, accelerator: str | None) -> str:
    """The accelerator's part of a profile or latency-model key: '' for the runtime's default one (so
    every key written before accelerators existed keeps its meaning), ``@<name>`` for any other."""
    if not accelerator:
        return ""
    if runtime in RUNTIMES and accelerator == default_accelerator(str(runtime)):
        return ""
    return f"@{accelerator}"


# ------------------------------------------------------------------------------ the device side

def device_modules() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{name the agent reports: (module to look for, distributions)}, over every runtime."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for a in adapters():
        for reported, module, dists in a.device_modules:
            out[reported] = (module, tuple(dists))
    return out
