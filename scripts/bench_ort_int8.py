"""ONNX Runtime INT8 on this machine: S8 against U8 activations (issue 14), fused convs, speed, accuracy.

    .venv/bin/python scripts/bench_ort_int8.py [--specs SPEC ...] [--rounds 3] [--min-s 0.3]
        [--checkpoint RUN/student.pt ...] [--work runs/bench-ort-int8] [--quick]

Why: on the Xeon VM (AVX-512 VNNI) ONNX Runtime's INT8 of a ResNet-10 ran slower than its fp32. ORT's
profiler showed 7 of its 12 convs still fp32 between DequantizeLinear and QuantizeLinear. ORT's x86
QLinearConv takes U8 activations, and its S8->U8 rewrite leaves a tensor that two nodes read (a
residual's input) in S8, so the convs reading it are never fused (`edgekd.runtimes.int8_settings`).

Speed part: untrained students (seeded weights, random-normal calibration; latency does not depend on
the weights' values) of bench_scale's 16 specs at 96-224 px, exported by edgekd
(`edgekd.latency.calibrate.export_untrained`) in fp32 and in INT8 twice: with the x86 rule (U8
activations, this machine's weight range) and with the rule edgekd gives a non-x86 device (S8
activations, full 8-bit weights: ORT's own default). For each INT8 artifact the manifest says how
many convs ORT fuses (`fused_convs`: QLinearConv in the session's optimized graph, against every conv
left). All three are measured through the device path (`edgekd.bench.measure.run_isolated`: a fresh
child process, one thread) in interleaved rounds (A B C ... C B A), each one's median p50 over rounds
kept. Ratios are INT8 p50 / fp32 p50 of the same student measured side by side.

Accuracy part (--checkpoint, repeatable, a trained student): `edgekd export`'s own path
(`edgekd.runtimes.export.export_checkpoint`: parity gate on the labelled test split of the data the
run trained on) to ONNX INT8 under each rule; prints test accuracy, drop against torch and the gate's
verdict.

Prints a table, then ONE JSON line: issue, ort_version, rows (spec, fp32/u8/s8 p50 ms, ratios, fused
convs), median_ratio_u8, median_ratio_s8, fused_share_u8, fused_share_s8, accuracy (per checkpoint and
rule), load. Timings: run it alone (other load on a 2-vCPU VM moves single readings by 30 % and more).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# what edgekd gives a non-x86 device (S8 activations, full 8-bit weights): ONNX Runtime's default types
NON_X86_IDENTITY = {"arch": "aarch64", "isa": ["asimd", "asimddp"]}
# an x86 device with VNNI, for a run on a machine that is not x86 (the x86 rule needs an x86 identity)
X86_VNNI_IDENTITY = {"arch": "x86_64", "isa": ["avx2", "avx512f", "avx512bw", "avx512_vnni"]}
QUICK_SPECS = ["resnet_basic:depth=10,resolution=96,width=32", "mobilenetv2:resolution=96,width=0.35"]


def _log(msg: str) -> None:
    print(f"[bench_ort_int8] {msg}", file=sys.stderr, flush=True)


def rules(host: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """label -> the device identity whose ONNX Runtime INT8 rule it exports with."""
    from edgekd.runtimes.int8_settings import X86_ARCHES

    x86 = host if str(host.get("arch") or "").lower() in X86_ARCHES else X86_VNNI_IDENTITY
    return {"u8": x86, "s8": NON_X86_IDENTITY}


def speed(specs: list[str], host: dict[str, Any], work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from edgekd.bench.measure import run_isolated
    from edgekd.errors import EdgeKDError
    from edgekd.latency.calibrate import export_untrained
    from edgekd.models import spec_input_shape
    from edgekd.runtimes import read_manifest
    from edgekd.runtimes.onnxruntime import fused_convs

    arts: dict[tuple[str, str], Path] = {}
    rows: dict[str, dict[str, Any]] = {}
    for spec in specs:
        shape = spec_input_shape(spec, (3, 224, 224))
        row: dict[str, Any] = {"spec": spec}
        try:
            arts[(spec, "fp32")] = export_untrained(spec, shape, 1000, "onnxruntime", "fp32", work / "fp32",
                                                    device_identity=host)
            for label, identity in rules(host).items():
                art = export_untrained(spec, shape, 1000, "onnxruntime", "int8", work / label,
                                       device_identity=identity)
                arts[(spec, label)] = art
                settings = read_manifest(art)["options"]["int8_settings"]
                fused = read_manifest(art)["options"].get("fused_convs") or fused_convs(art / "model.onnx")
                row[f"{label}_activation_type"] = settings["activation_type"]
                row[f"{label}_weight_range"] = settings["weight_range"]
                row[f"{label}_fused"], row["convs"] = fused.get("quantized"), fused.get("convs")
        except EdgeKDError as err:
            row["error"] = str(err)
            _log(f"export failed {spec}: {err}")
        rows[spec] = row
        _log(f"exported {spec}: fused u8 {row.get('u8_fused')}/{row.get('convs')}, s8 {row.get('s8_fused')}")
    request = {"threads": 1, "batch": 1, "warmup_count": 5, "warmup_s": 0.3, "min_count": 30,
               "min_s": args.min_s, "max_s": max(10.0, 4 * args.min_s), "input": "random", "latency": True,
               "accuracy": False, "timeout_s": 600.0}
    jobs = sorted(arts)
    p50s: dict[tuple[str, str], list[float]] = {}
    for r in range(max(1, args.rounds)):
        for job in (jobs if r % 2 == 0 else list(reversed(jobs))):
            try:
                lat = run_isolated(arts[job], request)["latency"] or {}
            except EdgeKDError as err:
                rows[job[0]]["error"] = str(err)
                continue
            if lat.get("p50_ms"):
                p50s.setdefault(job, []).append(float(lat["p50_ms"]))
        _log(f"round {r + 1}/{args.rounds} done")
    for spec, row in rows.items():
        for kind in ("fp32", "u8", "s8"):
            got = p50s.get((spec, kind))
            row[f"{kind}_p50_ms"] = round(statistics.median(got), 4) if got else None
            row[f"{kind}_p50_rounds"] = [round(x, 4) for x in got or []]
        for kind in ("u8", "s8"):
            a, b = row.get(f"{kind}_p50_ms"), row.get("fp32_p50_ms")
            row[f"{kind}_ratio"] = round(a / b, 3) if a and b else None
    return list(rows.values())


def accuracy(checkpoints: list[str], host: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    from edgekd.runtimes.export import export_checkpoint

    out = []
    for ckpt in checkpoints:
        for label, identity in rules(host).items():
            t0 = time.perf_counter()
            report = export_checkpoint(ckpt, work / "accuracy" / f"{Path(ckpt).parent.name}-{label}", formats="onnx",
                            precisions="int8", threads=1, device_identity=identity)
            row = report.rows[0]
            out.append({"checkpoint": ckpt, "rule": label, "status": row.status, "accuracy": row.accuracy,
                        "torch_accuracy": row.torch_accuracy, "accuracy_drop_pts": row.accuracy_drop_pts,
                        "error": row.error})
            _log(f"{ckpt} {label}: {row.status} accuracy {row.accuracy} ({time.perf_counter() - t0:.1f}s)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--specs", nargs="+", default=None, help="student specs (default: bench_scale's 16)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds")
    ap.add_argument("--min-s", type=float, default=0.3, help="seconds of timed runs per measurement")
    ap.add_argument("--checkpoint", action="append", default=[], help="a trained student for the accuracy part")
    ap.add_argument("--work", default="runs/bench-ort-int8", help="artifacts (reused when present)")
    ap.add_argument("--quick", action="store_true", help=f"two small specs, 1 round: {', '.join(QUICK_SPECS)}")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.min_s <= 0:
        ap.error("--rounds must be >= 1 and --min-s > 0")
    from edgekd.errors import EdgeKDError
    from edgekd.models import load_model
    from edgekd.runtimes.export import resolve_checkpoint

    for ckpt in args.checkpoint:  # every checkpoint loads before minutes of measuring
        try:
            load_model(resolve_checkpoint(ckpt))
        except EdgeKDError as err:
            print(f"error: --checkpoint {ckpt}: {err}", file=sys.stderr)
            return 2

    import onnxruntime

    from edgekd.bench.devices import local_fingerprint
    from edgekd.device.identity import hardware_identity

    sys.path.insert(0, str(ROOT / "scripts"))
    from bench_scale import DEFAULT_SPECS

    specs = args.specs or (QUICK_SPECS if args.quick else DEFAULT_SPECS)
    from edgekd.models import spec_input_shape

    for spec in specs:
        try:
            spec_input_shape(spec, (3, 224, 224))
        except EdgeKDError as err:
            print(f"error: --specs {spec}: {err}", file=sys.stderr)
            return 2
    rounds = 1 if args.quick else args.rounds
    args.rounds = rounds
    host = hardware_identity(local_fingerprint()) or {}
    work = Path(args.work)
    load_before = list(os.getloadavg())
    _log(f"onnxruntime {onnxruntime.__version__}; host {host.get('arch')} isa {host.get('isa')}; load {load_before}")
    rows = speed(specs, host, work, args)
    acc = accuracy(args.checkpoint, host, work)

    print(f"{'spec':52s} {'fp32 ms':>8s} {'u8 ms':>8s} {'s8 ms':>8s} {'u8/fp32':>8s} {'s8/fp32':>8s} "
          f"{'fused u8':>9s} {'fused s8':>9s}")
    for r in rows:
        def f(v: Any, w: int = 8) -> str:
            return f"{v:>{w}}" if v is not None else f"{'-':>{w}}"
        print(f"{r['spec']:52s} {f(r.get('fp32_p50_ms'))} {f(r.get('u8_p50_ms'))} {f(r.get('s8_p50_ms'))} "
              f"{f(r.get('u8_ratio'))} {f(r.get('s8_ratio'))} "
              f"{f(str(r.get('u8_fused')) + '/' + str(r.get('convs')), 9)} "
              f"{f(str(r.get('s8_fused')) + '/' + str(r.get('convs')), 9)}"
              + (f"  {r['error']}" if r.get("error") else ""))
    for a in acc:
        print(f"accuracy {a['checkpoint']} {a['rule']}: {a['status']}, test {a['accuracy']} "
              f"(torch {a['torch_accuracy']}, drop {a['accuracy_drop_pts']} pts)"
              + (f" {a['error']}" if a["error"] else ""))

    def med(key: str) -> float | None:
        vals = [r[key] for r in rows if r.get(key) is not None]
        return round(statistics.median(vals), 3) if vals else None

    def share(label: str) -> float | None:
        done = [r for r in rows if r.get(f"{label}_fused") is not None and r.get("convs")]
        return round(sum(r[f"{label}_fused"] for r in done) / sum(r["convs"] for r in done), 3) if done else None

    print(json.dumps({"issue": 14, "ort_version": onnxruntime.__version__, "host_arch": host.get("arch"),
                      "host_isa": host.get("isa"), "threads": 1, "rounds": rounds,
                      "median_ratio_u8": med("u8_ratio"), "median_ratio_s8": med("s8_ratio"),
                      "fused_share_u8": share("u8"), "fused_share_s8": share("s8"), "rows": rows, "accuracy": acc,
                      "load": {"before": load_before, "after": list(os.getloadavg())}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
