"""`edgekd profile ...`: look at per-device profiles (`show`; `calibrate` and `plot` come later)."""
from __future__ import annotations

import json

import click


@click.group("profile")
def command() -> None:
    """Per-device profiles: every measurement taken on one device (profiles/<device>.yaml)."""


@command.command("show")
@click.argument("name")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False),
              help="Where profiles live; NAME may also be a path to a .yaml file.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole profile as JSON.")
def show(name: str, profiles_dir: str, as_json: bool) -> None:
    """Print the measurements of profile NAME as a table."""
    from edgekd.device.profiles import Profile, profile_path

    profile = Profile.load(profile_path(name, profiles_dir))
    if as_json:
        click.echo(json.dumps(profile.to_dict(), indent=2, default=str))
        return
    from rich.console import Console

    from edgekd.bench.table import device_summary, profile_table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: do not squeeze the table into 80 columns
    console.print(f"device: {device_summary(profile.device)}")
    if not profile.measurements:
        console.print("no measurements yet")
        return
    console.print(profile_table(profile))


# `calibrate` and `plot` live in their own modules (latency model / selection side)
from edgekd.cli.profile_calibrate import calibrate as _calibrate  # noqa: E402
from edgekd.cli.profile_plot import plot as _plot  # noqa: E402

command.add_command(_calibrate)
command.add_command(_plot)
