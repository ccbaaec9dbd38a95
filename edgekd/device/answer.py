"""A device's measurement answer, checked before any of it becomes a profile row.

What `edgekd.bench.measure` returns travels from the device (an agent over TCP or a serial line, an
isolated child) as JSON. Strict JSON already refuses NaN and Infinity; what it lets through is a
hostile or broken device's *wrong* values: a negative or absurd latency (0 is allowed: an
iteration under one tick of a coarse clock; the fit skips such a row), a string where a number
belongs, an accuracy of 7. Written into the profile, such a row would poison every later fit (a
negative time fits a negative cost) or make the profile unreadable (`profile_schema` refuses a
string latency on the next load: one bad answer would break every later command). So
`check_answer` raises AgentError, one line naming the field and the value, before
`Measurement.from_result` builds a row from it.

Device-safe: stdlib only.
"""
from __future__ import annotations

from typing import Any, Mapping

from edgekd.bench.request import MAX_BATCH, MAX_THREADS
from edgekd.device.profile_schema import finite_number as _number
from edgekd.errors import AgentError

# a latency above this (ms: about 11 days per inference) is no measurement of a model
MAX_MS = 1e9
MAX_TEXT = 2000  # a version string or warning longer than this is not one
MAX_WARNINGS = 200


def _show(v: Any) -> str:
    return repr(v)[:40]


def _bad(field: str, value: Any, what: str) -> AgentError:
    return AgentError(f"the device's measurement is not one: {field} = {_show(value)} (must be {what}); "
                      "check the device's edgekd version and runtime, then measure again")


def _section(result: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    v = result.get(name)
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise _bad(name, v, "a mapping")
    return v


def check_answer(result: Any) -> None:
    """Raise AgentError (one line) when `result`, a bench/eval answer, holds a value no real
    measurement has; return None when every field a profile row takes from it is sane."""
    if not isinstance(result, Mapping):
        raise _bad("answer", result, "a mapping")
    lat = _section(result, "latency")
    for k, v in lat.items():
        if k == "count":
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise _bad("latency.count", v, "an integer >= 1")
        elif k == "throughput_per_s":  # null: every iteration under one timer tick (infinite)
            if v is not None and not (_number(v) and v >= 0):
                raise _bad(f"latency.{k}", v, "a number >= 0 or null")
        elif k.endswith("_ms") or k == "cv":  # 0 is a timer tick on a coarse clock, never below
            if not (_number(v) and 0 <= v <= MAX_MS):
                raise _bad(f"latency.{k}", v, f"a number from 0 to {MAX_MS:g}")
    anchor = _section(result, "speed_anchor")
    for k in ("p50_ms", "ratio_p50"):
        if k in anchor and anchor[k] is not None and not (_number(anchor[k]) and 0 <= anchor[k] <= MAX_MS):
            raise _bad(f"speed_anchor.{k}", anchor[k], f"a number from 0 to {MAX_MS:g}")
    acc = _section(result, "accuracy")
    if acc.get("top1") is not None and not (_number(acc["top1"]) and 0 <= acc["top1"] <= 1):
        raise _bad("accuracy.top1", acc["top1"], "a number in [0, 1]")
    if acc.get("count") is not None and not (isinstance(acc["count"], int) and not isinstance(acc["count"], bool)
                                             and acc["count"] >= 0):
        raise _bad("accuracy.count", acc["count"], "an integer >= 0")
    mem = _section(result, "memory")
    if mem.get("peak_rss_bytes") is not None and not (_number(mem["peak_rss_bytes"]) and mem["peak_rss_bytes"] >= 0):
        raise _bad("memory.peak_rss_bytes", mem["peak_rss_bytes"], "a number >= 0")
    for k in ("load_ms", "first_inference_ms"):
        v = result.get(k)
        if v is not None and not (_number(v) and 0 <= v <= MAX_MS):
            raise _bad(k, v, f"a number >= 0 and <= {MAX_MS:g}")
    settings = _section(result, "settings")
    for k, low, high in (("threads", 0, MAX_THREADS), ("batch", 1, MAX_BATCH)):  # what a request may ask
        v = settings.get(k)
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and low <= v <= high):
            raise _bad(f"settings.{k}", v, f"an integer from {low} to {high}")
    for k in ("accelerator", "input_source"):
        v = settings.get(k)
        if v is not None and not (isinstance(v, str) and len(v) <= 64):
            raise _bad(f"settings.{k}", v, "a short string")
    art = _section(result, "artifact")
    for k in ("format", "precision", "runtime", "model_sha256"):
        v = art.get(k)
        if v is not None and not (isinstance(v, str) and len(v) <= 128):
            raise _bad(f"artifact.{k}", v, "a short string")
    if art.get("size_bytes") is not None and not (_number(art["size_bytes"]) and art["size_bytes"] >= 0):
        raise _bad("artifact.size_bytes", art["size_bytes"], "a number >= 0")
    versions = _section(result, "versions")
    if not all(isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= MAX_TEXT for k, v in versions.items()):
        raise _bad("versions", dict(versions), "a mapping of short strings")
    warnings = result.get("warnings")
    if warnings is not None and not (isinstance(warnings, list) and len(warnings) <= MAX_WARNINGS
                                     and all(isinstance(w, str) and len(w) <= MAX_TEXT for w in warnings)):
        raise _bad("warnings", warnings, f"a list of at most {MAX_WARNINGS} short strings")
