"""ONNX Runtime INT8 settings that follow the device's instruction set.

Weights. ONNX Runtime runs a static QDQ model on x86 through U8S8 integer kernels. Without VNNI those
kernels use VPMADDUBSW: two u8 x s8 products are summed into a *saturating* int16, and 255 * 127 * 2 =
64770 does not fit in 32767, so large activations times large weights are clipped and accuracy can
fall by points (measured on an AVX2-only VM: -3.7 points, the parity gate failed it; run by an AVX2
CPU's kernels under emulation, `scripts/bench_int8_isa.py`, a ResNet-10 at 128 px fell from 97.0 % to
64.7 % test, while the same student with 7-bit weights gave the same logits there as here). ONNX Runtime's
quantization guide says the same and recommends `reduce_range` (7-bit weights) or U8U8 there. With
7-bit weights 255 * 63 * 2 = 32130 fits, so nothing saturates. With VNNI (AVX512-VNNI, AVX-VNNI, AMX)
the kernels use VPDPBUSD, which accumulates in int32, and ARM's kernels (SDOT/UDOT, I8MM, or NEON
widening multiplies) do not saturate either: those keep the full 8-bit weight range. (Checked on
ARM under qemu on a conv built to saturate: Cortex-A53 and A72, the Raspberry Pi 3 / 4 cores without
dot products, and qemu's `max` core with them computed it exactly, also with U8 activations and
8-bit weights; `tests/test_arm64.py`.)

Activations. On x86 the activations are quantized as U8 (QUInt8), not S8. ONNX Runtime's QDQ fusion
takes S8 activations only in its ARM builds (`QDQIsInt8Allowed()` in its qdq_selector_action_transformer
is false elsewhere), and on x86 its QDQS8ToU8 rewrite turns an S8 QuantizeLinear into a U8 one only
when a single DequantizeLinear reads it. A tensor that two nodes read (a residual block's input:
its first conv and the skip Add or downsample conv; MobileNet's residual inputs) keeps its S8 pair,
and the convs reading it run in fp32 between a DequantizeLinear and a QuantizeLinear. Measured on the
Xeon VM (ORT 1.31.1, one thread, bench_scale's 16 untrained students at 96-224 px, 2026-12-01,
`scripts/bench_ort_int8.py`): S8 activations fused 62 % of the convs (a ResNet-10 5 of 12, a
MobileNetV2 37 of 52) and INT8 took 0.81-1.29x fp32's time (MobileNetV3 2.4-4.0x); U8 activations
fused every conv and took 0.39-0.98x (MobileNetV3, whose hard-swish and SE stay float, 0.92-1.30x);
median 0.68x against 1.09x. Both are asymmetric 8-bit activations: four trained students scored the
same test accuracy under both, and the parity gate measures it. ARM keeps ORT's default S8
activations (`ARM_ACTIVATIONS`): ORT 1.31.1's aarch64 build, run under emulation here
(`../shared/tools/arm64`; op counts only, emulated timings mean nothing), fused all 12 convs of the
ResNet-10 and all 52 of the MobileNetV2 with S8 activations as with U8. An export for no known
architecture (no identity: `edgekd export` without a device) takes U8 too, the one choice every ORT
build fuses.

OpenVINO's CPU plugin (oneDNN) has the same int16 saturation on x86 without VNNI. NNCF's `overflow_fix`
quantizes weights to 7 bits: FIRST_LAYER (NNCF's default, and its recommendation for such CPUs: the
first convolution reads the unnormalised-range image) or ENABLE (every layer). The first layer is not
enough. Run by the kernels of an AVX2 CPU without VNNI (qemu -cpu Haswell, `scripts/bench_int8_isa.py`,
2026-12-02), a trained MobileNetV2-0.5 at 96 px scored 88.5 % test with FIRST_LAYER against 95.9 % on
this VNNI host, and 95.9 % with ENABLE (the same predictions on both CPUs); a ResNet-10's logits moved
by up to 6.5 % of their range with FIRST_LAYER, not at all with ENABLE. So x86 without VNNI gets
ENABLE. With VNNI or on ARM nothing saturates, so the full range (DISABLE). litert-torch's PT2E quantizer
takes no setting that depends on the device: one full-integer model (symmetric per-channel int8 weights,
int8 activations) for every device; LiteRT picks its kernels per ISA when it loads the model.

`int8_settings(runtime, identity)` gives each runtime's record (`RULES`), every one with the keys of
`SETTINGS_KEYS` (what quantized it, the types, per-channel, the weight range, the rule that chose them
and the ISA facts it read) plus the runtime's own API argument (ONNX Runtime `reduce_range`, NNCF
`overflow_fix` / `preset`). Each adapter applies its record and writes it, as it is, to the artifact
manifest (`options.int8_settings`). No identity (an export for no particular device) or an unknown
architecture: the settings that are right on *every* device, 7-bit weights for ONNX Runtime and
OpenVINO, since the artifact may well run on x86 without VNNI (full 8-bit weights there lost 32 points
above). On this VNNI host 7-bit weights cost at most one test image of 269 (0.37 points: OpenVINO's
MobileNetV2; the other five runtime x student pairs checked scored the same). Stdlib only.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from edgekd.device.identity import hardware_identity

# any of these means the x86 integer dot product accumulates in int32 (no int16 saturation)
X86_INT32_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
X86_ARCHES = frozenset({"x86_64", "amd64", "x86", "i686", "i386"})
ARM_DOT_FLAGS = frozenset({"asimddp", "dotprod", "i8mm"})
# what every runtime's record holds (the manifest's options.int8_settings), whichever runtime wrote it
SETTINGS_KEYS = ("quantizer", "activation_type", "weight_type", "per_channel", "weight_range", "rule", "arch",
                 "int32_dot")


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


def _isa_facts(identity: Mapping[str, Any] | None) -> tuple[str | None, str | None, list[str] | None]:
    """(kind, arch, int32_dot flags) of a device identity: kind is "x86-no-vnni", "x86-vnni", "other"
    (a known non-x86 architecture), "unknown-arch" or None (no identity)."""
    hw = _hardware(identity)
    if hw is None:
        return None, None, None
    arch = str(hw.get("arch") or "").lower()
    isa = {str(f).lower() for f in (hw.get("isa") or []) if isinstance(f, str)}
    if arch in X86_ARCHES:
        dot = sorted(isa & X86_INT32_DOT_FLAGS)
        return ("x86-vnni" if dot else "x86-no-vnni"), arch, dot
    if not arch:
        return "unknown-arch", None, None
    return "other", arch, sorted(isa & ARM_DOT_FLAGS)


def _full_range_rule(arch: str | None, dot: list[str] | None) -> str:
    """Why a device whose integer kernels do not saturate keeps full 8-bit weights (x86 with VNNI /
    AMX, or another architecture): the same reason for every runtime."""
    if arch in X86_ARCHES:
        return f"x86 with {', '.join(dot or [])}: int32 dot products, full 8-bit weights"
    return f"{arch}: integer kernels do not saturate, full 8-bit weights"


#: device kinds (`_isa_facts`) that get 7-bit weights: x86 without VNNI, and a device not known (it may be one)
SATURATION_SAFE_KINDS = (None, "unknown-arch", "x86-no-vnni")
PORTABLE = "right on any CPU (full 8-bit weights saturate on x86 without VNNI)"


def ort_int8_settings(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """The quantize_static settings for the device `identity` describes, as a JSON-able record:
    SETTINGS_KEYS (``activation_type`` / ``weight_type`` as ONNX Runtime QuantType names) and
    ``reduce_range``; ``rule`` says why, ``arch`` and ``int32_dot`` (the ISA flags that decided, or
    None when unknown)."""
    kind, arch, dot = _isa_facts(identity)
    rule = {
        None: f"no device identity: 7-bit weights (reduce_range), {PORTABLE}",
        "unknown-arch": f"device architecture unknown: 7-bit weights (reduce_range), {PORTABLE}",
        "x86-no-vnni": "x86 without VNNI: U8S8 kernels use VPMADDUBSW (saturating int16 sums); "
                       "7-bit weights (reduce_range) cannot saturate",
    }.get(kind) or _full_range_rule(arch, dot)
    reduce_range = kind in SATURATION_SAFE_KINDS
    activations, activation_rule = _ort_activations(kind)
    return {"quantizer": "onnxruntime quantize_static (QDQ)", "activation_type": activations, "weight_type": "QInt8",
            "per_channel": True, "reduce_range": reduce_range, "weight_range": "7-bit" if reduce_range else "8-bit",
            "rule": rule, "activation_rule": activation_rule, "arch": arch, "int32_dot": dot}


#: why ARM keeps ONNX Runtime's default S8 activations (see the module docstring for x86)
ARM_ACTIVATIONS = ("not x86: ONNX Runtime's default S8 activations (its ARM builds fuse S8 QDQ convs; "
                   "leaving a shared tensor's convs in fp32 is its x86 builds')")


def _ort_activations(kind: str | None) -> tuple[str, str]:
    """(QuantType name of the activations, why) for a device kind of `_isa_facts`."""
    if kind in ("x86-vnni", "x86-no-vnni"):
        return "QUInt8", ("x86: U8 activations; ONNX Runtime's x86 QLinearConv takes U8, and its S8->U8 rewrite "
                          "skips a tensor two nodes read (a residual's input), leaving those convs in fp32")
    if kind == "other":
        return "QInt8", ARM_ACTIVATIONS
    return "QUInt8", ("device architecture unknown: U8 activations, which every ONNX Runtime build fuses "
                      "(S8 only its ARM builds)")


# NNCF's OverflowFix values (nncf.OverflowFix(value)) and the weight range each leaves
OVERFLOW_FIX_RANGE = {"disable": "8-bit", "first_layer_only": "7-bit first layer, 8-bit elsewhere", "enable": "7-bit"}


def openvino_int8_settings(identity: Mapping[str, Any] | None) -> dict[str, Any]:
    """NNCF's quantize settings for the device `identity` describes (SETTINGS_KEYS plus ``overflow_fix``
    and ``preset``, NNCF's own names): x86 without VNNI, the overflow fix on every layer (the first
    layer alone, NNCF's recommendation, still saturated: module doc); x86 with VNNI and other
    architectures, none; unknown device, every layer too (an artifact for no device may run on one)."""
    kind, arch, dot = _isa_facts(identity)
    fix, rule = {
        None: ("enable", f"no device identity: NNCF's overflow fix on every layer, {PORTABLE}"),
        "unknown-arch": ("enable", f"device architecture unknown: NNCF's overflow fix on every layer, {PORTABLE}"),
        "x86-no-vnni": ("enable", "x86 without VNNI: oneDNN's u8s8 kernels (VPMADDUBSW) sum in saturating int16; "
                                  "NNCF's overflow fix on every layer (on the first only, NNCF's default, a "
                                  "MobileNetV2 lost 7.4 points on an emulated AVX2 CPU)"),
    }.get(kind) or ("disable", _full_range_rule(arch, dot))
    return {"quantizer": "nncf.quantize", "preset": "performance", "activation_type": "int8 (u8 where non-negative)",
            "weight_type": "int8 symmetric", "per_channel": True, "overflow_fix": fix,
            "weight_range": OVERFLOW_FIX_RANGE[fix], "rule": rule, "arch": arch, "int32_dot": dot}


def litert_int8_settings(identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """litert-torch PT2E's settings: the same for every device (`identity` is not read; ``arch`` and
    ``int32_dot`` are None: the artifact was made for none in particular)."""
    return {"quantizer": "litert-torch PT2E (symmetric config)", "activation_type": "int8 per-tensor affine",
            "weight_type": "int8 symmetric",
            "per_channel": True, "full_integer": True, "weight_range": "8-bit",
            "rule": "no litert-torch quantizer setting depends on the device: one full-integer model for every ISA "
                    "(LiteRT picks its kernels when it loads the model)",
            "arch": None, "int32_dot": None}


#: runtimes whose INT8 any x86 host computes as a device without saturation does: ONNX Runtime with the
#: host checks' exact-integer option (`parity.HOST_CHECK_OPTIONS`), LiteRT (XNNPACK's integer kernels do not
#: saturate: the same logits on an emulated AVX2 CPU as here, `scripts/bench_int8_isa.py`)
EXACT_ON_ANY_HOST = frozenset({"onnxruntime", "litert"})


def host_check_caveat(runtime: str, settings: Any, host: Mapping[str, Any] | None) -> str | None:
    """Why an INT8 artifact's accuracy measured on this host (`host`: its fingerprint or hardware identity)
    can be below what its device measures, or None: the host is x86 without VNNI, `runtime` has no exact
    mode here (OpenVINO), and the artifact keeps 8-bit weights somewhere (a VNNI or ARM device's recipe,
    or NNCF's first-layer fix), whose pair sums this host's kernels saturate and the device's need not."""
    kind = _isa_facts(host)[0]
    if runtime in EXACT_ON_ANY_HOST or kind != "x86-no-vnni" or not isinstance(settings, Mapping):
        return None
    if settings.get("weight_range") == "7-bit":
        return None
    return (f"this host is x86 without VNNI: its {runtime} INT8 kernels saturate on the artifact's "
            f"{settings.get('weight_range') or '8-bit'} weights where the device's need not, so the accuracy here "
            "can be below the device's; measure it there (edgekd bench ARTIFACT --data ... --device URL)")


# runtime -> its INT8 settings for a device identity (the adapters apply and record these)
RULES: dict[str, Callable[[Mapping[str, Any] | None], dict[str, Any]]] = {
    "onnxruntime": ort_int8_settings, "openvino": openvino_int8_settings, "litert": litert_int8_settings}


#: per runtime, the record's keys that change the artifact's speed (its recipe); the rest says why
RECIPE_KEYS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("activation_type", "weight_type", "reduce_range", "per_channel"),
    "openvino": ("preset", "overflow_fix"),
    "litert": ("activation_type", "weight_type"),
}
RECIPE_VALUE_MAX = 64  # a value longer than this is not one of ours (the record may come from a peer)


def recipe_of(runtime: str, settings: Any) -> str | None:
    """The recipe (``key=value;...`` over RECIPE_KEYS[runtime]) of an INT8 settings record, e.g.
    ``activation_type=QUInt8;weight_type=QInt8;reduce_range=False;per_channel=True``; None for a
    runtime without a rule or a record that is not one (missing keys, values that are not short
    strings / booleans / integers: the record can come from a device, which is not trusted)."""
    keys = RECIPE_KEYS.get(runtime)
    if not keys or not isinstance(settings, Mapping):
        return None
    parts = []
    for k in keys:
        v = settings.get(k)
        if not isinstance(v, (str, bool, int)) or isinstance(v, float) or len(str(v)) > RECIPE_VALUE_MAX:
            return None
        if any(c in str(v) for c in ";=\n"):
            return None
        parts.append(f"{k}={v}")
    return ";".join(parts)


def device_recipe(runtime: str, precision: str, identity: Mapping[str, Any] | None) -> str | None:
    """The recipe `runtime` exports `precision` with for the device `identity` describes (None for any
    precision but int8, and for a runtime without a rule here, e.g. TensorRT)."""
    if precision != "int8":
        return None
    settings = int8_settings(runtime, identity)
    return recipe_of(runtime, settings) if settings else None


def int8_settings(runtime: str, identity: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The INT8 settings `runtime` would export with for the device `identity` (None: a runtime without
    a rule here, e.g. TensorRT, whose INT8 is built on the device)."""
    rule = RULES.get(runtime)
    return rule(identity) if rule else None
