"""`edgekd bench`: the per-format table, measured on the device, recorded in its profile."""
from __future__ import annotations

import json

import click

from edgekd.cli.params import FloatRange, agent_key


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command("bench")
@click.argument("sources", nargs=-1, required=True, metavar="RUN_OR_ARTIFACTS...")
@click.option("--device", default="local", show_default=True,
              help="tcp://HOST:PORT, serial:///dev/ttyACM0?baud=921600 (or a device path), 'local' "
                   "(an agent subprocess here) or 'inprocess' (no agent).")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None,
              help="Shared key for the agent's challenge (or set EDGEKD_AGENT_KEY).")
@click.option("--formats", default="all", show_default=True, help="Comma-separated formats, or 'all'.")
@click.option("--precisions", default="fp32,int8", show_default=True, help="Comma-separated precisions.")
@click.option("--data", default=None,
              help="Accuracy data: what `edgekd deploy --data` takes (digits, a folder, an .npz of raw images "
                   "x, y), whose test split is used, prepared as the artifact's manifest says (scale, resize, "
                   "normalise); or an evaluation .npz edgekd wrote, used whole.")
@click.option("--profile", default=None, help="Profile name or .yaml path (default: named after the device).")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False))
@click.option("--no-record", is_flag=True, help="Do not write the results into the profile.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads (default: runtime's own).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--min-count", type=click.IntRange(min=1), default=100, show_default=True,
              help="Timed iterations at least.")
@click.option("--min-seconds", type=FloatRange(min=0), default=3.0, show_default=True,
              help="Timed loop lasts at least this long.")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Warm-up iterations at least.")
@click.option("--warmup-seconds", type=FloatRange(min=0), default=1.0, show_default=True)
@click.option("--export-dir", default=None, type=click.Path(file_okay=False),
              help="Where missing exports go (default: <run>/artifacts).")
@click.option("--target", default="cpu", show_default=True,
              help="Target class that missing exports are made for (`edgekd targets` lists them).")
@click.option("--json", "as_json", is_flag=True, help="Print the result rows as JSON.")
def command(sources: tuple[str, ...], device: str, key_file: str | None, formats: str, precisions: str,
            data: str | None, profile: str | None, profiles_dir: str, no_record: bool, threads: int | None,
            batch: int, min_count: int, min_seconds: float, warmup: int, warmup_seconds: float,
            export_dir: str | None, target: str, as_json: bool) -> None:
    """Export what is missing and benchmark every format × precision the device can run.

    One row per format × precision: status ✅/❌ (with the reason), size, accuracy on the deployed
    runtime, p50/p90 latency and peak memory. A failing format never hides the others. Results go
    into profiles/<device>.yaml.

    \b
    Examples:
      edgekd bench runs/s1 --device local --data digits
      edgekd bench runs/s1/artifacts/onnx-fp32 --device tcp://192.168.1.20:7000 --threads 4
    """
    from edgekd.bench.session import BenchConfig, run_bench

    key = agent_key(key_file)
    cfg = BenchConfig(sources=list(sources), device=device, key=key, formats=_csv(formats),
                      precisions=_csv(precisions) or ["fp32"], data=data, profile=profile,
                      profiles_dir=profiles_dir, record=not no_record, threads=threads, batch=batch,
                      warmup_count=warmup, warmup_s=warmup_seconds, min_count=min_count, min_s=min_seconds,
                      export_dir=export_dir, target=target)
    if as_json:
        report = run_bench(cfg)
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgekd.bench.table import bench_table, device_summary

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped output: do not squeeze the table into 80 columns
    with Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("connecting", total=None)

        def on_progress(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total)

        report = run_bench(cfg, on_progress)
    console.print(f"device: {device_summary(report.device)} ({report.device_url})")
    console.print(bench_table(report.rows))
    if report.profile_path:
        console.print(f"recorded in {report.profile_path}")
    for d in report.drift:  # edgekd.latency.drift.bench_drift: what the profile's latency model predicted for it
        flag = "DRIFT beyond tolerance" if d["drift_detected"] else "within tolerance"
        console.print(f"drift check {d['spec']} ({d['key']}, {d['model']} model): predicted p50 "
                      f"{d['predicted_p50_ms']:.4g} ms, measured {d['measured_p50_ms']:.4g} ms (x{d['ratio']:.2f}) -> {flag}",
                      markup=False)
