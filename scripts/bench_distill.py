"""Issue 13: does distillation pay on real data? Teacher + CE student + KD student over seeds.

    .venv/bin/python scripts/bench_distill.py                          (digits at 32x32)
    .venv/bin/python scripts/bench_distill.py --data ../shared/data/mnist10k.npz
    .venv/bin/python scripts/bench_distill.py --data DATA --sweep      (validation comparison of recipes)

--data: `digits`, an .npz (x, y) or an image folder, any number of classes. Labels must be 0..K-1
with every class present (edgekd's loader refuses anything else with a one-line error, exit 2).

1. Teacher: `edgekd teacher` defaults (or --teacher PATH). Trained once and cached under
   WORK/teachers/KEY (key: data content fingerprint + teacher config + seeds), so reruns reuse it.
2. Students, per seed, for the default student and one ~4x larger: CE (hard labels) and KD with the
   default recipe (`edgekd.config.DEFAULT_RECIPE`, or --method), same optimizer, epochs, seed and
   augmentation: they differ only in the loss. Each student run is cached under WORK/runs/KEY too
   (key: teacher file hash, data fingerprint, full run config with the shift in pixels and the
   canonical student spec), so a rerun only trains what changed.
   Accuracies are of the last epoch (`keep: last`); val is what recipes are chosen on, test is what
   is reported. Gap recovered = (KD - CE) / (teacher - CE) on test, from the means; its spread is the
   std over seeds of the per-seed gap recovered (KD and CE of the same seed).
3. Epoch cost: CE, the recipe with cached soft targets, and the recipe with the teacher run online
   on every batch, trained side by side (epochs interleaved, one thread); x CE = median over rounds
   of epoch time / the same round's CE epoch time, first round dropped.
Prints a table, then one JSON line (the last line).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

BIG_STUDENT = "cnn:width=12,depth=4"  # ~4x the default student's parameters (34.6k vs 8.9k)
TRAIN = {"lr": 0.01, "batch_size": 64, "threads": 1, "keep": "last"}


def run_key(teacher_identity: str | None, fingerprint: str, cfg: dict[str, Any], image_hw: tuple[int, int]) -> str:
    """Key of a student run: what it does, not how it was spelled. The augmentation enters with its
    shift in pixels at this data's image size (a recipe's relative `shift_fraction` resolved), so a
    run asked for as `shift: 2` and one asked for as `shift_fraction: 0.075` at 28 px share a key;
    the student spec enters in its canonical spelling."""
    from edgekd.config import AugmentConfig
    from edgekd.fileio import sha256_bytes

    from edgekd.models.spec import canonical_spec

    body = {k: v for k, v in cfg.items() if k not in ("output", "cache_dir", "teacher")}
    body["student"] = canonical_spec(body["student"])  # cnn:width=8,depth=3 is cnn:depth=3,width=8
    aug = dict(body.get("augment") or {})
    if aug:
        aug["shift"] = AugmentConfig(**aug).shift_pixels(*image_hw)
        aug.pop("shift_fraction", None)
        body["augment"] = aug
    blob = json.dumps({"teacher": teacher_identity, "data": fingerprint, "cfg": body}, sort_keys=True, default=str)
    return sha256_bytes(blob.encode("utf-8"))[:16]


class Runner:
    """Train (or reuse) student runs under WORK/runs/KEY."""

    def __init__(self, work: Path, data: dict[str, Any], teacher: str, epochs: int, log=None) -> None:
        from edgekd.config import config_from_dict, config_to_dict
        from edgekd.data import load_dataset
        from edgekd.distill.teachers import load_teacher

        self.work, self.data, self.teacher, self.epochs, self.log = work, data, teacher, epochs, log
        self.teacher_identity = load_teacher(teacher).identity
        ds = load_dataset(data["source"], image_size=data.get("image_size"), seed=data.get("seed", 0))
        self.fingerprint = ds.fingerprint
        self.image_hw = tuple(ds.input_shape[1:3]) if len(ds.input_shape) == 3 else (0, 0)
        self._resolve = lambda raw: config_to_dict(config_from_dict(raw))

    def config(self, student: str, recipe: dict[str, Any], seed: int, ce: bool) -> dict[str, Any]:
        losses = [{"key": "ce"}] if ce else recipe["losses"]
        aug = {"shift": 0, "copies": 0, "draws": 0, "seed": 0, **recipe["augment"]}
        return self._resolve({"teacher": None if ce else self.teacher, "student": student, "data": self.data,
                              "losses": losses, "augment": aug, "train": {**TRAIN, "epochs": self.epochs, "seed": seed},
                              "cache_dir": str(self.work / "cache"), "output": "-"})

    def run(self, cfg: dict[str, Any]) -> dict[str, Any]:
        from edgekd import api

        key = run_key(None if cfg["teacher"] is None else self.teacher_identity, self.fingerprint, cfg, self.image_hw)
        out = self.work / "runs" / key
        summary = out / "summary.json"
        if summary.is_file():
            result = json.loads(summary.read_text(encoding="utf-8"))
            result["run_cache"] = "hit"
            return result
        resume = (out / "checkpoints" / "last.pt").is_file()
        t0 = time.perf_counter()
        result = api.distill({**cfg, "output": str(out)}, resume=resume, progress=False)
        if self.log:
            self.log(f"  trained {cfg['student']} {'+'.join(e['key'] for e in cfg['losses'])} seed {cfg['train']['seed']}: "
                     f"val {result['val_acc_last']:.4f} test {result['test_acc_last']:.4f} ({time.perf_counter() - t0:.0f}s)")
        result["run_cache"] = "miss"
        return result


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def epoch_costs(runner: Runner, student: str, recipe: dict[str, Any], rounds: int,
                online: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """CE, recipe (cached soft targets) and recipe (teacher online) side by side: per round one epoch
    of each, order alternating. (median epoch s, median over rounds of epoch s / that round's CE)."""
    import torch

    from edgekd.config import config_from_dict
    from edgekd.distill.run import prepare_run

    torch.set_num_threads(1)
    variants = {"ce": (True, False), "kd_cached": (False, False), "kd_online": (False, True)}
    if not online:
        del variants["kd_online"]
    prepared = {}
    for name, (ce, online) in variants.items():
        raw = runner.config(student, recipe, 0, ce)
        prepared[name] = prepare_run(config_from_dict({**raw, "online": online}), write=False)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for epoch in range(1, rounds + 1):
        order = list(variants) if epoch % 2 else list(reversed(variants))
        for name in order:
            times[name].append(prepared[name].trainer.train_epoch(epoch)["epoch_time_s"])
    seconds = {name: statistics.median(ts[1:]) for name, ts in times.items()}
    ratios = {name: statistics.median(t / c for t, c in zip(ts[1:], times["ce"][1:])) for name, ts in times.items()}
    return seconds, ratios


def sweep(runner: Runner, methods: list[str], students: list[str], seeds: int) -> None:
    """Val accuracy (last epoch) of CE and each recipe; test is not read. CE runs once per augmentation."""
    from edgekd.config import recipe

    print(f"{'student':22s} {'method':18s} {'val acc (last epoch)':>22s}  per seed")
    for student in students:
        done_ce: set[str] = set()
        for method in methods:
            r = recipe(method)
            aug = json.dumps(r["augment"], sort_keys=True)
            arms = [] if aug in done_ce else [(f"ce {aug if r['augment'] else '(no aug)'}", True)]
            done_ce.add(aug)
            for label, ce in arms + [(method, False)]:
                vals = [runner.run(runner.config(student, r, s, ce))["val_acc_last"] for s in range(seeds)]
                m, sd = mean_std(vals)
                print(f"{student:22s} {label:18s} {m:>13.4f} ± {sd:.4f}  {' '.join(f'{v:.4f}' for v in vals)}", flush=True)


def early_stop_effect(runs: list[dict[str, Any]], patience: int) -> dict[str, Any]:
    """What `--patience P` would have done to these runs, replayed from their val curves: the epoch
    each would stop at, and the val accuracy it would keep (best-on-val so far) vs the last epoch's."""
    stops, kept, last = [], [], []
    for r in runs:
        curve = r["val_acc_per_epoch"]
        best, best_i, stop = -1.0, 0, len(curve)
        for i, v in enumerate(curve):
            if v > best:
                best, best_i = v, i
            elif i - best_i >= patience:
                stop = i + 1
                break
        stops.append(stop)
        kept.append(max(curve[:stop]))
        last.append(curve[-1])
    return {"patience": patience, "stop_epochs": stops, "stopped_early": sum(s < len(r["val_acc_per_epoch"]) for s, r in zip(stops, runs)),
            "val_kept_mean": statistics.mean(kept), "val_last_mean": statistics.mean(last)}


def student_rows(runner: Runner, student: str, recipe: dict[str, Any], seeds: int, teacher_acc: float) -> dict[str, Any]:
    ce = [runner.run(runner.config(student, recipe, s, True)) for s in range(seeds)]
    kd = [runner.run(runner.config(student, recipe, s, False)) for s in range(seeds)]
    ce_test, kd_test = [r["test_acc_last"] for r in ce], [r["test_acc_last"] for r in kd]
    per_seed_gap = [(k - c) / (teacher_acc - c) if teacher_acc > c + 1e-9 else float("nan") for k, c in zip(kd_test, ce_test)]
    ce_mean, ce_std = mean_std(ce_test)
    kd_mean, kd_std = mean_std(kd_test)
    gap = (kd_mean - ce_mean) / (teacher_acc - ce_mean) if teacher_acc > ce_mean + 1e-9 else None  # no gap: None
    return {
        "student": student, "params": kd[0]["params"], "macs": kd[0]["macs"],
        "ce_acc_mean": ce_mean, "ce_acc_std": ce_std, "kd_acc_mean": kd_mean, "kd_acc_std": kd_std,
        "ce_val_mean": statistics.mean(r["val_acc_last"] for r in ce),
        "kd_val_mean": statistics.mean(r["val_acc_last"] for r in kd),
        "ce_acc_per_seed": ce_test, "kd_acc_per_seed": kd_test,
        "gap_recovered": gap, "gap_recovered_per_seed": [g if g == g else None for g in per_seed_gap],
        # a seed whose CE student already matches the teacher has no gap to recover (nan): left out
        "gap_recovered_std": statistics.stdev(finite) if len(finite := [g for g in per_seed_gap if g == g]) > 1 else 0.0,
        "kd_beats_ce_every_seed": all(k > c for k, c in zip(kd_test, ce_test)),
        "kd_epoch_s_median": statistics.median(t for r in kd for t in r["epoch_times_s"]),
        "ce_epoch_s_median": statistics.median(t for r in ce for t in r["epoch_times_s"]),
        "early_stop": [early_stop_effect(ce + kd, p) for p in (5, 10)],
        # one-time teacher pass over every view (the run that filled the cache; None if all were hits)
        "teacher_pass_s": next((r["teacher_logits_time_s"] for r in kd if r["soft_target_cache"].get("train") == "miss"), None),
        "soft_target_cache": [r["soft_target_cache"].get("train") for r in kd],
        "run_cache": [r["run_cache"] for r in ce + kd],
    }


def main() -> int:
    from edgekd.config import DEFAULT_RECIPE, RECIPES, recipe
    from edgekd.errors import EdgeKDError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits", help="digits (default), an .npz or an image folder")
    parser.add_argument("--image-size", type=int, default=None, help="resample to NxN (default: 32 for digits, native otherwise)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: the library default)")
    parser.add_argument("--method", default=DEFAULT_RECIPE, choices=sorted(RECIPES), help="the KD recipe to measure")
    parser.add_argument("--big-student", default=BIG_STUDENT, help="the larger student ('' to skip)")
    parser.add_argument("--big-seeds", type=int, default=None, help="seeds for the larger student (default: --seeds)")
    parser.add_argument("--timing-rounds", type=int, default=4, help="interleaved epochs per variant for the cost table")
    parser.add_argument("--no-online-timing", action="store_true",
                        help="skip the online-teacher epochs in the cost table (each is a full teacher pass)")
    parser.add_argument("--teacher", default=None, help="use this teacher (.pt/.onnx) instead of the cached default one")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--teacher-seed", type=int, default=0)
    parser.add_argument("--work", default=str(ROOT / ".edgekd-cache" / "bench-distill"), help="teacher/run cache")
    parser.add_argument("--sweep", default=None, help="comma-separated recipes: print their val accuracy and stop")
    args = parser.parse_args()
    try:
        return bench(args, recipe, DEFAULT_RECIPE)
    except EdgeKDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def bench(args: argparse.Namespace, recipe, default_recipe: str) -> int:
    from bench_teacher_cache import cached_teacher

    from edgekd.config import TrainConfig
    from edgekd.models import DEFAULT_STUDENT

    t0 = time.perf_counter()
    work = Path(args.work)
    image_size = args.image_size if args.image_size is not None else (32 if args.data == "digits" else None)
    data = {"source": args.data, "image_size": image_size, "seed": args.split_seed}
    epochs = args.epochs or TrainConfig().epochs
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.teacher:
        teacher = args.teacher
        t_sum = {"student": teacher, "params": None, "test_acc": None, "teacher_cache": "given"}
    else:
        t_sum = cached_teacher(args.data, image_size=image_size, split_seed=args.split_seed,
                               teacher_seed=args.teacher_seed, work=work, log=log)
        teacher = t_sum["student_path"]
    runner = Runner(work, data, teacher, epochs, log=log)
    students = [DEFAULT_STUDENT] + ([args.big_student] if args.big_student else [])
    if args.sweep:
        sweep(runner, [m.strip() for m in args.sweep.split(",") if m.strip()], students, args.seeds)
        return 0

    r = recipe(args.method)
    probe_run = runner.run(runner.config(DEFAULT_STUDENT, r, 0, False))
    teacher_acc = probe_run["teacher_acc"]
    teacher_params = probe_run["teacher_params"]
    rows = []
    for student in students:
        seeds = args.seeds if student == DEFAULT_STUDENT or args.big_seeds is None else args.big_seeds
        rows.append(student_rows(runner, student, r, seeds, teacher_acc))
    costs, ratios = epoch_costs(runner, DEFAULT_STUDENT, r, args.timing_rounds, online=not args.no_online_timing)

    d = rows[0]
    print(f"data     {args.data} ({'x'.join(map(str, [image_size] * 2)) if image_size else 'native size'}, split seed "
          f"{args.split_seed})   student epochs {epochs}, lr {TRAIN['lr']}, last-epoch accuracies")
    print(f"recipe   {args.method}: losses {r['losses']}  augment {r['augment'] or 'none'}")
    print(f"teacher  {t_sum['student']}  {teacher_params:,} params  test acc {teacher_acc:.4f}  (cache {t_sum['teacher_cache']})")
    print(f"{'student':22s} {'params':>7s} {'ratio':>6s} {'loss':5s} {'val acc':>9s} {'test acc (mean ± std)':>22s}  per seed")
    for row in rows:
        ratio = row["params"] / teacher_params
        for name, key in (("ce", "ce"), ("kd", "kd")):
            per = " ".join(f"{v:.4f}" for v in row[f"{key}_acc_per_seed"])
            print(f"{row['student']:22s} {row['params']:>7,d} {ratio:>6.3f} {name:5s} {row[f'{key}_val_mean']:>9.4f} "
                  f"{row[f'{key}_acc_mean']:>12.4f} ± {row[f'{key}_acc_std']:.4f}  {per}")
        gap_text = "- (CE already matches the teacher)" if row["gap_recovered"] is None else f"{row['gap_recovered']:.3f}"
        print(f"{'':22s} gap recovered {gap_text} ± {row['gap_recovered_std']:.3f} (per seed "
              f"{', '.join('-' if g is None else f'{g:.2f}' for g in row['gap_recovered_per_seed'])}); KD > CE on every seed: "
              f"{row['kd_beats_ce_every_seed']}")
    for row in rows:
        for es in row["early_stop"]:
            print(f"early stop, patience {es['patience']:2d} ({row['student']}, replayed on the val curves): "
                  f"{es['stopped_early']}/{len(es['stop_epochs'])} runs stop before the last epoch (at {es['stop_epochs']}); "
                  f"val kept {es['val_kept_mean']:.4f} vs last epoch {es['val_last_mean']:.4f}")
    print(f"{'epoch cost (' + str(args.timing_rounds - 1) + ' rounds, default student)':44s} {'median s':>9s} {'x CE':>6s}")
    for name in costs:
        print(f"{name:44s} {costs[name]:>9.3f} {ratios[name]:>6.3f}")
    if d["teacher_pass_s"] is not None:
        print(f"one-time teacher pass over the train views (cached, shared by every seed and student): "
              f"{d['teacher_pass_s']:.1f} s = {d['teacher_pass_s'] / costs['ce']:.1f} CE epochs")
    result = {
        "data": args.data, "image_size": image_size, "split_seed": args.split_seed, "teacher_seed": args.teacher_seed,
        "teacher": t_sum["student"], "teacher_acc": teacher_acc, "teacher_params": teacher_params,
        "kd_method": args.method, "recipe": r, "epochs": epochs, "accuracy": "last epoch, test split",
        "seeds": args.seeds, "student": d["student"], "student_params": d["params"],
        "student_params_ratio": d["params"] / teacher_params,
        "ce_acc_mean": d["ce_acc_mean"], "ce_acc_std": d["ce_acc_std"], "kd_acc_mean": d["kd_acc_mean"],
        "kd_acc_std": d["kd_acc_std"], "ce_acc_per_seed": d["ce_acc_per_seed"], "kd_acc_per_seed": d["kd_acc_per_seed"],
        "gap_recovered": d["gap_recovered"], "gap_recovered_std": d["gap_recovered_std"],
        "kd_beats_ce_every_seed": d["kd_beats_ce_every_seed"],
        "kd_cached_epoch_ratio": ratios["kd_cached"], "kd_online_epoch_ratio": ratios.get("kd_online"),
        "ce_epoch_s": costs["ce"], "teacher_pass_s": d["teacher_pass_s"],
        "students": [{**row, "params_ratio": row["params"] / teacher_params} for row in rows],
        "wall_s": time.perf_counter() - t0,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
