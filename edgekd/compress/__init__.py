"""Compression passes run after distillation, each followed by KD fine-tuning from the teacher.

`PASSES` maps a pass name to a `CompressionPass`: ``apply(model, example, **kwargs) -> (records,
details)`` edits the model in place and returns the surgery records that rebuild its new structure
on load (see `edgekd.models.surgery`) plus a JSON-able report; ``check(kwargs)`` validates the
options before any work starts. Registered passes:

- ``prune``  — structured channel pruning (`prune.prune_pass`; ``ratio``);
- ``lowrank`` — truncated-SVD factorization of Linear/Conv2d (`lowrank.lowrank_pass`; ``energy`` or
  ``ratio``, ``min_reduction``, ``exclude``).

INT8 quantization is not a pass here: each target's own toolchain does it at export, where it is
calibrated and parity-checked in the runtime that will run it.

A chain is configured as ``[{"key": "prune", "kwargs": {"ratio": 0.5}}, {"key": "lowrank",
"kwargs": {"energy": 0.9}}]`` and run by `edgekd.compress.pipeline.run_compression`.
"""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from edgekd.compress.lowrank import check_options, lowrank_pass
from edgekd.compress.prune import check_ratio, prune_pass
from edgekd.errors import ConfigError
from edgekd.registry import Registry


@dataclass(frozen=True)
class CompressionPass:
    """One registered pass. `apply(model, example, **kwargs) -> (surgery records, details)`;
    `validate(kwargs)` raises ConfigError for an unknown option or a bad value."""

    name: str
    apply: Callable[..., tuple[list[dict[str, Any]], dict[str, Any]]]
    check_values: Callable[[dict[str, Any]], None]

    @property
    def options(self) -> dict[str, Any]:
        """Option name -> default, read from `apply`'s keyword-only parameters."""
        params = inspect.signature(self.apply).parameters.values()
        return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.apply) or ""

    def validate(self, kwargs: dict[str, Any]) -> None:
        if not isinstance(kwargs, dict):
            raise ConfigError(f"{self.name}: kwargs must be a mapping like {{ratio: 0.5}}, got {kwargs!r}")
        valid = self.options
        for key in kwargs:
            if key not in valid:
                close = difflib.get_close_matches(str(key), list(valid), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"compression pass {self.name!r}: unknown option {key!r}.{hint} Valid options: {', '.join(valid)}"
                )
        self.check_values({**valid, **kwargs})


def _check_prune(kw: dict[str, Any]) -> None:
    check_ratio(kw["ratio"])


def _check_lowrank(kw: dict[str, Any]) -> None:
    check_options(kw["energy"], kw["ratio"], kw["min_reduction"])
    exclude = kw["exclude"]
    if exclude is not None and not (isinstance(exclude, list) and all(isinstance(p, str) for p in exclude)):
        raise ConfigError(f"lowrank: exclude must be a list of module paths like ['classifier'], got {exclude!r}")


PASSES: Registry[CompressionPass] = Registry("compression pass")
PASSES.add("prune", CompressionPass("prune", prune_pass, _check_prune))
PASSES.add("lowrank", CompressionPass("lowrank", lowrank_pass, _check_lowrank))

__all__ = ["PASSES", "CompressionPass", "lowrank_pass", "prune_pass"]
