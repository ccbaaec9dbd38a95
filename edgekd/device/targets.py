"""Targets: one YAML file per class of device (cpu, nvidia-gpu, jetson-orin-nano, rpi4, rpi5, ...).

A target says which runtimes the device runs (in order of preference), which export formats and
precisions make sense there, the accelerator they run on, the default thread count, the input
layout, how to install the device side, and prior hardware figures (peak compute, memory bandwidth,
with their datasheet source) that seed latency prediction before anything is measured.

`accelerator` (optional: cpu, gpu, npu, dla, ... any name a runtime adapter declares, any case) is
where every listed runtime runs; absent, each runs on its own default (its adapter's first). Every
runtime listed must declare it. Runtimes, formats, precisions and accelerators are validated against
the runtime registry (`edgekd.runtimes.catalog`), so a new accelerator is a target YAML plus the
adapter's declaration.

Where targets come from, later ones overriding earlier ones by name:
  1. the built-in `edgekd/builtin_targets/` directory, shipped inside the package (a wheel has it too),
  2. every directory in $EDGEKD_TARGETS (os.pathsep-separated),
  3. `targets_dir` given by the caller (`--targets-dir`).
So a user adds a target by dropping `<name>.yaml` into a directory. Device side: yaml + stdlib only.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from edgekd.errors import ConfigError

BUILTIN_TARGETS_DIR = Path(__file__).resolve().parent / "builtin_targets"
ENV_VAR = "EDGEKD_TARGETS"
LAYOUTS = ("NCHW", "NHWC")
REQUIRED = ("name", "arch", "runtimes", "formats", "precisions", "input_layout", "install", "hardware")


@dataclasses.dataclass(frozen=True)
class Target:
    """One device class. `hardware` holds the prior figures (peak_gflops_fp32, memory_bandwidth_gbs,
    ... and `source`, the datasheet they come from)."""

    name: str
    arch: str
    runtimes: tuple[str, ...]
    formats: tuple[str, ...]
    precisions: tuple[str, ...]
    input_layout: str
    install: str
    hardware: dict[str, Any]
    default_threads: int | None = None
    accelerator: str | None = None  # None: each runtime's default accelerator
    description: str = ""
    aliases: tuple[str, ...] = ()
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("runtimes", "formats", "precisions", "aliases"):
            out[key] = list(out[key])
        return out


def _search_dirs(targets_dir: str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | None) -> list[Path]:
    dirs = [BUILTIN_TARGETS_DIR]
    env = os.environ.get(ENV_VAR, "")
    dirs += [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    if targets_dir is not None:
        given = [targets_dir] if isinstance(targets_dir, (str, os.PathLike)) else list(targets_dir)
        for d in given:
            path = Path(d).expanduser()
            if not path.is_dir():
                raise ConfigError(f"{path}: targets directory does not exist; create it and put <name>.yaml files in it")
            dirs.append(path)
    return dirs


def _fail(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: bad target file: {what}")


def parse_target(path: Path) -> Target:
    """Load and validate one target YAML; ConfigError naming the file on anything wrong."""
    from edgekd.runtimes.catalog import PRECISION_NAMES, RUNTIMES, check_accelerator, export_formats, format_runtime

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _fail(path, f"unreadable YAML ({first})") from None
    if not isinstance(data, dict):
        raise _fail(path, "expected a mapping of keys at the top level")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise _fail(path, f"missing key(s) {', '.join(missing)}")
    name = data["name"]
    if not isinstance(name, str) or name != path.stem:
        raise _fail(path, f"name {name!r} must equal the file name {path.stem!r}")
    lists = {}
    for key, valid in (("runtimes", RUNTIMES.names()), ("formats", export_formats()), ("precisions", PRECISION_NAMES)):
        value = data[key]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise _fail(path, f"{key} must be a non-empty list of names")
        unknown = [v for v in value if v not in valid]
        if unknown:
            raise _fail(path, f"unknown {key} {', '.join(unknown)}; valid: {', '.join(valid)}")
        lists[key] = tuple(value)
    if data["input_layout"] not in LAYOUTS:
        raise _fail(path, f"input_layout must be one of {', '.join(LAYOUTS)}")
    threads = data.get("default_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise _fail(path, "default_threads must be a positive integer or null")
    hardware = data["hardware"]
    if not isinstance(hardware, dict) or not isinstance(hardware.get("source"), str):
        raise _fail(path, "hardware must be a mapping with a `source` naming the datasheet")
    for key, value in hardware.items():
        if key.startswith(("peak_", "memory_")) and not isinstance(value, (int, float)):
            raise _fail(path, f"hardware.{key} must be a number")
    accelerator = data.get("accelerator")
    if accelerator is not None:
        try:
            runs = dict.fromkeys([*lists["runtimes"], *(format_runtime(f) for f in lists["formats"])])
            accelerator = [check_accelerator(r, accelerator, "accelerator") for r in runs][0]
        except ConfigError as err:
            raise _fail(path, str(err)) from None
    aliases = data.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise _fail(path, "aliases must be a list of names")
    return Target(name=name, arch=str(data["arch"]), input_layout=data["input_layout"], install=str(data["install"]),
                  hardware=dict(hardware), default_threads=threads, accelerator=accelerator, description=str(data.get("description", "")),
                  aliases=tuple(aliases), path=str(path), **lists)


def _all(targets_dir: Any = None) -> dict[str, Target]:
    found: dict[str, Target] = {}
    for directory in _search_dirs(targets_dir):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.y*ml")):
            target = parse_target(path)
            found[target.name] = target
    return found


def list_targets(targets_dir: Any = None) -> list[Target]:
    """Every target visible from the built-in directory, $EDGEKD_TARGETS and `targets_dir`."""
    return [t for _, t in sorted(_all(targets_dir).items())]


def load_target(name: str, targets_dir: Any = None) -> Target:
    """A target by name or alias ("jetson" -> jetson-orin-nano); ConfigError listing valid names."""
    import difflib

    targets = _all(targets_dir)
    if name in targets:
        return targets[name]
    for target in targets.values():
        if name in target.aliases:
            return target
    names = sorted(targets)
    close = difflib.get_close_matches(name, names + [a for t in targets.values() for a in t.aliases], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown target {name!r}.{hint} Valid targets: {', '.join(names)} "
                      f"(add one as <name>.yaml in --targets-dir or ${ENV_VAR})")
