"""How many interleaved measuring rounds does this machine need before a latency repeats?

A shared VM switches between a fast and a slow state for stretches of seconds to tens of seconds
(measured on the 2-vCPU Xeon VM, 2026-12-02: a 256x256 matmul ran ~213 us or ~280 us per call in
0.2 s windows, the slow state holding for ~25 s at a time and only 1 window in 8 within 5 % of the
fastest). One long timed loop per model lands wherever the machine happens to be; many short
rounds, interleaved over all the models so that each model's rounds are spread over minutes, give
each model a chance to be timed in a fast stretch, and the round `edgekd.latency.anchor.pick_round`
keeps (calm by the speed anchor and lowest p50) is then the undisturbed time.

This script measures the same students in two independent campaigns, each exactly as
`scripts/bench_transfer.py` measures (`bench_transfer.timed_rounds`: `--rounds` interleaved rounds in
this process, `--min-s` per model per round, the speed anchor timed alongside, then passes over the
models none of whose rounds was calm while `--calm-s` lasts). For R = 1 .. `--rounds`, and for all
the rounds with the calm passes, it prints how often the two campaigns' estimates agree per student
(within ±5 % and ±10 %, worst ratio), for three estimators:

    kept      the round pick_round keeps, through steady_latency (what calibration and
              bench_transfer fit on)
    lowest    the lowest p50 of the R rounds (no anchor)
    median    the median p50 of the R rounds

Two campaigns that do not agree to ±10 % cap any prediction checked against them: a model cannot
put 90 % of students within ±10 % of a measurement that does not repeat to ±10 %.

What it answers depends on how long a campaign lasts: with the defaults (16 real-scale students x 2
configurations, ~8 s a round) one takes about a minute. Measured on the Xeon VM (2026-12-02; the 04:20
run by a helper of the same design before this script existed, re-analysed with `--load`): at
04:20 UTC, with fast stretches every few seconds, the kept round repeated for every student after 8
rounds (3 rounds: 81 %); at 05:22 and 05:28, when the fast state came about once a minute, 19-69 %;
at 06:30 with `--students 54` (~5 min a campaign) 93 % (ORT) and 87 % (OpenVINO). To ask whether a
benchmark whose rounds span several minutes repeats, give it enough `--students` / `--configs` that a
campaign lasts that long.

    .venv/bin/python scripts/bench_rounds.py [--space real|micro] [--students 16] [--rounds 8]
        [--min-s 0.15] [--calm-s 120] [--configs ort-t1,openvino] [--save FILE | --load FILE]

Prints the table, then one JSON line: `repeat_within_10pct` / `repeat_within_5pct`
({estimator: {config: {R or "all": share}}}), `worst_ratio`, `rounds`, `min_s`, `calm_s`, `students`,
`load_avg`, `cpu`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

ESTIMATORS = ("kept", "lowest", "median")
CONFIGS = ("ort-t1", "ort-t2", "ort-noopt", "openvino")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def estimates(rows: dict[str, dict[str, list[dict[str, float]]]], estimator: str, r: int | None
              ) -> dict[tuple[str, str], float]:
    """{(config, student): p50 estimate from the first `r` rounds (None: every round, the calm passes'
    too)}; the anchor floor is the campaign's over those rounds, as a calibration of them would see it."""
    from edgekd.latency.anchor import anchor_floor, pick_round, steady_latency

    floor = anchor_floor(x for row in rows.values() for xs in row.values() for x in xs[:r])
    out = {}
    for c, row in rows.items():
        for s, xs in row.items():
            p = [x["p50_ms"] for x in xs[:r]]
            if estimator == "kept":
                out[(c, s)] = float(steady_latency(pick_round(xs[:r], floor), floor)["p50_ms"])
            elif estimator == "lowest":
                out[(c, s)] = float(min(p))
            else:
                out[(c, s)] = float(np.median(p))
    return out


def agreement(first: dict, second: dict, rounds: int) -> dict[str, Any]:
    """Per estimator, config and R (1 .. `rounds`, then "all": with the calm passes): shares of students
    whose two campaign estimates agree within ±5 / ±10 % (larger / smaller - 1), the worst larger / smaller."""
    out: dict[str, Any] = {"repeat_within_10pct": {}, "repeat_within_5pct": {}, "worst_ratio": {}}
    for est in ESTIMATORS:
        for key in out:
            out[key][est] = {c: {} for c in first}
        for r in [*range(1, rounds + 1), "all"]:
            a, b = estimates(first, est, None if r == "all" else r), estimates(second, est, None if r == "all" else r)
            for c in first:
                ratio = np.array([max(a[k], b[k]) / min(a[k], b[k]) for k in a if k[0] == c])
                out["repeat_within_10pct"][est][c][r] = round(float(np.mean(ratio - 1 <= 0.10)), 3)
                out["repeat_within_5pct"][est][c][r] = round(float(np.mean(ratio - 1 <= 0.05)), 3)
                out["worst_ratio"][est][c][r] = round(float(ratio.max()), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="real", choices=("real", "micro"),
                    help="real: ImageNet-scale families at 96-260 px (ms); micro: the default deploy's students (us)")
    ap.add_argument("--students", type=int, default=16, help="how many of bench_transfer's students (its order)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds per campaign")
    ap.add_argument("--min-s", type=float, default=0.15, help="timed loop per model per round (s)")
    ap.add_argument("--calm-s", type=float, default=120.0,
                    help="per campaign: after --rounds, models without a calm round are measured again until this "
                         "many seconds (0: none), as bench_transfer does; the \"all\" column scores them")
    ap.add_argument("--configs", default="ort-t1,openvino", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--save", default=None, metavar="PATH", help="write both campaigns' rounds as JSON")
    ap.add_argument("--load", default=None, metavar="PATH", help="re-analyse a file written by --save (no measuring)")
    args = ap.parse_args()

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown or not configs:
        fail(f"unknown --configs {', '.join(unknown) or '(none)'}; use some of {', '.join(CONFIGS)}")
    if args.rounds < 1 or args.students < 2 or args.min_s <= 0 or args.calm_s < 0:
        fail("--rounds must be >= 1, --students >= 2, --min-s > 0 and --calm-s >= 0")
    if args.load:
        try:
            saved = json.loads(Path(args.load).read_text(encoding="utf-8"))
            first, second = saved["campaigns"]
            rounds, students = int(saved["rounds"]), int(saved["students"])
            load, cpu, min_s, calm_s = saved.get("load_avg"), saved.get("cpu"), saved.get("min_s"), saved.get("calm_s")
        except (OSError, ValueError, KeyError, TypeError) as err:
            fail(f"--load {args.load}: not a file written by --save ({type(err).__name__}: {err})")
    else:
        import bench_transfer as bt
        from edgekd.agent.fingerprint import cpu_model
        from edgekd.latency.calibrate import export_untrained

        space = bt.SPACES[args.space]
        fit, held = space.fit_and_held(24)
        specs = (fit + held)[:args.students]
        work = ROOT / "runs" / "calibrate"
        arts = {s: export_untrained(s, space.shape, space.classes, "onnxruntime", "fp32", work) for s in specs}
        steps = {c: bt.sessions(arts, c, space) for c in configs}
        load = [round(x, 2) for x in os.getloadavg()]
        # each campaign measured exactly as bench_transfer measures
        first, second = (bt.timed_rounds(steps, args.rounds, args.min_s, space.min_count, args.calm_s,
                                         label=f"campaign {i} round") for i in (1, 2))
        load += [round(x, 2) for x in os.getloadavg()]
        rounds, students, cpu, min_s, calm_s = args.rounds, len(specs), cpu_model(), args.min_s, args.calm_s
        if args.save:
            from edgekd.fileio import atomic_write_json

            atomic_write_json(Path(args.save), {"campaigns": [first, second], "rounds": rounds, "students": students,
                                                "min_s": min_s, "calm_s": args.calm_s, "load_avg": load, "cpu": cpu})
    res = agreement(first, second, rounds)
    shown = [*sorted({1, 2, 3, 5, rounds} & set(range(1, rounds + 1))), "all"]
    print(f"\ntwo campaigns of {rounds} interleaved rounds ({min_s} s per model per round), {students} students: "
          f"share agreeing within ±10 % (±5 %) [worst ratio], estimates from the first R rounds")
    print(f"{'estimator':9s} {'config':10s} " + " ".join(f"{'R=' + str(r) if r != 'all' else '+calm passes':>19s}" for r in shown))
    for est in ESTIMATORS:
        for c in first:
            cells = [f"{res['repeat_within_10pct'][est][c][r]:4.0%} ({res['repeat_within_5pct'][est][c][r]:4.0%}) "
                     f"[{res['worst_ratio'][est][c][r]:.2f}]" for r in shown]
            print(f"{est:9s} {c:10s} " + " ".join(f"{x:>19s}" for x in cells))
    print(json.dumps({**res, "rounds": rounds, "min_s": min_s, "calm_s": calm_s, "students": students,
                      "load_avg": load, "cpu": cpu}))


if __name__ == "__main__":
    main()
