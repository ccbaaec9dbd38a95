"""`edgekd profile calibrate`: measure untrained students on a device and fit its latency model."""
from __future__ import annotations

import json

import click

from edgekd.cli.params import FloatRange, agent_key, family_options, space_option
from edgekd.latency.anchor import CALIBRATION_REQUEST, CALIBRATION_ROUNDS


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def print_models(echo, models: dict) -> None:
    """One line per fitted model: samples, cross-validated error, the biggest cost terms."""
    from edgekd.latency.model import TERMS, TRANSFER_KIND

    units = {name: unit for name, unit, _ in TERMS}
    for key, m in sorted(models.items()):
        cv = (m.get("cv") or {}).get("p50_ms", {})
        if m.get("kind") == TRANSFER_KIND:  # a prior adapted here: its corrections, not its coefficients
            err = (f"leave-one-out p50 error median {cv['median_abs_rel']:.1%}, within ±10 %: {cv['within_10pct']:.0%}"
                   if cv.get("median_abs_rel") is not None else "too few points to leave one out")
            echo(f"latency model {key}: {m.get('label')}; {err}")
            if m.get("scales"):
                echo("  scale of the prior's cost per group: "
                     + ", ".join(f"{g} x{v:.3g}" for g, v in m["scales"].items()))
            continue
        echo(f"latency model {key}: {m['n_samples']} measured students; {m.get('folds') or 5}-fold cross-validated "
             f"p50 error: median {cv.get('median_abs_rel', float('nan')):.1%}, p90 {cv.get('p90_abs_rel', float('nan')):.1%}, "
             f"within ±10 %: {cv.get('within_10pct', float('nan')):.0%}")
        coef = (m.get("coef") or {}).get("p50_ms", {})
        pad = m.get("pad_block")
        if pad:
            units["conv_pad_macs"] = f"per MMAC of channel padding to blocks of {pad[0]} in / {pad[1]} out"
        terms = [f"{v * 1000:.3g} µs {units.get(k, k)}" for k, v in coef.items() if v > 0]
        echo("  p50 = " + " + ".join(terms))


@click.command("calibrate")
@click.option("--device", default="local", show_default=True,
              help="tcp://HOST:PORT, a serial URL/path, 'local' (agent subprocess here) or 'inprocess'.")
@click.option("--target", default="cpu", show_default=True, help="Target class (`edgekd targets` lists them).")
@click.option("--profile", default=None, help="Profile name or .yaml path (default: named after the device).")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False))
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="How many untrained students to measure: default 36 spread over every student family "
                   "(at least 6); with --prior default 5, the most informative for adapting it.")
@click.option("--prior", default=None,
              help="Few-shot: adapt another device's profile (name in --profiles-dir or .yaml path) to this "
                   "device from --count measurements instead of fitting from scratch.")
@click.option("--include-search-space", is_flag=True,
              help="Also measure the search-space specs themselves (otherwise they stay out-of-sample).")
@click.option("--data", default="digits", show_default=True, help="Dataset whose input shape the students take.")
@click.option("--image-size", type=click.IntRange(min=4), default=None, help="Resample images to N×N.")
@click.option("--runtimes", default=None, help="Comma-separated runtimes (default: the target's first the device has).")
@click.option("--precisions", default=None, help="Comma-separated precisions (default: fp32).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads (default: the target's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling and weight seed.")
@click.option("--min-seconds", type=FloatRange(min=0), default=CALIBRATION_REQUEST["min_s"], show_default=True,
              help="Each model's timed loop lasts at least this long, per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=CALIBRATION_ROUNDS, show_default=True,
              help="Interleaved measuring rounds, each one runner process for all the models; each model keeps "
                   "its least-disturbed round (calm by the speed anchor, lowest p50), since a busy neighbour on a "
                   "shared machine only ever slows a round down, and slow stretches can last tens of seconds.")
@click.option("--min-count", type=click.IntRange(min=1), default=CALIBRATION_REQUEST["min_count"], show_default=True,
              help="Timed iterations per model and round at least.")
@click.option("--work-dir", default="runs/calibrate", show_default=True, type=click.Path(file_okay=False),
              help="Where the untrained exports are kept (reused on the next run).")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None, help="Agent key file (or EDGEKD_AGENT_KEY).")
@space_option
@family_options("its untrained students are sampled with the built-in families' (share of --count).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def calibrate(device: str, target: str, profile: str | None, profiles_dir: str, count: int, include_search_space: bool,
              data: str, image_size: int | None, runtimes: str | None, precisions: str | None, threads: int | None,
              seed: int, min_seconds: float, rounds: int, min_count: int, work_dir: str, key_file: str | None,
              space: str | None, family: str | None, family_grid: str | None, prior: str | None,
              as_json: bool) -> None:
    """Fit the device's latency model without training anything.

    Builds untrained students (random weights: latency does not depend on them) spread over the
    search space, exports them for the target's runtime, benchmarks each on the device (in
    --rounds interleaved rounds, keeping each model's least-disturbed one), records them
    in the profile with their architecture features, and fits a non-negative least-squares model per
    (runtime, precision, threads, batch). Prints its k-fold cross-validated error.

    With --prior, another device's model for the same configuration is the starting point: the
    students whose prior predictions best separate its cost groups (per call, per layer, per MAC of
    each layer kind, memory) are measured, 5 by default, and the prior is corrected on them
    (`edgekd.latency.fewshot`). Measured: 5 such students put 69-96 % of held-out students within
    ±10 % across three runtime changes (24 measured from scratch: 88-100 %)
    (scripts/bench_transfer.py, docs/MEASUREMENTS.md, issue 10).

    With --space (real, or a grid file), the untrained students are sampled around that search
    space instead of the micro one, each at its own input resolution (what `edgekd deploy --space`
    and `edgekd select --space` then predict).

    \b
    Examples:
      edgekd profile calibrate --device local --target cpu --profile my-laptop
      edgekd profile calibrate --device tcp://box2:7000 --prior my-laptop        # 5 measurements
      edgekd profile calibrate --profile my-laptop --space real --count 16 --runtimes onnxruntime,openvino \\
          --precisions fp32,int8
    """
    from edgekd import api
    from edgekd.errors import ConfigError

    if count is None:
        count = 5 if prior else 36
    elif count < 6 and not prior:
        raise ConfigError(f"--count {count}: a fit from scratch needs at least 6 students (or pass --prior "
                          "to adapt another device's model from fewer)")

    kwargs = dict(device=device, target=target, profile=profile, profiles_dir=profiles_dir, count=count,
                  include_search_space=include_search_space, data=data, image_size=image_size,
                  runtimes=_csv(runtimes), precisions=_csv(precisions), threads=threads, seed=seed,
                  work_dir=work_dir, key=agent_key(key_file), rounds=rounds, family=family, family_grid=family_grid,
                  space=space, prior=prior,
                  request={"min_s": min_seconds, "min_count": min_count, "warmup_s": min(0.3, min_seconds)})
    if as_json:
        click.echo(json.dumps(api.calibrate(**kwargs), indent=2, default=str))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    with Progress(TextColumn("[bold]calibrate[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("connecting", total=None)

        def on_progress(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done - 1, total=total)

        report = api.calibrate(**kwargs, on_progress=on_progress)
    failed = [r for r in report["rows"] if not r["ok"]]
    click.echo(f"measured {len(report['rows']) - len(failed)} untrained students on {report['device_url']} "
               f"(input {'x'.join(map(str, report['input_shape']))}"
               + (f"; around the {report['space']['students']} students of --space, at their own resolutions "
                  f"{', '.join(map(str, report['space']['resolutions']))} px" if report.get("space") else "")
               + f"); recorded in {report['profile']}")
    for r in failed:
        click.echo(f"  ❌ {r['spec']} {r['runtime']}/{r['precision']}: {r['error']}")
    print_models(click.echo, report["models"])
