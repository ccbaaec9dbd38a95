"""`edgekd export`: a checkpoint or run directory -> one artifact per (format, precision), each
parity-checked; a table (or --json) with one row per artifact. Exit 1 when any row failed."""
from __future__ import annotations

import json
import sys
from typing import Any

import click


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _parity(row: dict[str, Any]) -> str:
    if row.get("max_abs") is None:
        return "-"
    text = f"max|d| {row['max_abs']:.2g}, top1 {100 * row['top1_agreement']:.1f}%"
    return text + (" (onnxruntime proxy)" if row.get("parity_proxy") else "")


def _accuracy(row: dict[str, Any]) -> str:
    if row.get("accuracy") is None:
        return "-"
    return f"{row['accuracy']:.2f}% ({-row['accuracy_drop_pts']:+.2f} pts)"


def print_table(report: dict[str, Any]) -> None:
    """One line per (format, precision): status, size, parity, accuracy vs torch, and the reason."""
    header = f"{'':2} {'format':9} {'prec':5} {'runtime':12} {'size':>10}  {'parity':34} {'accuracy':22}"
    device = report.get("device")
    made_for = (f" and device {device.get('name') or device.get('arch')} ({device.get('source')})" if device
                else "")
    click.echo(f"export {report['checkpoint']} for target {report['target']}{made_for} -> {report['out_dir']}")
    click.echo(header)
    for row in report["rows"]:
        mark = "✅" if row["status"] == "ok" else "❌"
        click.echo(f"{mark} {row['format']:9} {row['precision']:5} {row['runtime']:12} {_size(row['size_bytes']):>10}  "
                   f"{_parity(row):34} {_accuracy(row):22}")
        if row.get("error"):
            click.echo(f"   └ {row['error']}")
        settings = row.get("int8_settings")
        if isinstance(settings, dict) and settings.get("rule"):
            click.echo(f"   └ INT8 {settings.get('activation_type')} activations, {settings.get('weight_range')} "
                       f"weights: {settings['rule']}")
        kernels = row.get("int8_kernels")
        if isinstance(kernels, dict) and isinstance(kernels.get("convs"), int) and kernels["convs"] > 0:
            fused, convs = kernels.get("quantized"), kernels["convs"]
            click.echo(f"   └ {fused} of {convs} convs in integer kernels (this host's ONNX Runtime "
                       f"{kernels.get('onnxruntime')})" + ("" if fused == convs else
                                                           "; the rest run in fp32 between dequantize and quantize, "
                                                           "so this INT8 model may be slower than fp32"))
    int8 = [r for r in report["rows"] if r.get("int8_settings") and r["status"] == "ok"]
    if int8 and not device and any(r["runtime"] in ("onnxruntime", "openvino") for r in int8):
        click.echo("INT8 settings were chosen for no particular device: 7-bit weights, which no CPU saturates; "
                   "pass --device (or --profile) for the device that will run them to get full 8-bit weights "
                   "where its kernels allow")
    torch_acc = next((r["torch_accuracy"] for r in report["rows"] if r.get("torch_accuracy") is not None), None)
    if torch_acc is not None:
        click.echo(f"torch accuracy on the {report['data']['parity_samples']}-sample test split: {torch_acc:.2f}%")


@click.command("export")
@click.argument("checkpoint", metavar="RUN_OR_CHECKPOINT")
@click.option("--target", "-t", default="cpu", show_default=True, help="target name or alias (see `edgekd targets`)")
@click.option("--format", "-f", "formats", default=None, help="comma list: onnx,openvino,tflite,tensorrt "
              "(default: the target's formats)")
@click.option("--precision", "-p", "precisions", default=None, help="comma list: fp32,fp16,int8 (default: the "
              "target's precisions each format supports)")
@click.option("--output", "-o", required=True, help="output directory; artifacts go to OUT/<format>-<precision>/")
@click.option("--data", default=None, help="dataset for calibration and parity (default: the run's, else digits)")
@click.option("--image-size", type=int, default=None, help="resample images to this size (default: the run's)")
@click.option("--threads", type=int, default=None, help="runtime threads for the parity run (default: the target's)")
@click.option("--targets-dir", default=None, help="extra directory of target YAML files (also $EDGEKD_TARGETS)")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="allowed int8/fp16 accuracy drop, points")
@click.option("--fp32-tol", type=float, default=1e-4, show_default=True, help="allowed fp32 max |logit diff|")
@click.option("--calibration-samples", type=int, default=256, show_default=True, help="training samples for int8")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), default=None, help="tflite input layout "
              "(default: the target's)")
@click.option("--accuracy-control", is_flag=True, help="openvino int8: nncf.quantize_with_accuracy_control "
              "bounded by --max-drop")
@click.option("--dynamic-batch", is_flag=True, help="onnx/openvino: keep the batch dimension dynamic")
@click.option("--int8-mode", type=click.Choice(["dynamic", "static"]), default=None,
              help="onnx int8 of a text (transformer) model: dynamic (default; measured faster) or static QDQ")
@click.option("--family", default=None, help="the user family (module:function) the checkpoint was built with; "
              "edgekd never imports code a checkpoint names, so register it here")
@click.option("--family-grid", type=click.Path(dir_okay=False), default=None, help="that family's grid YAML")
@click.option("--device", default=None, help="the device the artifacts are for: an agent URL (tcp://HOST:PORT, "
              "serial path/URL), 'local' or 'inprocess' (this machine). Only its fingerprint is asked: its ISA picks "
              "the INT8 settings (ONNX Runtime / OpenVINO 7-bit weights on x86 without VNNI, full 8-bit with VNNI or on "
              "ARM). Default: no particular device (7-bit weights, right on any CPU)")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None, help="agent key file (or EDGEKD_AGENT_KEY)")
@click.option("--profile", default=None, help="instead of --device: a device profile (.yaml path, or a name in "
              "--profiles-dir) whose device the artifacts are for")
@click.option("--profiles-dir", default="profiles", show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
def command(checkpoint: str, target: str, formats: str | None, precisions: str | None, output: str, data: str | None,
            image_size: int | None, threads: int | None, targets_dir: str | None, max_drop: float, fp32_tol: float,
            calibration_samples: int, layout: str | None, accuracy_control: bool, dynamic_batch: bool,
            int8_mode: str | None, family: str | None, family_grid: str | None, device: str | None,
            key_file: str | None, profile: str | None, profiles_dir: str, as_json: bool) -> None:
    """Export RUN_OR_CHECKPOINT for a target: one artifact per (format, precision), each checked
    against torch (fp32: max |diff| <= --fp32-tol; int8: accuracy drop <= --max-drop points).

    \b
    Example:
      edgekd export runs/s1 --target cpu --format onnx,openvino,tflite --precision fp32,int8 -o out/s1
      edgekd export runs/s1 --format onnx --precision int8 --device tcp://pi.local:7000 --key-file agent.key -o out/pi
    """
    from edgekd import api
    from edgekd.cli.params import agent_key

    if family:
        api.register_family(family, family_grid)
    format_options: dict[str, dict[str, Any]] = {}
    if layout:
        format_options.setdefault("tflite", {})["layout"] = layout
    if accuracy_control:
        format_options.setdefault("openvino", {})["accuracy_control"] = True
    if int8_mode:
        format_options.setdefault("onnx", {})["int8_mode"] = int8_mode
    if dynamic_batch:
        for fmt in ("onnx", "openvino"):
            format_options.setdefault(fmt, {})["dynamic_batch"] = True
    log = None if as_json else (lambda line: click.echo(f"  {line}", err=True))
    report = api.export(checkpoint, output, target=target, formats=formats, precisions=precisions, data=data,
                        threads=threads, targets_dir=targets_dir, log=log, max_drop=max_drop, fp32_tol=fp32_tol,
                        calibration_samples=calibration_samples, image_size=image_size,
                        format_options=format_options, device=device,
                        key=agent_key(key_file) if device else None, profile=profile, profiles_dir=profiles_dir)
    if as_json:
        click.echo(json.dumps(report, sort_keys=True, default=str))
    else:
        print_table(report)
    if not report["ok"]:
        sys.exit(1)
