"""How repeatable is one latency measurement? The same students, measured again and again.

Every search-space student (untrained, ONNX Runtime fp32, 1 thread, digits 8x8 input) is measured
`--repeats` times, each time in a fresh runner process (`edgekd.bench.measure.run_isolated`, the
path `edgekd profile calibrate` takes, with its CALIBRATION_REQUEST), in interleaved order (repeat r
runs the list forwards, r+1 backwards), with the speed anchor on (`edgekd.bench.anchor`). Per student:

    raw       the p50 each run reports
    min-of-2  the lower p50 of two consecutive repeats (what a 2-round calibration kept before the anchor)
    steady    `edgekd.latency.anchor.steady_latency`: a run whose anchor was > 20 % above the run's
              anchor floor rescaled (anchor ratio x floor), a calm run as measured
    calm-of-2 of two consecutive repeats, the one `edgekd.latency.anchor.pick_round` keeps (calm and
              lowest p50, else the calmest), through `steady_latency`: what a 2-round calibration keeps now

and for each: the median and worst max/min ratio over students, and the share of repeats within
±5 % / ±10 % of their student's median. If repeats of one model disagree by more than 10 %, no
predictor can put 90 % of students within ±10 % of a measurement.

    .venv/bin/python scripts/bench_repeat.py [--repeats 5] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spread(values: dict[str, list[float]]) -> dict[str, float]:
    """max/min per student (median, worst) and share of repeats within ±5 / ±10 % of the median."""
    ratios, rel = [], []
    for v in values.values():
        a = np.asarray(v, dtype=np.float64)
        ratios.append(float(a.max() / a.min()))
        rel.extend(np.abs(a / np.median(a) - 1).tolist())
    rel_a = np.asarray(rel)
    return {"max_over_min_median": round(float(np.median(ratios)), 3), "max_over_min_worst": round(max(ratios), 3),
            "within_5pct": round(float(np.mean(rel_a <= 0.05)), 3), "within_10pct": round(float(np.mean(rel_a <= 0.10)), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="only the first N students (quick look)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save", default=None, metavar="PATH", help="write every run's figures as JSON")
    ap.add_argument("--load", default=None, metavar="PATH", help="re-analyse a file written by --save")
    args = ap.parse_args()
    if args.repeats < 2:
        ap.error("--repeats must be at least 2 (min-of-2 needs pairs)")

    from edgekd.bench.measure import run_isolated
    from edgekd.latency.calibrate import CALIBRATION_REQUEST, export_untrained
    from edgekd.latency.anchor import anchor_floor, pick_round, steady_latency
    from edgekd.latency.search_space import student_specs

    specs = student_specs()[: args.limit]
    req = {**CALIBRATION_REQUEST, "threads": args.threads, "anchor": True}
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in specs}
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    if args.load:
        saved = json.loads(Path(args.load).read_text())
        runs, load_before, args.repeats = saved["runs"], saved["load_avg_before"], saved["repeats"]
        specs = list(runs)
    else:
        work = ROOT / "runs" / "calibrate"
        arts = {s: export_untrained(s, (1, 8, 8), 10, "onnxruntime", "fp32", work) for s in specs}
    for r in range(0 if args.load else args.repeats):
        for s in (specs if r % 2 == 0 else specs[::-1]):
            res = run_isolated(arts[s], req)
            anchor = res["speed_anchor"]
            runs[s].append({"p50_ms": res["latency"]["p50_ms"], "anchor_p50_ms": anchor["p50_ms"],
                            "anchor_ratio_p50": anchor["ratio_p50"]})
        print(f"  repeat {r + 1}/{args.repeats} done at {time.perf_counter() - t0:.0f} s "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    load_after = [round(x, 2) for x in os.getloadavg()] if not args.load else saved["load_avg_after"]
    if args.save:
        Path(args.save).write_text(json.dumps({"runs": runs, "repeats": args.repeats, "load_avg_before": load_before,
                                               "load_avg_after": load_after}))
    floor = anchor_floor(x for v in runs.values() for x in v)
    raw = {s: [x["p50_ms"] for x in v] for s, v in runs.items()}
    steady = {s: [steady_latency(x, floor)["p50_ms"] for x in v] for s, v in runs.items()}
    min2 = {s: [min(v[i], v[i + 1]) for i in range(0, len(v) - 1, 2)] for s, v in raw.items()}
    # what a 2-round calibration keeps now: the calmer run (lower anchor p50), rescaled to the floor
    calm2 = {s: [steady_latency(pick_round(v[i:i + 2], floor), floor)["p50_ms"]
                 for i in range(0, len(v) - 1, 2)] for s, v in runs.items()}
    anchors = [x["anchor_p50_ms"] for v in runs.values() for x in v]

    print(f"\n{'student':52s} {'raw p50 µs':>10s} {'raw max/min':>11s} {'steady max/min':>14s}")
    for s in sorted(specs, key=lambda s: np.median(raw[s])):
        print(f"{s:52s} {np.median(raw[s]) * 1e3:10.1f} {max(raw[s]) / min(raw[s]):11.2f} "
              f"{max(steady[s]) / min(steady[s]):14.2f}")
    table = {"raw": spread(raw), "min_of_2": spread(min2), "steady": spread(steady), "calm_of_2": spread(calm2)}
    print(f"\n{'estimator':10s} {'max/min med':>11s} {'worst':>7s} {'±5 %':>6s} {'±10 %':>6s}")
    for name, row in table.items():
        print(f"{name:10s} {row['max_over_min_median']:11.3f} {row['max_over_min_worst']:7.3f} "
              f"{row['within_5pct']:6.0%} {row['within_10pct']:6.0%}")
    print(f"anchor p50: floor {floor * 1e3:.2f} µs, median {np.median(anchors) * 1e3:.2f} µs, "
          f"max {max(anchors) * 1e3:.2f} µs over {len(anchors)} runs")
    print(json.dumps({"students": len(specs), "repeats": args.repeats, "threads": args.threads,
                      "request": {k: req[k] for k in ("warmup_s", "min_s", "min_count")},
                      "spread": table, "anchor_floor_ms": floor,
                      "anchor_max_over_floor": round(max(anchors) / floor, 3),
                      "load_avg_before": load_before, "load_avg_after": load_after,
                      "wall_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
