"""`edgekd compress`: run a chain of registered compression passes on a distilled student, fine-tuning
after each pass with KD. The passes, their fields and `--help`'s list of them come from
`edgekd.compress.PASSES`; this module only maps the flags onto the chain config."""
from __future__ import annotations

import json
from typing import Any

import click

from edgekd.cli.params import FloatRange, PassHelpCommand

from edgekd.errors import ConfigError


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def format_table(summary: dict[str, Any]) -> list[str]:
    """One row per pass and a total row: params, MACs, file size and test accuracy before -> after
    (the accuracy right after the pass, before fine-tuning, in brackets)."""
    head = f"{'stage':<14} {'params':>19} {'MACs':>23} {'file':>21} {'test acc':>26}"
    lines = [head, "-" * len(head)]

    def row(name: str, before: dict, after: dict, no_ft: float | None) -> str:
        mid = f" [{100 * no_ft:5.1f}]" if no_ft is not None else " " * 8
        return (f"{name:<14} {before['params']:>8,} -> {after['params']:>7,} "
                f"{before['macs']:>10,} -> {after['macs']:>9,} "
                f"{_size(before['file_bytes']):>9} -> {_size(after['file_bytes']):>8} "
                f"{100 * before['test_acc']:6.2f}%{mid} -> {100 * after['test_acc']:6.2f}%")

    for s in summary["stages"]:
        lines.append(row(f"{s['stage']}. {s['pass']}", s["before"], s["after"], s["test_acc_before_finetune"]))
    lines.append(row("total", summary["before"], summary["after"], None))
    return lines


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, sort_keys=True, default=str))
        return
    for line in format_table(summary):
        click.echo(line)
    click.echo(f"accuracy drop {summary['acc_drop_pts']:+.2f} pts, params x{summary['params_ratio']:.3f}, "
               f"MACs x{summary['macs_ratio']:.3f}, file x{summary['size_ratio']:.3f}")
    click.echo(f"saved        {summary['student_path']}")


# the flags kept from before the pass registry: each maps to one chain entry, in this order
SHORTHANDS = (("prune", "prune", "ratio"), ("lowrank", "lowrank", "ratio"), ("lowrank_energy", "lowrank", "energy"))


@click.command("compress", cls=PassHelpCommand, passes_option="--pass")
@click.argument("run", metavar="RUN")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML with `passes: [{pass: prune, ratio: 0.5}, ...]` and any option below; "
                   "the options override it.")
@click.option("--pass", "pass_specs", multiple=True, metavar="NAME[:FIELD=VALUE,...]",
              help="One compression pass (repeat for a chain, run in the order given), e.g. "
                   "--pass prune:ratio=0.5 --pass lowrank:energy=0.9. The passes and their fields are listed below.")
@click.option("--prune", type=FloatRange(0, 1, max_open=True), default=None,
              help="Shorthand for --pass prune:ratio=R: share of channels removed per layer group (0.5 = half); "
                   "kept counts are multiples of 8.")
@click.option("--lowrank", type=FloatRange(0, 1, min_open=True), default=None,
              help="Shorthand for --pass lowrank:ratio=R: keep this share of each layer's rank (0.5 = half).")
@click.option("--lowrank-energy", type=FloatRange(0, 1, min_open=True), default=None,
              help="Shorthand for --pass lowrank:energy=E: keep this share of the squared singular values (e.g. 0.9).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=None,
              help="KD fine-tuning epochs after each pass (0: none). [default: 2]")
@click.option("--teacher", default=None, help="Teacher for fine-tuning (.pt or .onnx). [default: the run's teacher]")
@click.option("--data", default=None, help="Dataset. [default: the run's dataset, else digits]")
@click.option("--image-size", type=click.IntRange(min=4), default=None, help="Resample images to N×N. [default: the run's]")
@click.option("--lr", type=FloatRange(min=0, min_open=True), default=None, help="Fine-tuning learning rate. [default: the run's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Fine-tuning batch size. [default: the run's]")
@click.option("--cache-dir", default=None, help="Soft-target cache folder. [default: the run's, $EDGEKD_CACHE or ./.edgekd-cache]")
@click.option("-o", "--output", default=None, help="Run directory to create (student.pt, summary.json, stages/...).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
def command(run: str, config_path: str | None, pass_specs: tuple[str, ...], prune: float | None, lowrank: float | None,
            lowrank_energy: float | None, finetune_epochs: int | None, teacher: str | None, data: str | None,
            image_size: int | None, lr: float | None, batch_size: int | None, cache_dir: str | None,
            output: str | None, as_json: bool) -> None:
    """Compress RUN (a distill run directory or a .pt checkpoint): each pass, then KD fine-tuning
    from the teacher (its soft targets come from the cache). Prints params, MACs, file size and
    test accuracy before/after each pass; the output directory has the distill layout.

    \b
    Passes run in the order of --pass (or of `passes:` in --config); the shorthands --prune,
    --lowrank, --lowrank-energy run in that order. Passes on the command line replace the config's.
    Examples:
      edgekd compress runs/s1 --prune 0.5 --finetune-epochs 3 -o runs/s1-p50
      edgekd compress runs/s1 --pass lowrank:energy=0.8 --pass prune:ratio=0.25 -o runs/s1-lp
      edgekd compress runs/s1 --prune 0.5 --lowrank 0.5 --finetune-epochs 2 -o runs/s1-small --json
    """
    from edgekd import api
    from edgekd.compress.passes import parse_chain, parse_pass_spec
    from edgekd.config import load_config

    raw: dict[str, Any] = dict(load_config(config_path)) if config_path else {}
    given = {"prune": prune, "lowrank": lowrank, "lowrank_energy": lowrank_energy}
    if lowrank is not None and lowrank_energy is not None:
        raise ConfigError("give --lowrank (rank share) or --lowrank-energy (energy share), not both")
    shorthand = [{"pass": name, field: given[flag]} for flag, name, field in SHORTHANDS if given[flag] is not None]
    if pass_specs and shorthand:
        raise ConfigError("give the chain with --pass only, or with --prune/--lowrank/--lowrank-energy only "
                          "(mixed, their order would be a guess)")
    passes = [parse_pass_spec(spec, "--pass") for spec in pass_specs] or shorthand
    if passes:
        raw["passes"] = passes
    if not raw.get("passes"):
        raise ConfigError("no compression pass: give --pass NAME (e.g. --pass prune:ratio=0.5), --prune RATIO "
                          "and/or --lowrank RATIO, or passes in --config")
    parse_chain(raw["passes"], "--pass" if passes else "passes")  # a bad pass fails before any loading
    raw["source"] = run
    for key, value in (("finetune_epochs", finetune_epochs), ("teacher", teacher), ("lr", lr),
                       ("batch_size", batch_size), ("cache_dir", cache_dir), ("output", output)):
        if value is not None:
            raw[key] = value
    data_over = {k: v for k, v in (("source", data), ("image_size", image_size)) if v is not None}
    if data_over:
        raw["data"] = {**(raw.get("data") or {}), **data_over}
    if not raw.get("output"):
        raise ConfigError("no output directory: pass -o RUN2 (or set `output:` in the config file)")
    log = None if as_json else (lambda line: click.echo(line))
    summary = api.compress(raw, progress=False if as_json else None, log=log)
    print_summary(summary, as_json)
