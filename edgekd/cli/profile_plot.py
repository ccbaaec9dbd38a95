"""`edgekd profile plot NAME -o pareto.png`: the latency/accuracy trade-off measured on one device."""
from __future__ import annotations

import click

from edgekd.cli.params import FloatRange


@click.command("plot")
@click.argument("name")
@click.option("-o", "--output", default="pareto.png", show_default=True, type=click.Path(dir_okay=False),
              help="Image to write (.png, .svg or .pdf).")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False))
@click.option("--budget-ms", type=FloatRange(min=0, min_open=True), default=None,
              help="Budget line (default: the last `edgekd deploy` recorded in this profile).")
@click.option("--min-accuracy", type=FloatRange(0, 1), default=None, help="Accuracy floor line (a fraction).")
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default=None,
              help="Latency percentile on the x axis (default: the last deploy's, else 50).")
@click.option("--threads", type=click.IntRange(min=0), default=None,
              help="Only measurements at this thread setting (0 = runtime default; default: the last deploy's).")
def plot(name: str, output: str, profiles_dir: str, budget_ms: float | None, min_accuracy: float | None,
         percentile: str | None, threads: int | None) -> None:
    """Plot latency vs accuracy per format/precision for profile NAME.

    The budget is a vertical line, the chosen student (of the last deploy on this device) is ringed,
    the teacher is a star. Only measured points are drawn.
    """
    from edgekd.latency.section import latency_section
    from edgekd.latency.plot import plot_profile
    from edgekd.device.profiles import Profile, profile_path

    profile = Profile.load(profile_path(name, profiles_dir))
    last = (latency_section(profile).get("deployments") or [{}])[-1]
    pct = int(percentile or last.get("percentile") or 50)
    out = plot_profile(profile, output, percentile=pct,
                       budget_ms=budget_ms if budget_ms is not None else last.get("budget_ms"),
                       min_accuracy=min_accuracy if min_accuracy is not None else last.get("min_accuracy"),
                       chosen_sha256=last.get("model_sha256"), chosen_format=last.get("format"),
                       chosen_precision=last.get("precision"),
                       threads=threads if threads is not None else last.get("threads"))
    # no dataset filter by default: `edgekd bench --data digits` and `deploy` fingerprint the same test
    # split differently (image_size 8 vs unset), and dropping those points would hide real measurements
    click.echo(f"wrote {out}")
