"""`edgekd deploy --target T`: the smallest student that meets the budget, built and proven on the device."""
from __future__ import annotations

import json
import sys
import time

import click

from edgekd.cli.params import FloatRange, PassHelpCommand, agent_key, family_options, space_option
from edgekd.deploy.config import DeployConfig


NO_CANDIDATE_EXIT = 1  # the loop ran but nothing met budget and floor: an answer, not a usage error


@click.command("deploy", cls=PassHelpCommand, passes_option="--compress")
@click.option("--target", default="cpu", show_default=True, help="Target class (`edgekd targets` lists them; alias jetson).")
@click.option("--device", default=None,
              help="Agent URL (tcp://HOST:PORT, serial path/URL), 'local' or 'inprocess'. Default: 'local' when "
                   "this machine can stand in for the target, else none (result 'unverified').")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None, help="Agent key file (or EDGEKD_AGENT_KEY).")
@click.option("--budget-ms", type=FloatRange(min=0, min_open=True), default=None,
              help="Latency budget at --percentile (default: the teacher's latency on the device / 5).")
@click.option("--percentile", type=click.Choice(["50", "90", "99"]), default="90", show_default=True)
@click.option("--min-accuracy", type=FloatRange(0, 1), default=None,
              help="Accuracy floor, a fraction (default: the teacher's accuracy - 1.5 points).")
@click.option("--teacher", default=None, help="Teacher: edgekd checkpoint/run dir or any ONNX classifier "
                                              "(default: train the default teacher on --data, cached).")
@click.option("--data", default="digits", show_default=True,
              help="Dataset: digits, an .npz (x, y), an image folder; or text: reviews, a .csv/.jsonl (text, label).")
@click.option("--image-size", type=click.IntRange(min=4), default=None, help="Resample images to N×N.")
@click.option("--max-len", type=click.IntRange(min=3), default=None,
              help="Text: tokens per sample; latency is measured at this sequence length.")
@click.option("--tokenizer", default=None, type=click.Path(exists=True),
              help="Text: a local tokenizer dir/json (default: WordPiece trained on the training text).")
@click.option("-o", "--output", default=None, help="Bundle directory (default: bundles/<target>).")
@click.option("--format", "fmt", default=None,
              help="Export format (default: the target's preferred one). 'auto' or a comma list (onnx,openvino): "
                   "choose the runtime jointly with the student, among those the device runs (opt-in: its first run "
                   "calibrates every extra configuration).")
@click.option("--precision", default=None,
              help="fp32, fp16 or int8 (default: the target's first, fp32 on cpu; with --format auto every precision "
                   "of the target). 'auto' or a comma list (fp32,int8): choose the precision jointly too.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Runtime threads (default: the target's).")
@click.option("--max-rounds", type=click.IntRange(min=1), default=3, show_default=True, help="Device rounds at most.")
@click.option("--compress", "compress", multiple=True, metavar="NAME[:FIELD=VALUE,...]",
              help="Compress each distilled student with this pass (with KD fine-tuning) before export; repeat "
                   "for a chain, run in the order given, e.g. --compress prune:ratio=0.5. Passes listed below.")
@click.option("--prune", type=FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Shorthand for --compress prune:ratio=R: also prune this fraction of channels before export.")
@click.option("--epochs", type=click.IntRange(min=1), default=15, show_default=True, help="Distillation epochs per student.")
@click.option("--profile", default=None, help="Device profile name or path (default: named after the device).")
@click.option("--calibrate-count", type=click.IntRange(min=6), default=DeployConfig.calibrate_count, show_default=True,
              help="Untrained students a calibration of this device measures when it has no latency model to use "
                   "or adapt, or when an adapted one still mispredicts (at least 6; an extra configuration of a "
                   "joint choice measures at most "
                   f"{DeployConfig.joint_calibrate_count}). Fewer is quicker on a slow device; more predicts better.")
@click.option("--min-seconds", "min_s", type=FloatRange(min=0.05), default=DeployConfig.min_s, show_default=True,
              help="Minimum length of each timed loop of the teacher (3 rounds) and of each verified student (one; "
                   "3x longer again when its figure is within noise of the budget); each loop also runs at "
                   "least 200 times. A calibration loop is a quarter of it, 0.1-0.25 s. Shorter is quicker and noisier.")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False))
@click.option("--work-dir", default="runs/deploy", show_default=True, type=click.Path(file_okay=False),
              help="Cache of the teacher, distilled students and exports (a second run reuses them).")
@space_option
@family_options("its students join the built-in ones in the search (distilled, predicted, verified alike).",
                "Search the --family's students alone, not with the built-in ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (progress goes to stderr).")
def command(target: str, device: str | None, key_file: str | None, budget_ms: float | None, percentile: str,
            min_accuracy: float | None, teacher: str | None, data: str, image_size: int | None, max_len: int | None,
            tokenizer: str | None, output: str | None,
            fmt: str | None, precision: str | None, threads: int | None, max_rounds: int, compress: tuple[str, ...],
            prune: float | None, epochs: int,
            profile: str | None, calibrate_count: int, min_s: float, profiles_dir: str, work_dir: str, space: str | None, family: str | None,
            family_grid: str | None,
            family_only: bool, as_json: bool) -> None:
    """Pick the smallest student that meets the latency budget on the device, build it, prove it.

    predict -> pick -> distill -> (compress) -> export -> verify on the device (latency at the
    percentile, peak memory, accuracy on the deployed runtime) -> record in the device profile ->
    step smaller or larger, at most --max-rounds device rounds -> write the bundle.

    \b
    Examples:
      edgekd deploy --target cpu                         the whole loop on this machine
      edgekd deploy --target cpu --data reviews          the same for a text classifier (tinybert students)
      edgekd deploy --target cpu --format auto           choose student x runtime x precision together
      edgekd deploy --target jetson --budget-ms 5        no device here: ends "unverified", says what to run
      edgekd deploy --target rpi5 --device tcp://pi.local:7000 --key-file agent.key
      edgekd deploy --target cpu --family my_models:build --family-grid grid.yaml   your own family joins
      edgekd deploy --target cpu --data my.npz --space real --budget-ms 20   ImageNet-scale students x resolution
    """
    from edgekd import api
    from edgekd.compress.passes import parse_pass_spec

    start = time.perf_counter()

    def log(msg: str) -> None:
        click.echo(f"[{time.perf_counter() - start:6.1f}s] {msg}", err=as_json)

    report = api.deploy(target=target, device=device, key=agent_key(key_file), budget_ms=budget_ms,
                        percentile=int(percentile), min_accuracy=min_accuracy, teacher=teacher, data=data,
                        image_size=image_size, max_len=max_len, tokenizer=tokenizer, output=output, format=fmt, precision=precision, threads=threads,
                        max_rounds=max_rounds, compress=[parse_pass_spec(spec, "--compress") for spec in compress] or None,
                        prune=prune, epochs=epochs, profile=profile, calibrate_count=calibrate_count, min_s=min_s,
                        profiles_dir=profiles_dir, work_dir=work_dir,
                        space=space, family=family, family_grid=family_grid, family_only=family_only, log=log)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    if report["status"] == "failed":
        sys.exit(NO_CANDIDATE_EXIT)


def print_report(r: dict) -> None:
    """The outcome in a few lines; for 'unverified', exactly what to run on the device."""
    echo = click.echo
    echo("")
    if r["chosen"]:
        c = r["chosen"]
        echo(f"{r['status'].upper()}: {c['spec']} ({c['params']:,} params) as {r['format']}/{r['precision']} for {r['target']}")
        print_joint(r)
        if c["measured"]:
            m, pct = c["measured"], f"p{r['percentile']}_ms"
            echo(f"  measured on {m['device']}: p50 {m['p50_ms']:.4g} ms, p{r['percentile']} {m[pct]:.4g} ms "
                 f"(budget {r['budget_ms']:.4g} ms), test accuracy {m['accuracy']:.2%} (floor {r['min_accuracy']:.2%}; "
                 f"chosen on host val {c['host_val_accuracy']:.2%} >= {r['choice_floor']['min_accuracy']:.2%}), "
                 f"peak memory {(m['peak_rss_bytes'] or 0) / 2**20:.0f} MiB")
        else:
            p, pct = c["predicted"], f"p{r['percentile']}_ms"
            echo(f"  {p['label']}: p{r['percentile']} {p[pct]:.4g} ms (budget {r['budget_ms']:.4g} ms); "
                 f"chosen on host val accuracy {c['host_val_accuracy']:.2%} (host test {c['host_test_accuracy']:.2%}) "
                 "— NOT measured on a device")
        if "speedup_vs_teacher_p50" in r:
            echo(f"  vs teacher {r['teacher']['spec']}: {r['speedup_vs_teacher_p50']:.1f}x faster (p50), "
                 f"{r['acc_drop_vs_teacher_pts']:.2f} accuracy points below it (measured, same runtime)")
        echo(f"  device rounds: {r['device_rounds']}; bundle: {r['bundle']}; wall time {r['wall_s']:.0f} s")
    else:
        echo("FAILED: " + str(r["status_note"]).replace("\n", "\n  "))
        print_joint(r)
    if r["status"] == "unverified":
        echo(f"  {r['status_note']}")
        echo("  To verify, run:")
        for line in r.get("verify_commands", []):
            echo(f"    {line}")


def print_joint(r: dict) -> None:
    """A joint choice: each configuration's candidate in the last round and why the winner won."""
    if not r.get("joint") or not r.get("candidates"):
        return
    click.echo(f"  chosen among {len(r['joint']['configurations'])} configurations by: {r['joint']['rule']}")
    for v in r["candidates"][-1]:
        who = (f"{v['winner']} ({v['params']:,} params, {v['size_bytes'] / 1e6:.3g} MB, val {v['val_accuracy']:.2%}, "
               f"{v['latency_source']} {v['latency_ms']:.4g} ms)" if v["winner"] else "-")
        click.echo(f"    {v['runtime'] + '/' + v['precision']:20} {v['within_budget']:3d} within budget  {who}  "
                   f"{v['status']}: {v['why']}")
        for miss in v.get("missed") or []:
            click.echo(f"      tried first: {miss}")
    int8 = r["joint"].get("int8_settings")
    if int8:
        click.echo(f"  INT8 settings (manifest): {int8['rule']}"
                   + (f" (reduce_range {int8['reduce_range']})" if "reduce_range" in int8 else ""))
    if r["joint"].get("plot"):
        click.echo(f"  candidates per runtime x precision plotted: {r['joint']['plot']}")
