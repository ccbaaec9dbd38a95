"""`edgekd select`: the smallest student that meets a latency budget on a profiled device."""
from __future__ import annotations

import json
import sys

import click

from edgekd.cli.params import FloatRange, family_options, space_option

NO_CANDIDATE_EXIT = 1  # "nothing fits" is an answer, not a usage error (that is exit 2)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def print_selection(sel: dict, echo=click.echo, limit: int | None = None) -> None:
    """The candidate table (rule order) with each one's reasons, then the verdict."""
    from rich.console import Console
    from rich.table import Table

    for key, m in sel["latency_models"].items():
        echo(f"latency model {key}: {m['label']}")
    for key in sel.get("stale_models") or []:
        echo(f"latency model {key}: fitted on INT8 artifacts of another quantization recipe than this device's "
             "exports now; not used (measure again: edgekd profile calibrate)")
    if sel.get("joint"):
        echo(f"joint choice among {len(sel['latency_models'])} runtime x precision configurations; rule: {sel['rule']}")
    table = Table(show_lines=False)
    for col in ("", "student", "format", "params", *(["MB"] if sel.get("joint") else []), f"p{sel['percentile']} ms",
                "source", "accuracy", "why"):
        table.add_column(col, overflow="fold")
    rows = sel["candidates"] if limit is None else sel["candidates"][:limit]
    for c in rows:
        mark = {"chosen": "✅", "fits": "·", "rejected": "❌"}[c["status"]]
        lat = "—" if c["latency_ms"] is None else f"{c['latency_ms']:.4g}"
        acc = "—" if c["accuracy"] is None else f"{100 * c['accuracy']:.2f}%"
        size = [f"{c['size_bytes'] / 1e6:.4g}"] if sel.get("joint") else []
        table.add_row(mark, c["spec"], f"{c['format']}/{c['precision']}", f"{c['params']:,}", *size, lat,
                      c["latency_label"], acc, "; ".join(c["reasons"]))
    console = Console(width=200) if not sys.stdout.isatty() else Console()
    console.print(table)
    if sel["chosen"]:
        c = sel["chosen"]
        echo(f"chosen: {c['spec']} ({c['format']}/{c['precision']}, {c['params']:,} params, "
             f"{c['latency_label']} p{sel['percentile']} {c['latency_ms']:.4g} ms <= {sel['budget_ms']:g} ms)")
    else:
        miss = sel["closest_miss"]
        echo(f"no student meets budget {sel['budget_ms']:g} ms at p{sel['percentile']}"
             + (f" with accuracy >= {100 * sel['min_accuracy']:.2f}%" if sel["min_accuracy"] is not None else ""))
        if miss:
            echo(f"closest miss: {miss['spec']} ({miss['format']}/{miss['precision']}): {'; '.join(miss['reasons'])}")


@click.command("select")
@click.option("--profile", "profile", required=True, help="Device profile name or .yaml path.")
@click.option("--budget-ms", type=FloatRange(min=0, min_open=True), required=True,
              help="Latency budget in milliseconds at --percentile.")
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default="90", show_default=True)
@click.option("--min-accuracy", type=FloatRange(0, 1), default=None,
              help="Accuracy floor as a fraction (0.97); only measured accuracy counts.")
@click.option("--format", "formats", default=None,
              help="Comma-separated formats (onnx, openvino, tflite, tensorrt), or 'auto': choose the runtime jointly "
                   "with the student among every one the profile has (the --target's, when given).")
@click.option("--precision", "precisions", default=None,
              help="Comma-separated precisions (fp32, fp16, int8), or 'auto'. 'auto' on either, or more than one "
                   "precision, ranks by the weights' size on the device (params x bytes per weight), not params.")
@click.option("--threads", type=click.IntRange(min=0), default=None, help="Only this thread setting (0 = default).")
@click.option("--target", default=None, help="Target whose datasheet prior is used when nothing is fitted.")
@click.option("--task", type=click.Choice(["image", "text"]), default=None,
              help="Choose among image or text students (default: image, or text when the profile holds only text).")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False))
@space_option
@family_options("its students are ranked with the built-in ones (predicted by the latency model).")
@click.option("--json", "as_json", is_flag=True, help="Print the selection as JSON.")
def command(profile: str, budget_ms: float, percentile: str, min_accuracy: float | None, formats: str | None,
            precisions: str | None, threads: int | None, target: str | None, task: str | None, profiles_dir: str,
            space: str | None, family: str | None, family_grid: str | None, as_json: bool) -> None:
    """Choose the smallest student (fewest params; tie -> higher accuracy) that meets the budget.

    Latency is the measured one where the profile has it, otherwise predicted by the device's latency
    model (`edgekd profile calibrate`) and flagged. Every candidate is listed with why it was taken
    or rejected. Exit code 1 when nothing fits (the closest miss is named), 2 for bad input.

    \b
    Example:
      edgekd select --profile amd-epyc-x86_64-2c --budget-ms 0.01 --percentile 90
      edgekd select --profile mybox --budget-ms 5 --space real     ImageNet-scale students, resolution too
      edgekd select --profile mybox --budget-ms 5 --space real --format auto --precision auto
                                          ... and the runtime x precision with them
    """
    from edgekd import api

    sel = api.select(profile, budget_ms=budget_ms, percentile=int(percentile), min_accuracy=min_accuracy,
                     formats=_csv(formats), precisions=_csv(precisions), threads=threads, profiles_dir=profiles_dir,
                     target=target, task=task, family=family, family_grid=family_grid, space=space)
    if as_json:
        click.echo(json.dumps(sel, indent=2, default=str))
    else:
        print_selection(sel)
    if sel["chosen"] is None:
        sys.exit(NO_CANDIDATE_EXIT)
