"""Which latency points and models describe what this device's exports are *now*: the INT8 recipe.

An INT8 artifact's speed depends on how it was quantized as much as on the device: on the Xeon VM
the same 16 students took 1.09x their fp32 time as ONNX Runtime INT8 with S8 activations and 0.68x
with U8 (`scripts/bench_ort_int8.py`). The exporters choose those settings from the device identity
(`edgekd.runtimes.int8_settings`), so when that rule changes, the profile's older INT8 points and the
model fitted on them describe artifacts the device no longer gets. So:

  * every INT8 measurement records its artifact's recipe (`Measurement.recipe`, from the manifest's
    ``options.int8_settings``: `int8_settings.recipe_of`);
  * an INT8 latency model records in its identity the recipe this device exports with now
    (`config_identity`), so a model fitted under another recipe (or before recipes were recorded)
    is *foreign*: adapted as a prior (`edgekd.latency.drift`), never used as it is;
  * a point of another recipe, or of none recorded, joins no fit and is no "measured" latency
    (`is_current`): fit, transfer points, the deploy's latency table, the reused teacher figure, the
    bench drift check and the Pareto plot; a model of another recipe predicts nothing as it is
    (`model_is_current`, read by `edgekd.deploy.candidates.latency_models`).

fp32 / fp16 points, TensorRT (which builds its INT8 on the device) and text models (dynamic INT8,
chosen by no device rule; keys with ``/seqL``) have no recipe: nothing changes for them. Host side,
stdlib only.
"""
from __future__ import annotations

from typing import Any, Mapping

from edgekd.device.identity import model_identity
from edgekd.runtimes.int8_settings import device_recipe, recipe_of


def current_recipe(device: Mapping[str, Any] | None, runtime: str, precision: str, text: bool = False) -> str | None:
    """The recipe `runtime` exports `precision` with for the device whose fingerprint is `device`
    (a fingerprint from before identities: the recipe for no identity, which is what its exports got).
    None for text models: their INT8 is dynamic quantization, whose settings follow no device rule."""
    return None if text else device_recipe(runtime, precision, device or None)


def key_recipe(device: Mapping[str, Any] | None, key: str) -> str | None:
    """`current_recipe` of the configuration a latency model key names (``runtime/precision/tN/bN``,
    ``.../seqL`` for text inputs, ``@accelerator``)."""
    parts = str(key).split("@")[0].split("/")
    if len(parts) < 2:
        return None
    return current_recipe(device, parts[0], parts[1], text=any(p.startswith("seq") for p in parts[2:]))


def config_identity(fingerprint: Mapping[str, Any], key: str, runtime: str | None = None) -> dict[str, Any]:
    """The identity a latency model of configuration `key` on this device records: the hardware, the
    runtime (`runtime`, else the key's) and its version and, for INT8, the recipe its exports use now."""
    rt = runtime or str(key).split("/")[0]
    return model_identity(fingerprint, rt, key_recipe(fingerprint, key))


def artifact_recipe(manifest: Mapping[str, Any]) -> str | None:
    """The recipe of an exported artifact, from its manifest (``options.int8_settings``); None when it
    is not INT8 or records no settings (a runtime without a rule, a text model, or an export from before them)."""
    if str(manifest.get("precision")) != "int8":
        return None
    options = manifest.get("options") if isinstance(manifest.get("options"), Mapping) else {}
    return recipe_of(str(manifest.get("runtime")), (options or {}).get("int8_settings"))


def is_current(m: Any, device: Mapping[str, Any] | None, runtime: str | None = None,
               shape: Any = None) -> bool:
    """Whether measurement `m` describes what this device's export of its configuration is now: always
    for a precision without a recipe (and for text inputs, `shape` of one dimension); for image INT8,
    only when its recorded recipe is the device's."""
    want = current_recipe(device, runtime or m.runtime_name, str(m.precision), text=shape is not None and len(shape) == 1)
    return want is None or getattr(m, "recipe", None) == want


def model_is_current(raw: Mapping[str, Any], device: Mapping[str, Any] | None, key: str) -> bool:
    """Whether a stored latency model (its dict) was fitted under the recipe this device's exports of
    `key` use now: always for a configuration without a recipe."""
    want = key_recipe(device, key)
    identity = raw.get("identity") if isinstance(raw.get("identity"), Mapping) else {}
    return want is None or (identity or {}).get("recipe") == want
