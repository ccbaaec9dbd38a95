"""Which device a latency figure belongs to: the speed-relevant part of an agent fingerprint.

Two machines can share an `lscpu` model name and a core count and still differ 5x in speed (seen
here: an AMD EPYC VM with AVX-512 and one with AVX2 only, both `AMD EPYC`, 2 cores). So a latency
model is tied to the *identity* it was fitted on, built from what changes speed:

    hardware: arch, CPU vendor / family / model / stepping (x86) or MIDR implementer / part (ARM),
              the speed-relevant ISA flags (SPEED_FLAGS), logical cores, memory (GiB), cache sizes,
              GPUs (name, compute capability, driver), Jetson power mode
    runtime:  the runtime that ran the model and its version
    recipe:   for an INT8 model, the quantization recipe this device's exports use
              (`edgekd.runtimes.int8_settings.device_recipe`: S8 and U8 activations run at different speeds)

A model whose identity differs from this device's in any of these fields is *foreign*: it is never
used as this device's; `edgekd.latency.drift` adapts it (`edgekd.latency.transfer`) or calibrates instead.
A model that records no identity (fitted before identities existed) is foreign too.

Device-safe: stdlib only.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Mapping

# ISA extensions that change which kernels a runtime can use (and so its speed). x86: vector width,
# FMA, VNNI / BF16 / FP16 dot products, AMX tiles; ARM (names as /proc/cpuinfo `Features`): NEON,
# half precision, dot product, int8 matmul, SVE, BF16.
SPEED_FLAGS = frozenset({
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx512ifma", "avx512vbmi", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "neon", "fphp", "asimdhp", "asimddp", "dotprod", "i8mm", "sve", "sve2", "bf16", "sme",
})
# hardware fields in the order they are compared and reported
HARDWARE_FIELDS = ("arch", "vendor", "family", "model", "stepping", "midr", "isa", "cores", "memory_gib",
                   "cache", "gpus", "jetson_power_mode")


def hardware_identity(fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
    """The speed-relevant hardware fields of an agent fingerprint, or None for a fingerprint from
    before `cpu` identities were recorded (it cannot tell two machines of one model name apart)."""
    cpu = fingerprint.get("cpu")
    if not isinstance(cpu, Mapping):
        return None
    # the fingerprint comes from a peer: take only the shapes we expect, ignore anything else
    raw_flags = cpu.get("flags")
    flags = [f for f in raw_flags if isinstance(f, str)] if isinstance(raw_flags, list) else []
    midr = cpu.get("midr") if isinstance(cpu.get("midr"), Mapping) else None
    cache = cpu.get("cache") if isinstance(cpu.get("cache"), Mapping) else {}
    ram = fingerprint.get("ram_bytes")
    gpus = []
    nvidia = fingerprint.get("nvidia") if isinstance(fingerprint.get("nvidia"), Mapping) else {}
    raw_gpus = (nvidia or {}).get("gpus")
    for g in raw_gpus if isinstance(raw_gpus, list) else []:
        if isinstance(g, Mapping):
            gpus.append({k: g.get(k) for k in ("name", "compute_capability", "driver")})
    return {
        "arch": fingerprint.get("arch"),
        "vendor": cpu.get("vendor"),
        "family": cpu.get("family"),
        "model": cpu.get("model"),
        "stepping": cpu.get("stepping"),
        "midr": {k: midr.get(k) for k in ("implementer", "part")} if midr else None,
        "isa": sorted(f for f in flags if f in SPEED_FLAGS),
        "cores": fingerprint.get("cores_logical"),
        "memory_gib": round(ram / 2**30) if isinstance(ram, int) and not isinstance(ram, bool) and ram > 0 else None,
        "cache": {str(k): str(v) for k, v in cache.items()} or None,
        "gpus": gpus or None,
        "jetson_power_mode": fingerprint.get("jetson_power_mode"),
    }


def model_identity(fingerprint: Mapping[str, Any], runtime: str, recipe: str | None = None) -> dict[str, Any]:
    """The identity a latency model of `runtime` on this device records: hardware + runtime version,
    and for an INT8 model its quantization `recipe` (absent otherwise, so an fp32 identity is what it
    always was)."""
    versions = fingerprint.get("runtimes") if isinstance(fingerprint.get("runtimes"), Mapping) else {}
    out = {"hardware": hardware_identity(fingerprint), "runtime": runtime,
           "runtime_version": (versions or {}).get(runtime)}
    if recipe is not None:
        out["recipe"] = recipe
    return out


def digest(identity: Any) -> str:
    """A short stable hash of an identity (8 hex digits)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]


def differences(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """Speed-relevant fields in which a model's recorded identity differs from this device's, as
    readable `field: recorded -> current` lines; a missing identity is one difference."""
    if not recorded or not recorded.get("hardware"):
        return ["identity: none recorded (fitted before device identities, or on an unknown device)"]
    out = []
    hw_old, hw_new = recorded.get("hardware") or {}, current.get("hardware") or {}
    for f in HARDWARE_FIELDS:
        a, b = hw_old.get(f), hw_new.get(f)
        if a != b:
            if f == "isa" and isinstance(a, list) and isinstance(b, list):
                gone, new = sorted(set(a) - set(b)), sorted(set(b) - set(a))
                out.append("isa: " + ", ".join([f"-{x}" for x in gone] + [f"+{x}" for x in new]))
            else:
                out.append(f"{f}: {a} -> {b}")
    for f in ("runtime", "runtime_version", "recipe"):
        if recorded.get(f) != current.get(f):
            out.append(f"{f}: {recorded.get(f)} -> {current.get(f)}")
    return out


def isa_level(hardware: Mapping[str, Any] | None) -> str:
    """The widest vector ISA, for names: amx / avx512 / avx2 / avx / sse (x86); sve / i8mm / dotprod /
    neon (ARM); '' when unknown."""
    isa = set((hardware or {}).get("isa") or [])
    for level, flags in (("amx", {"amx_tile"}), ("avx512", {"avx512f"}), ("avx2", {"avx2"}), ("avx", {"avx"}),
                         ("sve", {"sve", "sve2"}), ("i8mm", {"i8mm"}), ("dotprod", {"asimddp", "dotprod"}),
                         ("neon", {"asimd", "neon"}), ("sse", {"sse4_2"})):
        if isa & flags:
            return level
    return ""


def name_suffix(fingerprint: Mapping[str, Any]) -> str:
    """`<isa level>-<digest of the hardware identity>` for a default profile name (e.g. `avx2-1a2b3c4d`),
    so two machines that share a CPU model name but differ in any speed-relevant field (one ISA flag
    is enough) get different profiles; '' for an old fingerprint without an identity."""
    hw = hardware_identity(fingerprint)
    if hw is None:
        return ""
    level = isa_level(hw)
    return re.sub(r"-{2,}", "-", f"{level}-{digest(hw)}").strip("-")
