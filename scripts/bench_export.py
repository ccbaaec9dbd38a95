"""Benchmark: export a distilled conv student to every CPU runtime and measure what it cost (issue 3 §6).

    .venv/bin/python scripts/bench_export.py [--runs runs/bench-compress] [--threads 1] [--no-prune]

Pipeline through the public API: train a teacher on digits resampled to 32×32 (so the conv student
has real compute) -> distill a conv student -> `api.export` to ONNX Runtime, OpenVINO and LiteRT in
fp32 and INT8 (every artifact through the parity gate) -> batch-1 latency of every artifact and of
torch eager, same thread count, measured in *interleaved* rounds (A, B, C, A, B, C, ...) so load
from other processes hits every model alike; medians over all timed iterations are compared.
Teacher and student runs are shared with scripts/bench_compress.py (same --runs directory, reused
when present).

Targets: fp32 parity <= 1e-5 (ORT, OpenVINO, LiteRT); each INT8 path loses <= 1.0 point; INT8
median <= 0.75 x fp32 median in the same runtime for at least ONNX Runtime and LiteRT. Pruning
figures (`prune_acc_drop_pts`, `prune_latency_ratio`) come from scripts/bench_compress.py's
`prune_figures` (50 % channel pruning + KD fine-tuning; skip with --no-prune, then they are null). Prints a table, then ONE JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "litert"}
TARGET_PARITY = 1e-5
TARGET_DROP_PTS = 1.0
TARGET_INT8_RATIO = 0.75


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/bench-compress", help="teacher/student runs (shared with bench_compress)")
    ap.add_argument("--out", default=None, help="export directory (default: RUNS/export-bench)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--teacher", default="resnet:width=16,depth=3")
    ap.add_argument("--student", default="cnn:width=32,depth=4")
    ap.add_argument("--teacher-epochs", type=int, default=12)
    ap.add_argument("--student-epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-s", type=float, default=0.4)
    ap.add_argument("--calibration-samples", type=int, default=256)
    ap.add_argument("--no-prune", dest="prune", action="store_false",
                    help="skip scripts/bench_compress.py's pruning figures (they are null then)")
    return ap


def train_student(args: argparse.Namespace) -> dict[str, Any]:
    """Teacher, then the KD student, both via edgekd.api; reused when the runs already exist."""
    from bench_compress import ensure_run

    from edgekd import api

    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    teacher = ensure_run(runs / "teacher", lambda: api.train_teacher(api.teacher_config(
        arch=args.teacher, image_size=args.image_size, epochs=args.teacher_epochs, patience=0,
        output=str(runs / "teacher")), progress=False, log=_log))
    student = ensure_run(runs / "student", lambda: api.distill({
        "teacher": str(runs / "teacher" / "student.pt"), "student": args.student,
        "data": {"source": "digits", "image_size": args.image_size}, "train": {"epochs": args.student_epochs},
        "output": str(runs / "student")}, progress=False, log=_log))
    return {"teacher": teacher, "student": student}


def main() -> int:
    args = parser().parse_args()
    import torch

    from bench_compress import interleaved_latency

    from edgekd import api
    from edgekd.models import load_model
    from edgekd.runtimes import load_artifact, read_manifest
    from edgekd.runtimes.base import feeds_from_nchw

    torch.set_num_threads(max(1, args.threads))
    t0 = time.perf_counter()
    runs = train_student(args)
    out = Path(args.out or Path(args.runs) / "export-bench")
    _log(f"exporting {Path(args.runs) / 'student'} -> {out}")
    report = api.export(str(Path(args.runs) / "student"), str(out), target="cpu", formats="onnx,openvino,tflite",
                        precisions="fp32,int8", threads=args.threads, calibration_samples=args.calibration_samples,
                        log=_log)
    rows = {(r["format"], r["precision"]): r for r in report["rows"]}

    # ---- latency: every ok artifact and torch eager, batch 1, same threads, interleaved ------------
    model, info = load_model(Path(args.runs) / "student" / "student.pt")
    model.eval()
    from edgekd.data import load_dataset

    ds = load_dataset("digits", image_size=args.image_size)
    x = np.ascontiguousarray(ds.test.x[:1])
    xt = torch.from_numpy(x)
    steps: dict[str, Callable[[], Any]] = {}
    for (fmt, prec), row in rows.items():
        if row["status"] != "ok":
            continue
        runner = load_artifact(row["artifact"], threads=args.threads)
        feeds = feeds_from_nchw(read_manifest(row["artifact"]), x)
        steps[f"{RUNTIMES[fmt]}:{prec}"] = (lambda r=runner, f=feeds: r.run(f))

    def eager() -> Any:
        with torch.inference_mode():
            return model(xt)

    steps["torch:fp32"] = eager
    lat = interleaved_latency(steps, rounds=args.rounds, round_s=args.round_s, warmup_s=0.3)
    p50 = {name: stats["p50_ms"] for name, stats in lat.items()}

    # ---- figures -------------------------------------------------------------------------------
    parity, drop, ratio, speedup, speedup_int8 = {}, {}, {}, {}, {}
    for fmt, rt in RUNTIMES.items():
        fp32, int8 = rows.get((fmt, "fp32"), {}), rows.get((fmt, "int8"), {})
        parity[rt] = fp32.get("max_abs")
        drop[rt] = None if int8.get("accuracy_drop_pts") is None else round(int8["accuracy_drop_pts"], 3)
        if f"{rt}:fp32" in p50 and f"{rt}:int8" in p50:
            ratio[rt] = round(p50[f"{rt}:int8"] / p50[f"{rt}:fp32"], 4)
        else:
            ratio[rt] = None
        # torch eager p50 / runtime p50 (> 1: the runtime is faster), fp32 artifact; int8 separately
        speedup[rt] = round(p50["torch:fp32"] / p50[f"{rt}:fp32"], 3) if f"{rt}:fp32" in p50 else None
        speedup_int8[rt] = round(p50["torch:fp32"] / p50[f"{rt}:int8"], 3) if f"{rt}:int8" in p50 else None

    prune = {"prune_acc_drop_pts": None, "prune_latency_ratio": None}
    if args.prune:  # filled by the compression benchmark (scripts/bench_compress.py) on the same runs
        from bench_compress import parser as compress_parser
        from bench_compress import prune_figures

        c_args = compress_parser().parse_args(["--out", args.runs, "--threads", str(args.threads)])
        prune_lines, prune_fig = prune_figures(c_args)
        prune = {k: prune_fig.get(k) for k in prune}
    else:
        prune_lines = ["pruning figures: skipped (--no-prune)"]

    student = runs["student"]
    print(f"student {args.student} distilled from {args.teacher} on digits {args.image_size}x{args.image_size}: "
          f"torch test acc {100 * student['test_acc']:.2f}%, {student.get('macs', 0):,} MACs; batch 1, "
          f"{args.threads} thread(s), {args.rounds} interleaved rounds of {args.round_s}s")
    print(f"{'runtime':12} {'prec':5} {'status':6} {'size KiB':>9} {'max|diff|':>10} {'acc %':>7} {'drop pts':>9} "
          f"{'p50 ms':>8} {'p90 ms':>8} {'vs torch':>9}")
    for (fmt, prec), row in rows.items():
        name = f"{RUNTIMES[fmt]}:{prec}"
        stats = lat.get(name, {})
        size = "-" if row["size_bytes"] is None else f"{row['size_bytes'] / 1024:.1f}"
        print(f"{RUNTIMES[fmt]:12} {prec:5} {row['status']:6} {size:>9} "
              f"{row['max_abs'] if row['max_abs'] is not None else float('nan'):>10.2e} "
              f"{row['accuracy'] if row['accuracy'] is not None else float('nan'):>7.2f} "
              f"{row['accuracy_drop_pts'] if row['accuracy_drop_pts'] is not None else float('nan'):>9.2f} "
              f"{stats.get('p50_ms', float('nan')):>8.4f} {stats.get('p90_ms', float('nan')):>8.4f} "
              f"{(p50['torch:fp32'] / stats['p50_ms']) if stats else float('nan'):>8.2f}x")
        if row["error"]:
            print(f"    {row['error']}")
    print(f"{'torch':12} {'fp32':5} {'eager':6} {'':>9} {'':>10} {'':>7} {'':>9} {p50['torch:fp32']:>8.4f} "
          f"{lat['torch:fp32']['p90_ms']:>8.4f} {1.0:>8.2f}x")
    checks = {
        "parity": all(v is not None and v <= TARGET_PARITY for v in parity.values()),
        "int8_drop": all(v is not None and v <= TARGET_DROP_PTS for v in drop.values()),
        "int8_latency": all(ratio.get(rt) is not None and ratio[rt] <= TARGET_INT8_RATIO
                            for rt in ("onnxruntime", "litert")),
    }
    print(f"fp32 parity <= {TARGET_PARITY:g}: {'PASS' if checks['parity'] else 'MISS'} {parity}")
    print(f"int8 accuracy drop <= {TARGET_DROP_PTS}: {'PASS' if checks['int8_drop'] else 'MISS'} {drop}")
    print(f"int8/fp32 median latency <= {TARGET_INT8_RATIO} (onnxruntime, litert): "
          f"{'PASS' if checks['int8_latency'] else 'MISS'} {ratio}")
    for line in prune_lines:
        print(line)
    figures = {"parity_max_abs": parity, "int8_acc_drop_pts": drop, "int8_latency_ratio": ratio,
               "speedup_vs_torch": speedup, "speedup_vs_torch_int8": speedup_int8, **prune, "latency_p50_ms": p50, "threads": args.threads, "batch": 1,
               "student": args.student, "image_size": args.image_size,
               "torch_test_acc_pct": next((r["torch_accuracy"] for r in rows.values() if r["torch_accuracy"]), None),
               "targets_met": checks, "wall_s": round(time.perf_counter() - t0, 1)}
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
