"""Benchmark: 50% structured channel pruning + KD fine-tuning vs the unpruned student (issue 3 §6).

    .venv/bin/python scripts/bench_compress.py [--out runs/bench-compress] [--threads 1]

Pipeline, all through the public API: train a teacher on digits resampled to 32×32 (so a conv net has
real compute) -> distill a conv student -> `api.compress` with prune ratio 0.5 and KD fine-tuning ->
export both students to ONNX (fp32, parity-checked) -> measure batch-1 latency of both in ONNX Runtime
with the same thread count, *interleaved* (A, B, A, B, ... rounds), so load from other processes on
the machine hits both alike; the median over all timed iterations of each model is compared. Torch
eager latency is reported too. Runs already present in --out are reused (delete them to retrain).

Targets: accuracy drop <= 1.0 point, median latency ratio <= 0.6. Prints a table, then ONE JSON
line (the last line) with `prune_acc_drop_pts` and `prune_latency_ratio`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_DROP_PTS = 1.0
TARGET_LATENCY_RATIO = 0.6


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def interleaved_latency(steps: dict[str, Callable[[], Any]], *, rounds: int, round_s: float, warmup_s: float) -> dict[str, dict[str, float]]:
    """Per-iteration times of each step, measured in alternating rounds; stats in milliseconds."""
    from edgekd.bench.measure import latency_stats, timing_loop

    times: dict[str, list[np.ndarray]] = {name: [] for name in steps}
    for name, step in steps.items():  # warm every model once before the first timed round
        timing_loop(step, warmup_count=20, warmup_s=warmup_s, min_count=0, min_s=0.0, max_s=0.0)
    for r in range(rounds):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            _, t = timing_loop(steps[name], warmup_count=5, warmup_s=0.0, min_count=50, min_s=round_s, max_s=10 * round_s)
            times[name].append(t)
    return {name: latency_stats(np.concatenate(ts)) for name, ts in times.items()}


def ensure_run(path: Path, make: Callable[[], Any]) -> dict[str, Any]:
    summary = path / "summary.json"
    if summary.is_file():
        _log(f"reusing {path}")
        return json.loads(summary.read_text())
    if path.exists():
        shutil.rmtree(path)
    return make()


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench-compress")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--teacher", default="resnet:width=16,depth=3")
    ap.add_argument("--student", default="cnn:width=32,depth=4")
    ap.add_argument("--teacher-epochs", type=int, default=12)
    ap.add_argument("--student-epochs", type=int, default=15)
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--round-s", type=float, default=0.5)
    ap.add_argument("--fresh-compress", action="store_true", help="redo the compression even if present")
    return ap


def prune_figures(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    """Run (or reuse) teacher, student and pruned student under `args.out`, measure them; returns
    the table lines and the figures dict. `parser().parse_args([])` gives the defaults (so another
    benchmark script can embed these figures)."""
    import torch

    from edgekd import api
    from edgekd.models import load_model

    torch.set_num_threads(max(1, args.threads))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"source": "digits", "image_size": args.image_size}
    t0 = time.perf_counter()
    teacher = ensure_run(out / "teacher", lambda: api.train_teacher(api.teacher_config(
        arch=args.teacher, image_size=args.image_size, epochs=args.teacher_epochs, patience=0,
        output=str(out / "teacher")), progress=False, log=_log))
    student = ensure_run(out / "student", lambda: api.distill({
        "teacher": str(out / "teacher" / "student.pt"), "student": args.student, "data": data,
        "train": {"epochs": args.student_epochs}, "output": str(out / "student")}, progress=False, log=_log))
    if args.fresh_compress and (out / "pruned").exists():
        shutil.rmtree(out / "pruned")
    pruned = ensure_run(out / "pruned", lambda: api.compress({
        "source": str(out / "student"), "output": str(out / "pruned"), "finetune_epochs": args.finetune_epochs,
        "passes": [{"pass": "prune", "ratio": args.ratio}]}, progress=False, log=_log))
    train_s = time.perf_counter() - t0

    # ---- export both to ONNX (parity-gated) ------------------------------------------------------
    runners: dict[str, Any] = {}
    onnx_acc: dict[str, float | None] = {}  # percent, as the export report gives it
    runtime = "onnxruntime"
    try:
        from edgekd.runtimes import load_artifact

        for name in ("student", "pruned"):
            exp_dir = out / f"export-{name}"
            if exp_dir.exists():
                shutil.rmtree(exp_dir)
            report = api.export(str(out / name), str(exp_dir), target="cpu", formats="onnx", precisions="fp32",
                                threads=args.threads)
            row = report["rows"][0]
            if row["status"] != "ok":
                raise RuntimeError(f"ONNX export of {name} failed: {row['error']}")
            onnx_acc[name] = row["accuracy"]
            runners[name] = load_artifact(row["artifact"], threads=args.threads)
    except Exception as err:  # the runtime adapters are optional for this figure: fall back to torch
        _log(f"ONNX Runtime path unavailable ({type(err).__name__}: {err}); timing torch eager instead")
        runtime, runners = "torch-eager", {}

    models = {name: load_model(out / name / "student.pt")[0].eval() for name in ("student", "pruned")}
    shape = tuple(student["input_shape"])
    x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    xt = torch.from_numpy(x)

    def eager(m: torch.nn.Module) -> Callable[[], Any]:
        def step() -> Any:
            with torch.inference_mode():
                return m(xt)
        return step

    steps: dict[str, Callable[[], Any]] = {}
    if runners:
        for name, runner in runners.items():
            feed = {runner.input_names[0]: x}
            steps[f"{runtime}:{name}"] = (lambda r=runner, f=feed: r.run(f))
    for name, m in models.items():
        steps[f"torch-eager:{name}"] = eager(m)
    lat = interleaved_latency(steps, rounds=args.rounds, round_s=args.round_s, warmup_s=0.3)

    # ---- figures ---------------------------------------------------------------------------------
    before, after = pruned["before"], pruned["after"]
    drop = 100.0 * (before["test_acc"] - after["test_acc"])
    ratio = lat[f"{runtime}:pruned"]["p50_ms"] / lat[f"{runtime}:student"]["p50_ms"]
    eager_ratio = lat["torch-eager:pruned"]["p50_ms"] / lat["torch-eager:student"]["p50_ms"]
    groups = pruned["stages"][0]["details"]["groups"]

    lines: list[str] = []
    lines.append(f"teacher {teacher['student']} test acc {teacher['test_acc']:.4f}; student {args.student} on digits "
                 f"{args.image_size}x{args.image_size}; prune ratio {args.ratio} + {args.finetune_epochs} KD fine-tuning epochs")
    lines.append("channels per pruned group: " + ", ".join(f"{k} {v['before']}->{v['after']}" for k, v in groups.items()))
    lines.append(f"{'model':<10} {'params':>9} {'MACs':>11} {'file':>9} {'test acc':>9} {'onnx acc':>9} "
                 f"{runtime + ' p50 ms':>18} {'p90 ms':>8} {'eager p50 ms':>13}")
    for name, m in (("student", before), ("pruned", after)):
        r = lat.get(f"{runtime}:{name}", {})
        acc = onnx_acc.get(name)
        lines.append(f"{name:<10} {m['params']:>9,} {m['macs']:>11,} {m['file_bytes'] / 1024:>7.1f}Ki {100 * m['test_acc']:>8.2f}% "
                 f"{'-' if acc is None else f'{acc:.2f}%':>9} {r.get('p50_ms', float('nan')):>18.4f} "
                 f"{r.get('p90_ms', float('nan')):>8.4f} {lat[f'torch-eager:{name}']['p50_ms']:>13.4f}")
    ok_acc, ok_lat = drop <= TARGET_DROP_PTS, ratio <= TARGET_LATENCY_RATIO
    lines.append(f"accuracy drop {drop:+.2f} pts (target <= {TARGET_DROP_PTS}) {'PASS' if ok_acc else 'MISS'}; "
                 f"{runtime} latency ratio {ratio:.3f} (target <= {TARGET_LATENCY_RATIO}) {'PASS' if ok_lat else 'MISS'}; "
                 f"MACs ratio {after['macs'] / before['macs']:.3f}, torch eager ratio {eager_ratio:.3f}; "
                 f"batch 1, {args.threads} thread(s), {args.rounds} interleaved rounds")
    figures = {
        "prune_acc_drop_pts": round(drop, 3),
        "prune_latency_ratio": round(ratio, 4),
        "prune_latency_runtime": runtime,
        "prune_latency_p50_ms": {"unpruned": lat[f"{runtime}:student"]["p50_ms"], "pruned": lat[f"{runtime}:pruned"]["p50_ms"]},
        "prune_eager_latency_ratio": round(eager_ratio, 4),
        "prune_macs_ratio": round(after["macs"] / before["macs"], 4),
        "prune_params_ratio": round(after["params"] / before["params"], 4),
        "prune_size_ratio": round(after["file_bytes"] / before["file_bytes"], 4),
        "unpruned_test_acc": before["test_acc"],
        "pruned_test_acc": after["test_acc"],
        "onnx_test_acc_pct": onnx_acc,
        "threads": args.threads,
        "batch": 1,
        "student": args.student,
        "image_size": args.image_size,
        "finetune_epochs": args.finetune_epochs,
        "train_time_s": round(train_s, 1),
        "targets_met": bool(ok_acc and ok_lat),
    }
    return lines, figures


def main() -> int:
    lines, figures = prune_figures(parser().parse_args())
    for line in lines:
        print(line)
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
