"""The device fingerprint the agent reports in `hello`: what a measurement depends on.

Everything is read from files and optional tools that may be absent; a missing source leaves its
field None rather than failing. Runtimes are found without importing them (importing OpenVINO or
TensorRT takes seconds and memory the benchmark should not see).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return None


def _run(cmd: list[str], timeout: float = 3.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m:
            return m.group(1).strip()
    return platform.processor() or platform.machine()


def _cpuinfo_field(info: str, key: str) -> str | None:
    m = re.search(rf"^{re.escape(key)}\s*:\s*(.*)$", info, re.MULTILINE)
    return m.group(1).strip() if m else None


def _cache_sizes() -> dict[str, str]:
    """Cache sizes of cpu0 as the kernel reports them (`L1d`, `L1i`, `L2`, `L3`: e.g. '32K')."""
    out: dict[str, str] = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        level, kind, size = (_read(str(index / f)) for f in ("level", "type", "size"))
        if not (level and size):
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind or "", "")
        out[f"L{level}{suffix}"] = size
    return out


def cpu_identity() -> dict[str, Any]:
    """What identifies the CPU's speed beyond its marketing name (VMs on different hosts report the
    same `model name`): vendor / family / model / stepping (x86), MIDR implementer / variant / part /
    revision (ARM), every ISA flag the kernel lists, and the cache sizes. Missing sources give None."""
    info = _read("/proc/cpuinfo") or ""
    flags = _cpuinfo_field(info, "flags") or _cpuinfo_field(info, "Features") or ""
    midr = None
    if _cpuinfo_field(info, "CPU implementer"):
        midr = {k: _cpuinfo_field(info, f"CPU {k}") for k in ("implementer", "variant", "part", "revision")}
    else:
        raw = _read("/sys/devices/system/cpu/cpu0/regs/identification/midr_el1")
        if raw:
            try:
                v = int(raw, 16)
                midr = {"implementer": hex(v >> 24 & 0xFF), "variant": hex(v >> 20 & 0xF),
                        "part": hex(v >> 4 & 0xFFF), "revision": str(v & 0xF)}
            except ValueError:
                midr = None
    return {
        "vendor": _cpuinfo_field(info, "vendor_id"),
        "family": _cpuinfo_field(info, "cpu family"),
        "model": _cpuinfo_field(info, "model"),
        "stepping": _cpuinfo_field(info, "stepping"),
        "midr": midr,
        "flags": sorted(set(flags.split())),
        "cache": _cache_sizes(),
    }


def runtimes() -> dict[str, str | None]:
    """Runtime name -> installed version, for each runtime importable here. What to look for is each
    runtime adapter's own `device_modules` declaration (`edgekd.runtimes.catalog.device_modules`)."""
    from edgekd.runtimes.catalog import device_modules

    found: dict[str, str | None] = {}
    for name, (module, dists) in device_modules().items():
        try:
            if importlib.util.find_spec(module) is None:
                continue
        except (ImportError, ValueError):
            continue
        version = None
        for dist in dists:
            try:
                version = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
        found[name] = version
    return found


def nvidia() -> dict[str, Any] | None:
    """GPU name, driver, memory and CUDA version from nvidia-smi; Jetson L4T release; TensorRT."""
    out: dict[str, Any] = {}
    query = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    if query is None:  # drivers older than 510 do not know compute_cap
        query = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if query:
        fields = ("name", "driver", "memory", "compute_capability")
        out["gpus"] = [dict(zip(fields, [p.strip() for p in line.split(",")])) for line in query.splitlines()]
        banner = _run(["nvidia-smi"]) or ""
        m = re.search(r"CUDA Version:\s*([\d.]+)", banner)
        out["cuda"] = m.group(1) if m else None
    tegra = _read("/etc/nv_tegra_release")
    if tegra:
        out["l4t"] = tegra.splitlines()[0]
    header = _read("/usr/include/aarch64-linux-gnu/NvInferVersion.h") or _read("/usr/include/x86_64-linux-gnu/NvInferVersion.h")
    if header:
        parts = [re.search(rf"#define NV_TENSORRT_{k}\s+(\d+)", header) for k in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            out["tensorrt"] = ".".join(p.group(1) for p in parts if p)
    return out or None


def jetson_power_mode() -> str | None:
    text = _run(["nvpmodel", "-q"])
    if text:
        m = re.search(r"NV Power Mode:\s*(.+)", text)
        return m.group(1).strip() if m else text.splitlines()[0]
    status = _read("/var/lib/nvpmodel/status")
    if status:
        return status
    return "see /etc/nvpmodel.conf" if Path("/etc/nvpmodel.conf").is_file() else None


def rpi_throttled() -> str | None:
    """`vcgencmd get_throttled` value (0x0 = never throttled or under-volted)."""
    text = _run(["vcgencmd", "get_throttled"])
    return text.split("=", 1)[-1] if text else None


def temperatures() -> dict[str, float]:
    temps: dict[str, float] = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        raw, kind = _read(str(zone / "temp")), _read(str(zone / "type")) or zone.name
        try:
            temps[kind] = int(raw) / 1000.0 if raw else float("nan")
        except ValueError:
            continue
    return {k: v for k, v in temps.items() if v == v}


def device_fingerprint() -> dict[str, Any]:
    """Plain-JSON description of this device (see module docstring)."""
    try:
        import psutil

        ram = int(psutil.virtual_memory().total)
        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil is a base dependency, but the fingerprint must never fail
        ram, physical = None, None
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return {
        "hostname": socket.gethostname(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu": cpu_identity(),
        "cores_logical": os.cpu_count(),
        "cores_physical": physical,
        "ram_bytes": ram,
        "os": f"{platform.system()} {platform.release()}",
        "os_version": platform.version(),
        "board": _read("/proc/device-tree/model"),
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "runtimes": runtimes(),
        "nvidia": nvidia(),
        "jetson_power_mode": jetson_power_mode(),
        "rpi_throttled": rpi_throttled(),
        "cpu_governor": governor,
        "temperatures_c": temperatures(),
    }
