"""A benchmark request: every key it may carry, its default, and its checks.

Requests cross the wire (the agent's `bench` / `eval`), so every field is type- and range-checked
and every number must be finite before anything runs; `accelerator` must be a name some registered
runtime declares (the artifact's runtime checks its own list when it loads). Device side: stdlib, and
`edgekd.runtimes.catalog` (numpy + stdlib) only for a request that names an accelerator.
"""
from __future__ import annotations

import math
from typing import Any

from edgekd.errors import ConfigError

# Every key a request may carry, with its default. Requests are plain JSON (they cross the wire).
DEFAULT_REQUEST: dict[str, Any] = {
    "threads": None,  # runtime intra-op threads; None = the runtime's default
    # where the runtime runs it (cpu, gpu, npu, dla: edgekd.runtimes.catalog); None = the runtime's
    # default. Optional on the wire: a host sends it only when one was chosen, so older agents still
    # take a default request, and a request without it means what it always meant
    "accelerator": None,
    "batch": 1,
    "warmup_count": 10,
    "warmup_s": 1.0,
    "min_count": 100,
    "min_s": 3.0,
    "max_s": 60.0,  # hard cap on the timed loop; hitting it before min_count is flagged
    "input": "random",  # "random" (seeded normal) or "data" (real samples from the eval .npz)
    "data": None,  # path to the evaluation .npz (device-local path)
    "latency": True,  # run the timing loop
    "accuracy": None,  # None = yes when data is given
    "eval_batch": 64,  # batch for the accuracy pass when the model's batch is dynamic
    "seed": 0,
    "cv_warn": 0.10,  # coefficient of variation above which the result carries a warning
    "anchor": False,  # time a fixed numpy workload after every inference (edgekd.bench.anchor)
    "timeout_s": 900.0,  # run_isolated only: kill the child after this long
}


# Upper bounds of every numeric request field: a request crosses the wire, so each field is
# range-checked (and finite) before anything runs. Seconds fields are also bounded by timeout_s.
MAX_COUNT = 10**9
MAX_BATCH = 1 << 16
MAX_THREADS = 1024
MAX_SECONDS = 86400.0


def _number(req: dict[str, Any], key: str, low: float, high: float) -> None:
    value = req[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(f"benchmark request {key}={value!r} must be a finite number in [{low:g}, {high:g}]")


def _integer(req: dict[str, Any], key: str, low: int, high: int) -> None:
    value = req[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"benchmark request {key}={value!r} must be an integer in [{low}, {high}]")


def normalize_request(request: dict[str, Any] | None) -> dict[str, Any]:
    """Fill defaults and validate a request; unknown keys and bad values raise ConfigError.

    Every numeric field is range-checked and finite (NaN and infinities are refused); see MAX_*.
    """
    req = dict(DEFAULT_REQUEST)
    if request is not None and not isinstance(request, dict):
        raise ConfigError("a benchmark request must be a JSON object of settings")
    unknown = set(request or {}) - set(DEFAULT_REQUEST)
    if unknown:
        raise ConfigError(f"unknown benchmark request keys {sorted(unknown)}; valid keys: {sorted(DEFAULT_REQUEST)}")
    req.update({k: v for k, v in (request or {}).items()})
    for key in ("warmup_count", "min_count"):
        _integer(req, key, 0, MAX_COUNT)
    for key in ("batch", "eval_batch"):
        _integer(req, key, 1, MAX_BATCH)
    _integer(req, "seed", 0, 2**32 - 1)
    if req["threads"] is not None:
        _integer(req, "threads", 1, MAX_THREADS)
    if req["accelerator"] is not None:  # type, length and name checked here; the runtime's own list at load
        from edgekd.runtimes.catalog import canonical_accelerator

        req["accelerator"] = canonical_accelerator(req["accelerator"], "benchmark request accelerator")
    for key in ("warmup_s", "min_s", "max_s"):
        _number(req, key, 0.0, MAX_SECONDS)
    _number(req, "timeout_s", 0.001, MAX_SECONDS)
    _number(req, "cv_warn", 0.0, 1e6)
    for key in ("latency", "anchor"):
        if not isinstance(req[key], bool):
            raise ConfigError(f"benchmark request {key}={req[key]!r} must be true or false")
    if req["accuracy"] is not None and not isinstance(req["accuracy"], bool):
        raise ConfigError(f"benchmark request accuracy={req['accuracy']!r} must be true, false or null")
    if req["data"] is not None and not isinstance(req["data"], str):
        raise ConfigError(f"benchmark request data={req['data']!r} must be a path or null")
    if req["input"] not in ("random", "data"):
        raise ConfigError(f"benchmark request input={req['input']!r} must be 'random' or 'data'")
    if req["input"] == "data" and not req["data"]:
        raise ConfigError("benchmark request input='data' needs 'data' (path to an evaluation .npz)")
    if req["accuracy"] is None:
        req["accuracy"] = bool(req["data"])
    if req["accuracy"] and not req["data"]:
        raise ConfigError("benchmark request accuracy=true needs 'data' (path to an evaluation .npz)")
    return req


