"""Click parameter types shared by the commands.

`FloatRange` is click's, except that NaN and infinities are refused: click compares the value with
the bounds, and every comparison with NaN is false, so `--budget-ms nan` would pass any range.
"""
from __future__ import annotations

import math
from typing import Any

import click


class FloatRange(click.FloatRange):
    """click.FloatRange that accepts only finite numbers."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if isinstance(rv, float) and not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


def agent_key(key_file: str | None) -> bytes | None:
    """The agent key for `--key-file`, else $EDGEKD_AGENT_KEY, else None — read by the one reader
    every side uses (`edgekd.agent.auth.load_key`: an unreadable file or a key under 16 bytes is a
    one-line ConfigError before any work)."""
    from edgekd.agent import auth

    return auth.load_key(key_file=key_file)
