"""Does calibration's measuring protocol repeat? The one before session 18 against the one now, side by side.

The same untrained students (ONNX Runtime fp32, 1 thread; by default the real-scale calibration sample
`edgekd profile calibrate --space real` measures, 96-288 px) are measured in several *campaigns* per
protocol, the campaigns of the two protocols alternating:

    per-model   2 interleaved rounds, each model in a fresh runner process of its own per round
                (`run_isolated`), timed >= 0.5 s and >= 200 runs after a 0.3 s warm-up: what
                `edgekd profile calibrate` did before session 18
    bench-many  8 interleaved rounds, each round ONE runner process for every model
                (`run_isolated_many`, the agent's `bench_many`), with CALIBRATION_REQUEST
                (>= 0.15 s, >= 20 runs, 0.15 s warm-up): what it does now

Each campaign keeps, per model, the round calibration keeps (`edgekd.latency.anchor.pick_round`: calm
by the speed anchor, lowest p50). Printed per protocol: for every pair of its campaigns, the share of
students whose kept p50s agree within ±10 % (the noise floor of any latency model fitted on them), and
each campaign's wall time; then one JSON line.

    .venv/bin/python scripts/bench_calibration_rounds.py [--campaigns 3] [--space real|micro] [--count 24]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PER_MODEL = {"rounds": 2, "request": {"warmup_count": 10, "warmup_s": 0.3, "min_count": 200, "min_s": 0.5,
                                      "max_s": 30.0, "accuracy": False, "latency": True, "anchor": True}}


def protocols() -> dict[str, dict[str, Any]]:
    from edgekd.latency.anchor import CALIBRATION_REQUEST, CALIBRATION_ROUNDS

    return {"per-model": PER_MODEL, "bench-many": {"rounds": CALIBRATION_ROUNDS, "request": CALIBRATION_REQUEST}}


def campaign(name: str, arts: list[Path], threads: int) -> tuple[list[float], float]:
    """One campaign of protocol `name`: (kept p50 ms per artifact, wall seconds)."""
    from edgekd.bench.measure import run_isolated, run_isolated_many
    from edgekd.latency.anchor import anchor_floor, pick_round

    proto = protocols()[name]
    req = {**proto["request"], "threads": threads}
    seen: list[list[dict[str, Any]]] = [[] for _ in arts]
    t0 = time.perf_counter()
    for r in range(proto["rounds"]):
        order = list(range(len(arts))) if r % 2 == 0 else list(reversed(range(len(arts))))
        if name == "per-model":
            results: list[Any] = [run_isolated(arts[i], req) for i in order]
        else:
            results = run_isolated_many([arts[i] for i in order], req)
        for i, res in zip(order, results):
            if isinstance(res, Exception):
                raise SystemExit(f"error: measuring {arts[i]} failed: {res}")
            anchor = res.get("speed_anchor") or {}  # as Measurement.from_result records it
            seen[i].append({**res["latency"], "anchor_p50_ms": anchor.get("p50_ms"),
                            "anchor_ratio_p50": anchor.get("ratio_p50")})
    floor = anchor_floor(x for xs in seen for x in xs)
    return [float(pick_round(xs, floor)["p50_ms"]) for xs in seen], time.perf_counter() - t0


def agreement(a: list[float], b: list[float]) -> float:
    return float(np.mean([abs(y / x - 1) <= 0.10 for x, y in zip(a, b)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--campaigns", type=int, default=3, help="campaigns per protocol (>= 2: agreement needs pairs)")
    ap.add_argument("--space", choices=("real", "micro"), default="real")
    ap.add_argument("--count", type=int, default=24, help="calibration students")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="runs/bench_calibration_rounds", help="export cache (reused)")
    args = ap.parse_args()
    if args.campaigns < 2 or args.count < 1:
        ap.error("--campaigns must be >= 2 and --count >= 1")

    from edgekd.latency.calibrate import export_untrained
    from edgekd.latency.search_space import calibration_specs, student_families

    if args.space == "real":
        shape, classes = (3, 224, 224), 1000
        specs = calibration_specs(args.count, seed=0, families=student_families(scale="real"),
                                  input_shape=shape, num_classes=classes)
    else:
        shape, classes = (1, 8, 8), 10
        specs = calibration_specs(args.count, seed=0)
    arts = [export_untrained(s, shape, classes, "onnxruntime", "fp32", Path(args.work)) for s in specs]
    print(f"{len(arts)} untrained students ({args.space} space) exported; load average {os.getloadavg()[0]:.1f}",
          flush=True)

    kept: dict[str, list[list[float]]] = {name: [] for name in protocols()}
    wall: dict[str, list[float]] = {name: [] for name in protocols()}
    for c in range(args.campaigns):
        for name in (protocols() if c % 2 == 0 else reversed(list(protocols()))):
            p50, secs = campaign(name, arts, args.threads)
            kept[name].append(p50)
            wall[name].append(secs)
            print(f"  campaign {c + 1}/{args.campaigns} {name}: {secs:.0f} s (load average {os.getloadavg()[0]:.1f})",
                  flush=True)

    pairs: dict[str, list[float]] = {}
    print(f"\n{'protocol':12s} {'rounds':>6s}  agreement within ±10 % per pair of campaigns       wall s (median)")
    for name, runs in kept.items():
        pairs[name] = [agreement(a, b) for a, b in itertools.combinations(runs, 2)]
        print(f"{name:12s} {protocols()[name]['rounds']:6d}  {' '.join(f'{x:.2f}' for x in pairs[name]):45s}"
              f"  {np.median(wall[name]):.0f}")
    print(json.dumps({"bench": "calibration_rounds", "space": args.space, "students": len(arts),
                      "campaigns": args.campaigns,
                      "agreement_within_10pct": {n: [round(x, 3) for x in v] for n, v in pairs.items()},
                      "agreement_median": {n: round(float(np.median(v)), 3) for n, v in pairs.items()},
                      "wall_s_median": {n: round(float(np.median(v)), 1) for n, v in wall.items()},
                      "rounds": {n: p["rounds"] for n, p in protocols().items()}}))


if __name__ == "__main__":
    main()
