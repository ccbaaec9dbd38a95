"""Shape check of a device profile as read from YAML, before any of it is used.

A profile is a hand-editable file that may also be truncated by a killed writer or damaged by a
merge. `check_profile_data` walks what `yaml.safe_load` returned and raises ProfileError, one line
naming the file and the field, for anything of the wrong type; so `profile show`, `select`,
`profile plot` and `bench --profile` never meet a value they cannot handle (no AttributeError or
TypeError traceback from deep inside). Called by `Profile.load`.

Device-safe: stdlib only.
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Callable

from edgekd.errors import ProfileError

Check = Callable[[Any], bool]


def finite_number(v: Any) -> bool:
    """A real number (not a bool), neither NaN nor infinite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(low: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _text(v: Any) -> bool:  # YAML turns an unquoted ISO date into a datetime; both are fine
    return isinstance(v, (str, _dt.date))


def _number_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and (x is None or finite_number(x)) for k, x in v.items())


def _str_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) for k in v)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


# every field a measurement may hold, with what it must be (None allowed where optional)
MEASUREMENT_FIELDS: dict[str, tuple[Check, str]] = {
    "model_sha256": (_str, "a string"),
    "format": (_str, "a string"),
    "precision": (_str, "a string"),
    "threads": (_int(0), "an integer >= 0"),
    "batch": (_int(1), "an integer >= 1"),
    "spec": (_optional(_str), "a string"),
    "params": (_optional(finite_number), "a number"),
    "macs": (_optional(finite_number), "a number"),
    "size_bytes": (_optional(finite_number), "a number"),
    "latency": (_optional(_number_map), "a mapping of names to numbers"),
    "peak_rss_bytes": (_optional(finite_number), "a number"),
    "accuracy": (_optional(lambda v: finite_number(v) and 0 <= v <= 1), "a number in [0, 1]"),
    "accuracy_count": (_optional(_int(0)), "an integer >= 0"),
    "dataset_fingerprint": (_optional(_str), "a string"),
    "load_ms": (_optional(finite_number), "a number"),
    "first_inference_ms": (_optional(finite_number), "a number"),
    "input_source": (_optional(_str), "a string"),
    "runtime": (_optional(_str), "a string"),
    "accelerator": (_optional(_str), "an accelerator name (cpu, gpu, npu, ...)"),
    "artifact_sha256": (_optional(_str), "a string"),
    "measured_at": (_text, "a date string"),
    "versions": (_optional(_str_map), "a mapping"),
    "warnings": (_optional(_str_list), "a list of strings"),
    "count": (_int(1), "an integer >= 1"),
    "recipe": (_optional(_str), "a string (an INT8 quantization recipe)"),
}
REQUIRED = ("model_sha256", "format", "precision", "threads", "batch")
TOP_FIELDS: dict[str, tuple[Check, str]] = {
    "name": (_optional(lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)), "a string"),
    "device": (_optional(_str_map), "a mapping"),
    "measurements": (_optional(lambda v: isinstance(v, dict)), "a mapping of keys to measurements"),
    "created": (_optional(_text), "a date string"),
    "updated": (_optional(_text), "a date string"),
    "latency_model": (_optional(lambda v: isinstance(v, dict)), "a mapping (written by `edgekd profile calibrate`)"),
}


def _fail(path: Path | str, where: str, value: Any, want: str) -> ProfileError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ProfileError(f"profile {path}: {where} is {shown}, not {want}; fix or delete the file")


def check_profile_data(data: dict[str, Any], path: Path | str) -> None:
    """ProfileError naming `path` and the first field of a wrong shape in a loaded profile."""
    for key, (ok, want) in TOP_FIELDS.items():
        if key in data and not ok(data[key]):
            raise _fail(path, f"'{key}'", data[key], want)
    for key, entry in (data.get("measurements") or {}).items():
        if not isinstance(entry, dict):
            raise _fail(path, f"measurement {str(key)[:60]!r}", entry, "a mapping of fields")
        missing = [f for f in REQUIRED if f not in entry]
        if missing:
            raise ProfileError(f"profile {path}: measurement {str(key)[:60]!r} lacks {', '.join(missing)} "
                               "(truncated or hand-edited?); fix or delete the file")
        for field, value in entry.items():
            rule = MEASUREMENT_FIELDS.get(field)
            if rule is not None and not rule[0](value):
                raise _fail(path, f"measurement {str(key)[:60]!r} field '{field}'", value, rule[1])
