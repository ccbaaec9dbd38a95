"""ONNX Runtime INT8 settings that follow the device's instruction set.

ONNX Runtime runs a static QDQ model with S8 weights on x86 through U8S8 integer kernels (its
QDQS8ToU8 transform turns signed activations into unsigned ones). Without VNNI those kernels use
VPMADDUBSW: two u8 x s8 products are summed into a *saturating* int16, and 255 * 127 * 2 = 64770 does
not fit in 32767, so large activations times large weights are clipped and accuracy can fall by
points (measured on an AVX2-only VM: -3.7 points, the parity gate failed it). ONNX Runtime's
quantization guide says the same and recommends `reduce_range` (7-bit weights) or U8U8 there. With
7-bit weights 255 * 63 * 2 = 32130 fits, so nothing saturates. With VNNI (AVX512-VNNI, AVX-VNNI, AMX)
the kernels use VPDPBUSD, which accumulates in int32, and ARM's kernels (SDOT/UDOT, I8MM, or NEON
widening multiplies) do not saturate either: those keep the full 8-bit weight range.

`ort_int8_settings(identity)` picks the settings from a device identity (an agent fingerprint or its
`device_identity.hardware_identity`); the ONNX Runtime adapter applies them and records them, with the
rule that chose them, in the artifact manifest (`options.int8_settings`). No identity (an export for no
particular device): ONNX Runtime's defaults, recorded as such. Stdlib only.
"""
from __future__ import annotations

from typing import Any, Mapping

from edgekd.device.identity import hardware_identity

# any of these means the x86 integer dot product accumulates in int32 (no int16 saturation)
X86_INT32_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_ARCHES = frozenset({"x86_64", "amd64", "x86", "i686", "i386"})


def _hardware(identity: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """A hardware identity from a fingerprint (has ``cpu``), a model identity (has ``hardware``) or a
    hardware identity itself (has ``isa``); None when none of these."""
    if not isinstance(identity, Mapping):
        return None
    if isinstance(identity.get("cpu"), Mapping):
        return hardware_identity(identity)
    if isinstance(identity.get("hardware"), Mapping):
        return identity["hardware"]
    if "isa" in identity or "arch" in identity:
        return identity
    return None


def ort_int8_settings(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """The quantize_static settings for the device `identity` describes, as a JSON-able record:
    ``activation_type``, ``weight_type`` (ONNX Runtime QuantType names), ``reduce_range``, ``rule``
    (why), ``arch`` and ``int32_dot`` (the ISA flags that decided, or None when unknown)."""
    base = {"activation_type": "QInt8", "weight_type": "QInt8", "reduce_range": False}
    hw = _hardware(identity)
    if hw is None:
        return {**base, "rule": "no device identity: ONNX Runtime defaults (full 8-bit weights)",
                "arch": None, "int32_dot": None}
    arch = str(hw.get("arch") or "").lower()
    isa = {str(f).lower() for f in (hw.get("isa") or []) if isinstance(f, str)}
    if arch in X86_ARCHES:
        dot = sorted(isa & X86_INT32_DOT_FLAGS)
        if not dot:
            return {**base, "reduce_range": True, "arch": arch, "int32_dot": [],
                    "rule": "x86 without VNNI: U8S8 kernels use VPMADDUBSW (saturating int16 sums); "
                            "7-bit weights (reduce_range) cannot saturate"}
        return {**base, "arch": arch, "int32_dot": dot,
                "rule": f"x86 with {', '.join(dot)}: int32 dot products, full 8-bit weights"}
    if not arch:
        return {**base, "rule": "device architecture unknown: ONNX Runtime defaults (full 8-bit weights)",
                "arch": None, "int32_dot": None}
    return {**base, "arch": arch, "int32_dot": sorted(isa & {"asimddp", "dotprod", "i8mm"}),
            "rule": f"{arch}: integer kernels do not saturate, full 8-bit weights"}
