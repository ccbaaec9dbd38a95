"""Click parameter types and command classes shared by the commands.

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


class PassHelpCommand(click.Command):
    """A command whose --help ends with the registered compression passes and their fields, read
    from `edgekd.compress.PASSES` when the help is shown (so listing commands imports no torch)."""

    def __init__(self, *args: Any, passes_option: str = "--pass", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passes_option = passes_option

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        from edgekd.compress.passes import PASSES

        with formatter.section(f"Compression passes ({self.passes_option} NAME:FIELD=VALUE,FIELD=VALUE)"):
            for name, cls in PASSES.items():
                formatter.write_text(f"{name}: {cls.summary()}")
                with formatter.indentation():
                    for f in cls.fields:
                        formatter.write_text(f.describe())


def agent_key(key_file: str | None) -> bytes | None:
    """The agent key for `--key-file`, else $EDGEKD_AGENT_KEY, else None — read by the one reader
    every side uses (`edgekd.agent.auth.load_key`: an unreadable file or a key under 16 bytes is a
    one-line ConfigError before any work)."""
    from edgekd.agent import auth

    return auth.load_key(key_file=key_file)


def space_option(fn: Any) -> Any:
    """`--space micro|real|GRID.yaml`: the built-in students a command searches (`edgekd.deploy.spaces`)."""
    from edgekd.deploy.spaces import space_help

    return click.option("--space", default=None, metavar="micro|real|GRID.yaml", help=space_help())(fn)


def family_options(joins: str, only: str | None = None) -> Any:
    """`--family MODULE:FUNCTION` and `--family-grid YAML`: a user's model family (see `edgekd models
    --help`) that `joins` the command's search space; with `only`, also `--family-only` (its help).
    Decorates a command with them."""
    def decorate(fn: Any) -> Any:
        if only:
            fn = click.option("--family-only", is_flag=True, help=only)(fn)
        fn = click.option("--family-grid", type=click.Path(dir_okay=False), default=None,
                          help="YAML grid of the --family builder's arguments (key: [values], optional name:); "
                               "every combination is one student.")(fn)
        return click.option("--family", default=None, metavar="MODULE:FUNCTION",
                            help=f"Your own model family: a builder (e.g. my_pkg.my_models:build, importable from "
                                 f"here or PYTHONPATH) returning an nn.Module; {joins}")(fn)
    return decorate
