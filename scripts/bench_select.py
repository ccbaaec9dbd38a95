"""What issue 5 must measure on this machine, printed as a table and, last, one JSON line.

1. Latency prediction out of sample: untrained students sampled around the search space (not the
   search-space specs themselves) are measured with ONNX Runtime fp32, batch 1, and fit the model;
   every search-space student is then measured and predicted. Each model is measured `--rounds`
   times, interleaved, and its least-disturbed round (lowest p50) is used, as `edgekd profile
   calibrate` does: on this shared VM a neighbour slows whole stretches of seconds by ~1.6x, which a
   median of 3 rounds does not always reject (the JSON line also carries the share with the median).
   Target: >= 90 % of held-out students within ±10 % of their measured p50.
2. `edgekd deploy --target cpu` with no other flags, as a real subprocess, twice: cold (empty work
   dir and soft-target cache) and warm (same caches). Targets: budget met in <= 2 device rounds,
   chosen student >= 5x faster than the teacher (p50, same runtime, measured) and within 1.5 points.

    .venv/bin/python scripts/bench_select.py [--rounds 3] [--count 36] [--threads 1]
    .venv/bin/python scripts/bench_select.py --task text   # the same check for text students
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def aggregate(per_round: dict[str, list[dict]], how: str) -> dict[str, dict]:
    """{spec: {p50_ms, p90_ms, p99_ms, cv}} from every round's statistics: "median" over rounds, or
    "min" — the least-disturbed round, for a shared machine whose neighbours slow a whole round."""
    fn = {"median": np.median, "min": np.min}[how]
    return {s: {k: float(fn([x[k] for x in v])) for k in ("p50_ms", "p90_ms", "p99_ms", "cv")}
            for s, v in per_round.items()}


def measure_all(dev, specs, shape, classes, rounds: int, threads: int, work: Path, min_s: float) -> dict[str, list]:
    """{spec: [each round's latency statistics]}, interleaved rounds on `dev`."""
    from edgekd.latency.calibrate import export_untrained

    arts = {s: export_untrained(s, shape, classes, "onnxruntime", "fp32", work) for s in specs}
    req = {"threads": threads, "batch": 1, "warmup_count": 20, "warmup_s": 0.2, "min_count": 300, "min_s": min_s,
           "accuracy": False}
    per: dict[str, list[dict]] = {s: [] for s in specs}
    for r in range(rounds):
        order = specs if r % 2 == 0 else list(reversed(specs))  # alternate order: no spec always measured last
        for s in order:
            per[s].append(dev.bench(arts[s], req)["latency"])
        print(f"  round {r + 1}/{rounds} measured {len(specs)} models", flush=True)
    return per


def prediction_check(args) -> dict:
    from edgekd.bench.devices import open_device
    from edgekd.latency.search_space import calibration_specs, student_specs
    from edgekd.latency.model import Sample, evaluate_on, fit_latency_model
    from edgekd.latency.features import spec_features

    if args.task == "text":  # tinybert students on token ids: sequence length 32, a 1000-token vocabulary
        shape, classes = (32,), 5
        fit_specs = calibration_specs(args.count, seed=0, task="text", input_shape=shape, num_classes=classes, vocab=1000)
        held = student_specs("text", vocab=1000)
    else:
        shape, classes = (1, 8, 8), 10
        fit_specs, held = calibration_specs(args.count, seed=0), student_specs()
    assert not set(fit_specs) & set(held)
    dev = open_device(args.device)
    try:
        t0 = time.perf_counter()
        per_round = measure_all(dev, fit_specs + held, shape, classes, args.rounds, args.threads,
                                ROOT / "runs" / "calibrate", args.min_s)
        secs = time.perf_counter() - t0
    finally:
        dev.close()
    if args.save_measurements:
        Path(args.save_measurements).write_text(json.dumps({"fit": fit_specs, "held": held, "rounds": per_round}))
    feats = {s: spec_features(s, shape, classes) for s in fit_specs + held}

    def fit_and_check(how: str):  # type: ignore[no-untyped-def]
        lat = aggregate(per_round, how)
        samples = {s: Sample(s, feats[s], lat[s]) for s in fit_specs + held}
        model = fit_latency_model([samples[s] for s in fit_specs], f"onnxruntime/fp32/t{args.threads}/b1", folds=5)
        return lat, samples, model, evaluate_on(model, [samples[s] for s in held])

    other = "min" if args.aggregate == "median" else "median"
    other_ev = fit_and_check(other)[3]["summary"]
    lat, samples, model, ev = fit_and_check(args.aggregate)
    print(f"\nper-model latency = the {args.aggregate} over {args.rounds} interleaved rounds of each round's p50 "
          f"(with the {other} instead: within ±10 % {other_ev['within_10pct']:.0%}, max {other_ev['max_abs_rel']:.1%})")
    if args.task == "text":
        # the same measurements without the attention-matmul term, side by side: what that term buys
        blind = {s: Sample(s, {**samples[s].features, "matmul_macs": 0}, lat[s]) for s in fit_specs + held}
        before = evaluate_on(fit_latency_model([blind[s] for s in fit_specs], "without-matmul", folds=5),
                             [blind[s] for s in held])["summary"]
        print(f"\nwithout the attention-matmul term: within ±10 % {before['within_10pct']:.0%}, median |error| "
              f"{before['median_abs_rel']:.1%}, max {before['max_abs_rel']:.1%}")
    print(f"\nlatency model fitted on {len(fit_specs)} untrained students ({secs:.0f} s of measuring); "
          f"5-fold CV median error {model.cv['p50_ms']['median_abs_rel']:.1%}; channel blocks chosen by CV "
          f"(input, output): {model.pad_block}")
    print("p50 coefficients (µs per unit): " + ", ".join(f"{k}={v * 1e3:.3g}" for k, v in model.coef["p50_ms"].items() if v > 0))
    print(f"\n{'held-out student (search space)':52s} {'measured p50':>12s} {'predicted':>10s} {'error':>8s}")
    for r in ev["rows"]:
        flag = "" if abs(r["rel_err"]) <= 0.10 else "  <-- outside ±10 %"
        print(f"{r['name'].replace(',dropout=0.1', '').replace('dropout=0.1,', ''):52s} {r['measured_ms'] * 1e3:10.2f}µs {r['predicted_ms'] * 1e3:8.2f}µs {r['rel_err']:+8.1%}{flag}")
    print(f"within ±10 %: {ev['summary']['within_10pct']:.0%} of {len(ev['rows'])}; median |error| "
          f"{ev['summary']['median_abs_rel']:.1%}; max {ev['summary']['max_abs_rel']:.1%}")
    signed = np.array([r["rel_err"] for r in ev["rows"]])
    print(f"mean signed error {signed.mean():+.1%} ({int((signed > 0).sum())} of {len(signed)} over-predicted)")
    return {"within": ev["summary"]["within_10pct"], "median_err": ev["summary"]["median_abs_rel"],
            "mean_err": float(signed.mean()), "pad_block": list(model.pad_block),
            "max_err": ev["summary"]["max_abs_rel"], "held_out": len(ev["rows"]), "fit_on": len(fit_specs),
            "other": {"aggregate": other, "within": other_ev["within_10pct"], "max_err": other_ev["max_abs_rel"]}}


def run_deploy(work: Path, cache: Path, bundle: Path, label: str) -> tuple[dict, float]:
    env = dict(os.environ, EDGEKD_CACHE=str(cache))
    cmd = [sys.executable, "-m", "edgekd", "deploy", "--target", "cpu", "--work-dir", str(work), "-o", str(bundle), "--json"]
    print(f"\n$ edgekd deploy --target cpu   ({label}; work dir {work})", flush=True)
    import resource

    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the deploy and every process it waited for (runner children, the local agent):
    # on a shared machine wall time depends on everyone's load, CPU time does not
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for line in proc.stderr.splitlines():
        if line.startswith("["):
            print("  " + line)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"deploy failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    report["_cpu_s"] = cpu
    report["_calibrated"] = "calibrating on" in proc.stderr  # a device profile without a latency model yet
    return report, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds per model")
    ap.add_argument("--count", type=int, default=36, help="untrained students the latency model is fitted on")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the prediction check")
    ap.add_argument("--min-s", type=float, default=0.5, help="timed loop per model per round (s)")
    ap.add_argument("--device", default="inprocess", help="where the prediction check measures (inprocess/local)")
    ap.add_argument("--aggregate", choices=("median", "min"), default="min",
                    help="how each model's rounds combine into its latency, fit and held-out alike: its "
                         "least-disturbed round (min, as `edgekd profile calibrate` keeps) or the median; the "
                         "JSON line carries the held-out share for both")
    ap.add_argument("--save-measurements", default=None, metavar="PATH",
                    help="write every round's statistics per model as JSON (for offline analysis)")
    ap.add_argument("--task", choices=("image", "text"), default="image",
                    help="prediction check on image students (digits 8x8) or text students (tinybert, sequence 32); "
                         "text implies --skip-deploy")
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--skip-deploy", action="store_true")
    args = ap.parse_args()

    out: dict = {}
    if not args.skip_predict:
        pc = prediction_check(args)
        out.update(predict_within_10pct=round(pc["within"], 3), predict_median_abs_err=round(pc["median_err"], 4),
                   predict_max_abs_err=round(pc["max_err"], 4), predict_mean_err=round(pc["mean_err"], 4),
                   predict_pad_block=pc["pad_block"], predict_held_out=pc["held_out"], predict_task=args.task,
                   predict_aggregate=args.aggregate,
                   **{f"predict_within_10pct_{pc['other']['aggregate']}": round(pc["other"]["within"], 3)},
                   predict_fit_on=pc["fit_on"], predict_threads=args.threads)
    if not args.skip_deploy and args.task == "image":
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-select-") as tmp:
            tmp_path = Path(tmp)
            cold, cold_s = run_deploy(tmp_path / "work", tmp_path / "cache", tmp_path / "bundle", "cold: empty caches")
            warm, warm_s = run_deploy(tmp_path / "work", tmp_path / "cache", tmp_path / "bundle", "warm: same caches")
        print(f"\n{'run':6s} {'status':10s} {'student':28s} {'rounds':>6s} {'budget':>10s} {'p90':>10s} {'speedup':>8s} "
              f"{'acc drop':>9s} {'wall':>7s} {'cpu':>7s}")
        for name, rep, wall in (("cold", cold, cold_s), ("warm", warm, warm_s)):
            c = rep.get("chosen") or {}
            m = c.get("measured") or {}
            print(f"{name:6s} {rep['status']:10s} {c.get('spec', '-'):28s} {rep['device_rounds']:6d} "
                  f"{rep['budget_ms'] * 1e3:8.2f}µs {(m.get('p90_ms') or float('nan')) * 1e3:8.2f}µs "
                  f"{rep.get('speedup_vs_teacher_p50', float('nan')):7.1f}x {rep.get('acc_drop_vs_teacher_pts', float('nan')):8.2f} "
                  f"{wall:6.0f}s {rep['_cpu_s']:6.0f}s")
        print(f"teacher {cold['teacher']['spec']}: p50 {cold['teacher']['p50_ms'] * 1e3:.1f} µs, accuracy "
              f"{cold['teacher']['accuracy']:.2%}; profile {cold['profile']}")
        out.update(deploy_status=cold["status"], deploy_student=(cold.get("chosen") or {}).get("spec"),
                   deploy_rounds=cold["device_rounds"], deploy_rounds_warm=warm["device_rounds"],
                   speedup_vs_teacher=round(cold.get("speedup_vs_teacher_p50", 0.0), 2),
                   acc_drop_vs_teacher_pts=round(cold.get("acc_drop_vs_teacher_pts", 99.0), 2),
                   deploy_wall_s_cold=round(cold_s, 1), deploy_wall_s_warm=round(warm_s, 1),
                   deploy_cpu_s_cold=round(cold["_cpu_s"], 1), deploy_cpu_s_warm=round(warm["_cpu_s"], 1),
                   cold_included_calibration=cold["_calibrated"], cpu_cores=os.cpu_count(),
                   load_avg_1m=round(os.getloadavg()[0], 2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
