"""Issue 2 §5: does distillation pay on `digits`, and what does a KD epoch cost?

    .venv/bin/python scripts/bench_distill.py [--seeds 3] [--work DIR]

1. Trains the default teacher (`edgekd teacher` defaults) and reports its test accuracy.
2. Trains one small student (<= 1/10 of the teacher's parameters) per seed twice on the *same*
   inputs (the train split plus fixed shifted views, `augment`): once on hard labels (`ce`), once
   with Hinton KD from the teacher's cached soft targets. Last-epoch test accuracy, mean ± std over
   seeds; gap recovered = (KD − CE) / (teacher − CE). A CE run without the shifted views is reported
   too, so the table shows whether the views alone explain anything.
3. Epoch cost: CE, KD from the soft-target cache and KD with the teacher online, trained side by
   side (epochs interleaved, same process, one thread each), medians over epochs.
Prints a table, then one JSON line (last line).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STUDENT = "mlp:hidden=32x2"
RECIPE = {"epochs": 10, "lr": 0.01, "batch_size": 64, "threads": 1}
AUGMENT = {"shift": 1, "copies": 2, "seed": 0}
KD = {"key": "kd", "kwargs": {"temperature": 4.0, "alpha": 0.5}}


def run(api, work: Path, name: str, teacher: str | None, losses: list, seed: int, augment: dict | None = None) -> dict:
    cfg = {"teacher": teacher, "student": STUDENT, "losses": losses, "train": {**RECIPE, "seed": seed},
           "augment": augment or {}, "cache_dir": str(work / "cache"), "output": str(work / name)}
    return api.distill(cfg, progress=False)


def epoch_costs(teacher: str, work: Path, epochs: int) -> dict[str, float]:
    """Median train-epoch seconds of CE, cached KD and online KD, epochs interleaved."""
    import torch

    from edgekd.config import config_from_dict
    from edgekd.distill.run import prepare_run

    torch.set_num_threads(1)
    variants = {"ce": ([{"key": "ce"}], False), "kd_cached": ([KD], False), "kd_online": ([KD], True)}
    prepared = {}
    for name, (losses, online) in variants.items():
        cfg = config_from_dict({"teacher": teacher, "student": STUDENT, "losses": losses, "online": online,
                                "train": RECIPE, "augment": AUGMENT, "cache_dir": str(work / "cache"),
                                "output": str(work / f"timing-{name}")})
        prepared[name] = prepare_run(cfg, write=False)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for epoch in range(1, epochs + 1):
        order = list(variants) if epoch % 2 else list(reversed(variants))  # no fixed position advantage
        for name in order:
            times[name].append(prepared[name].trainer.train_epoch(epoch)["epoch_time_s"])
    return {name: statistics.median(ts[1:]) for name, ts in times.items()}  # first epoch = warm-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--timing-epochs", type=int, default=9)
    parser.add_argument("--work", default=None, help="keep runs here (default: a temp dir)")
    args = parser.parse_args()

    from edgekd import api

    work = Path(args.work or tempfile.mkdtemp(prefix="bench-distill-"))
    t0 = time.perf_counter()
    teacher_summary = api.train_teacher(api.teacher_config(output=str(work / "teacher"), threads=1), progress=False)
    teacher = teacher_summary["student_path"]
    teacher_acc = teacher_summary["test_acc"]

    rows: dict[str, list[dict]] = {"ce": [], "kd": [], "ce_no_aug": []}
    for seed in range(args.seeds):
        rows["ce"].append(run(api, work, f"ce-{seed}", None, [{"key": "ce"}], seed, AUGMENT))
        rows["kd"].append(run(api, work, f"kd-{seed}", teacher, [KD], seed, AUGMENT))
        rows["ce_no_aug"].append(run(api, work, f"ce-noaug-{seed}", None, [{"key": "ce"}], seed))

    def stats(name: str) -> tuple[float, float]:
        accs = [r["test_acc_last"] for r in rows[name]]
        return statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0

    kd_mean, kd_std = stats("kd")
    ce_mean, ce_std = stats("ce")
    noaug_mean, noaug_std = stats("ce_no_aug")
    gap = teacher_acc - ce_mean
    recovered = (kd_mean - ce_mean) / gap if gap > 0 else float("nan")
    params = rows["kd"][0]["params"]
    ratio = params / teacher_summary["params"]
    costs = epoch_costs(teacher, work, args.timing_epochs)
    cache_first = rows["kd"][0]["soft_target_cache"].get("train")
    cache_later = [r["soft_target_cache"].get("train") for r in rows["kd"][1:]]

    print(f"teacher  {teacher_summary['student']}  {teacher_summary['params']:,} params  test acc {teacher_acc:.4f}")
    print(f"student  {STUDENT}  {params:,} params  ({ratio:.4f} of the teacher)  recipe {RECIPE}  augment {AUGMENT}")
    print(f"{'run':28s} {'test acc (last epoch)':>24s}")
    print(f"{'CE, hard labels':28s} {ce_mean:>14.4f} ± {ce_std:.4f}")
    print(f"{'KD T=4 a=0.5 (cached)':28s} {kd_mean:>14.4f} ± {kd_std:.4f}")
    print(f"{'CE, no shifted views':28s} {noaug_mean:>14.4f} ± {noaug_std:.4f}")
    print(f"gap recovered by KD: {recovered:.3f}   soft-target cache: first run {cache_first}, later runs {cache_later}")
    print(f"{'epoch cost (median s)':28s} {'seconds':>10s} {'x CE':>8s}")
    for name, value in costs.items():
        print(f"{name:28s} {value:>10.4f} {value / costs['ce']:>8.3f}")
    result = {
        "teacher_acc": teacher_acc,
        "teacher_params": teacher_summary["params"],
        "student": STUDENT,
        "student_params": params,
        "student_params_ratio": ratio,
        "kd_acc_mean": kd_mean,
        "kd_acc_std": kd_std,
        "ce_acc_mean": ce_mean,
        "ce_acc_std": ce_std,
        "ce_no_augment_acc_mean": noaug_mean,
        "ce_no_augment_acc_std": noaug_std,
        "gap_recovered": recovered,
        "kd_cached_epoch_ratio": costs["kd_cached"] / costs["ce"],
        "kd_online_epoch_ratio": costs["kd_online"] / costs["ce"],
        "ce_epoch_s": costs["ce"],
        "seeds": args.seeds,
        "cache_hits_after_first": cache_later.count("hit"),
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
