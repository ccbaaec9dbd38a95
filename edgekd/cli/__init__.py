"""The `edgekd` command line: a thin shell over `edgekd.api`.

Each sub-command lives in its own module under `edgekd/cli/` and exposes a click command named
`command`. A module is listed in COMMAND_MODULES and imported only when the CLI starts, so the
device-side commands (`agent`) never pull torch in. Every EdgeKDError becomes one line on stderr and
exit code 2 — no traceback for a user mistake.
"""
from __future__ import annotations

import importlib
import sys

import click

from edgekd import __version__
from edgekd.errors import EdgeKDError

# module name -> command name; one line per command module
COMMAND_MODULES: dict[str, str] = {
    "teacher": "edgekd.cli.teacher_cmd",
    "distill": "edgekd.cli.distill_cmd",
    "models": "edgekd.cli.models_cmd",
    "data": "edgekd.cli.data_cmd",
    "compress": "edgekd.cli.compress_cmd",
    "bench": "edgekd.cli.bench_cmd",
    "profile": "edgekd.cli.profile_cmd",
    "agent": "edgekd.cli.agent_cmd",
    "export": "edgekd.cli.export_cmd",
    "targets": "edgekd.cli.targets_cmd",
    "select": "edgekd.cli.select_cmd",
    "deploy": "edgekd.cli.deploy_cmd",
}


class LazyGroup(click.Group):
    """Imports a sub-command's module only when that command runs (or --help lists it)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = COMMAND_MODULES.get(name)
        if module_name is None:
            return None
        return importlib.import_module(module_name).command

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except EdgeKDError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekd")
def main() -> None:
    """edgekd: distill a teacher into the smallest student that meets a latency budget on a
    real edge device, and prove it by measuring on the device.

    \b
    Typical flow:
      edgekd teacher -o runs/teacher               train a teacher on the built-in digits
      edgekd distill --teacher runs/teacher/student.pt --student cnn:width=8 -o runs/s1
      edgekd deploy --target cpu                    the whole loop, measured on this machine
    """


if __name__ == "__main__":  # pragma: no cover
    main()
