"""Issue 17: `edgekd deploy` with default flags on real data a user would bring, three times in a row.

Runs, as real subprocesses of the CLI, three consecutive

    edgekd deploy --target cpu --data <real .npz> --profiles-dir <P> --work-dir <W> -o <B> --json

with one profiles dir and one work dir shared by the three runs (as a user re-running it would),
starting from an empty profiles dir. Prints a table (status, device rounds, wall time, the budget and
where it came from, the chosen student) and, last, one JSON line:

    deploy_status (of each run), device_rounds, wall_s, budget_ms_runs, budget_max_min_ratio.

Targets (issue 17): verified, <= 2 device rounds, budget max/min over the three runs <= 1.15.

    .venv/bin/python scripts/bench_deploy_real.py [--data ../shared/data/mnist10k.npz] [--runs 3]
      [--work-dir DIR]   # keep the work dir (teacher, students) between invocations of this script
    .venv/bin/python scripts/bench_deploy_real.py --budget-only --work-dir DIR
      # only the default budget, as deploy derives it, three times: each time on a FRESH profile (how
      # robust one teacher measurement is) and three times on ONE profile (what consecutive deploys see);
      # the teacher is the one deploy trained in DIR (or is trained there first)
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

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist10k.npz"


def run_once(data: Path, work: Path, profiles: Path, bundle: Path, cache: Path, i: int) -> tuple[dict, float, str]:
    env = dict(os.environ, EDGEKD_CACHE=str(cache))
    cmd = [sys.executable, "-m", "edgekd", "deploy", "--target", "cpu", "--data", str(data),
           "--profiles-dir", str(profiles), "--work-dir", str(work), "-o", str(bundle), "--json"]
    print(f"\n$ edgekd deploy --target cpu --data {data} --profiles-dir {profiles} --json -o {bundle}  (run {i})",
          flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    for line in proc.stderr.splitlines():
        if line.startswith("[") or line.startswith("  "):
            print("  " + line, flush=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"deploy run {i} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout), wall, proc.stderr


def budget_only(data: Path, work: Path, runs: int) -> None:
    """The default budget alone, derived exactly as `edgekd deploy` derives it (edgekd.deploy.budget)."""
    sys.path.insert(0, str(ROOT))
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.bench.devices import open_device
    from edgekd.deploy.budget import measure_teacher, recorded_teacher, reused_timing
    from edgekd.data import load_dataset
    from edgekd.deploy.config import DeployConfig
    from edgekd.deploy.stages import ensure_teacher, export_for
    from edgekd.fileio import sha256_file
    from edgekd.device.profiles import Profile, record_measurements

    from edgekd.device.targets import load_target

    cfg = DeployConfig(target="cpu", data=str(data), work_dir=str(work), precision="fp32")
    threads = load_target("cpu").default_threads  # what deploy times the teacher with
    ds = load_dataset(cfg.data, seed=cfg.seed)
    teacher, _, spec = ensure_teacher(cfg, ds, lambda m: print("  " + m, flush=True))
    sha = sha256_file(teacher)
    art = export_for(cfg, teacher, work / "artifacts" / f"teacher-{sha[:12]}", "onnx", threads)
    eval_npz = write_eval_npz(work / f"eval-{ds.fingerprint[:12]}.npz", ds.test.x, ds.test.y, normalized=True)
    data_fp, metric = f"{ds.fingerprint}:test", "p90_ms"
    dev = open_device("local", None)
    out: dict[str, list] = {"fresh": [], "consecutive": [], "consecutive_reused": [], "fresh_sure": []}
    try:
        with tempfile.TemporaryDirectory(prefix="edgekd-budget-") as tmp:
            for i in range(runs):  # a fresh, empty profile each time
                _, m, timing = measure_teacher(dev, art, spec=spec, ckpt=teacher, eval_npz=eval_npz, data_fp=data_fp,
                                               threads=threads, min_s=cfg.min_s, metric=metric)
                out["fresh"].append(m.latency[metric] / cfg.speedup_goal)
                out["fresh_sure"].append(timing.sure)
                print(f"  fresh profile {i + 1}: budget {out['fresh'][-1]:.4g} ms; {timing.how_sure(metric)}", flush=True)
            path = Path(tmp) / "one.yaml"
            for i in range(runs):  # one profile, as consecutive deploys
                prof = Profile.load(path) if path.exists() else None
                m = recorded_teacher(prof, sha, fmt="onnx", precision="fp32", threads=threads, data_fp=data_fp,
                                     metric=metric)
                timing = reused_timing(m, metric) if m is not None else None
                if timing is None or not timing.sure:
                    _, m, timing = measure_teacher(dev, art, spec=spec, ckpt=teacher, eval_npz=eval_npz,
                                                   data_fp=data_fp, threads=threads, min_s=cfg.min_s, metric=metric,
                                                   previous=m)
                    record_measurements(path, [m], device=dev.fingerprint())
                out["consecutive"].append(m.latency[metric] / cfg.speedup_goal)
                out["consecutive_reused"].append(timing.reused)
                print(f"  one profile, run {i + 1}: budget {out['consecutive'][-1]:.4g} ms; {timing.how_sure(metric)}",
                      flush=True)
    finally:
        dev.close()
    load = os.getloadavg()
    ratio = {k: max(v) / min(v) for k, v in out.items() if k in ("fresh", "consecutive")}
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'profile':<12} {'budget ms per run':<40} max/min")
    for k in ("fresh", "consecutive"):
        print(f"{k:<12} {', '.join(f'{v:.4g}' for v in out[k]):<40} {ratio[k]:.3f}")
    print(json.dumps({"data": str(data), "teacher": spec, "budget_ms_runs": out["consecutive"],
                      "budget_max_min_ratio": ratio["consecutive"], "reused": out["consecutive_reused"],
                      "budget_ms_fresh_profiles": out["fresh"], "fresh_max_min_ratio": ratio["fresh"],
                      "fresh_sure": out["fresh_sure"], "load_avg": [round(v, 2) for v in load]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="real image .npz (x, y)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work-dir", default=None, help="work dir kept between invocations (default: a fresh temp dir)")
    ap.add_argument("--budget-only", action="store_true", help="only the default budget, fresh vs one profile")
    args = ap.parse_args()
    data = Path(args.data).resolve()
    if not data.is_file():
        raise SystemExit(f"{data} not found; pass --data with a real image .npz")
    if args.budget_only:
        if not args.work_dir:
            raise SystemExit("--budget-only needs --work-dir (where deploy trained, or will train, the teacher)")
        budget_only(data, Path(args.work_dir).resolve(), args.runs)
        return
    with tempfile.TemporaryDirectory(prefix="edgekd-deploy-real-") as tmp:
        root = Path(tmp)
        work = Path(args.work_dir).resolve() if args.work_dir else root / "work"
        cache = work / "cache"
        profiles = root / "profiles"  # empty at the first run, shared by the runs that follow
        rows = []
        for i in range(1, args.runs + 1):
            report, wall, _ = run_once(data, work, profiles, root / f"bundle{i}", cache, i)
            chosen = report.get("chosen") or {}
            measured = chosen.get("measured") or {}
            rows.append({
                "run": i, "status": report["status"], "device_rounds": report["device_rounds"],
                "wall_s": round(wall, 1), "budget_ms": report["budget_ms"],
                "budget_source": report.get("budget_source"), "chosen": chosen.get("spec"),
                "chosen_params": chosen.get("params"),
                "measured_p90_ms": measured.get("p90_ms"), "test_accuracy": measured.get("accuracy"),
                "teacher_accuracy": (report.get("teacher") or {}).get("accuracy"),
                "teacher_rounds_ms": (report.get("teacher") or {}).get("rounds_ms"),
                "distilled": len(report.get("distilled") or {}),
                "latency_model_cv_median": (report.get("latency_model") or {}).get("median_abs_rel"),
                "status_note": report.get("status_note"),
            })
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'run':>3}  {'status':<10} {'rounds':>6} {'wall s':>7} {'budget ms':>10} {'distilled':>9}  chosen")
    for r in rows:
        acc = f" test {r['test_accuracy']:.2%}" if r["test_accuracy"] is not None else ""
        print(f"{r['run']:>3}  {r['status']:<10} {r['device_rounds']:>6} {r['wall_s']:>7.1f} {r['budget_ms']:>10.4g} "
              f"{r['distilled']:>9}  {r['chosen'] or '-'}{acc}")
        print(f"     budget: {r['budget_source']}")
        if r["status"] != "verified":
            print("     " + str(r["status_note"]).replace("\n", "\n     "))
    budgets = [r["budget_ms"] for r in rows]
    print(json.dumps({
        "data": str(data), "runs": len(rows),
        "deploy_status": [r["status"] for r in rows],
        "device_rounds": [r["device_rounds"] for r in rows],
        "wall_s": [r["wall_s"] for r in rows],
        "budget_ms_runs": budgets,
        "budget_max_min_ratio": max(budgets) / min(budgets) if budgets and min(budgets) > 0 else None,
        "teacher_rounds_ms": rows[0]["teacher_rounds_ms"] if rows else None,
        "chosen": [r["chosen"] for r in rows],
        "test_accuracy": [r["test_accuracy"] for r in rows],
        "teacher_test_accuracy": rows[0]["teacher_accuracy"] if rows else None,
        "latency_model_cv_median": rows[-1]["latency_model_cv_median"] if rows else None,
        "load_avg": [round(v, 2) for v in load],
    }))


if __name__ == "__main__":
    main()
