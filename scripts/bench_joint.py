"""The joint-deploy part of scripts/bench_scale.py (issue 14): `edgekd deploy` on this machine pinned to
ONNX Runtime fp32, then choosing (student, runtime, precision) jointly at the SAME budget and floor.

The pinned deploy runs first with the default budget (the teacher's p90 on ONNX Runtime fp32 / 5) and
floor (teacher - 1.5 points); the joint one takes that budget explicitly, so both answer the same
question. Both share the work dir (teacher, distilled students and exports are cached: the joint run
distills only what the pinned one did not) and a profiles dir of this machine alone (cold on the first
run: calibrations included; later runs reuse the profile). Returns the figures bench_scale prints:
`joint` and `pinned_ort_fp32` ({status, spec, runtime, precision, p90_ms, accuracy, params,
size_bytes}), `joint_rounds`, and why the choice mattered at this budget (`choice`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

KEYS = ("status", "spec", "runtime", "precision", "p90_ms", "accuracy", "params", "size_bytes", "resolution")


def _summary(report: dict[str, Any], resolution: int | None) -> dict[str, Any]:
    from edgekd.deploy.joint import size_bytes
    from edgekd.models.spec import parse_spec

    c = report.get("chosen") or {}
    if c.get("spec") and ":" in str(c["spec"]):  # a student of a --space carries its own resolution
        resolution = int(float(parse_spec(c["spec"])[1].get("resolution", 0) or 0)) or resolution
    m = c.get("measured") or {}
    pct = f"p{report['percentile']}_ms"
    return {"status": report["status"], "spec": c.get("spec"), "runtime": report.get("runtime"),
            "precision": report.get("precision"), "p90_ms": m.get(pct), "accuracy": m.get("accuracy"),
            "params": c.get("params"),
            "size_bytes": size_bytes(c["params"], report["precision"]) if c.get("params") else None,
            "resolution": resolution, "budget_ms": report["budget_ms"], "min_accuracy": report["min_accuracy"],
            "device_rounds": report["device_rounds"], "wall_s": report.get("wall_s")}


def run_joint(work: Path, *, formats: str = "auto", precisions: str = "auto", threads: int = 1, epochs: int = 15,
              data: str = "digits", image_size: int | None = None, budget_ms: float | None = None,
              min_s: float = 1.0, calibrate_count: int = 12, joint_calibrate_count: int = 6,
              space: str | None = None, teacher: str | None = None, percentile: int = 90,
              min_accuracy: float | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """`space` (a search space or grid file, e.g. ImageNet-scale students at >= 96 px) needs `budget_ms`:
    the deploy refuses a default budget timed at the data's size for students at their own."""
    from edgekd import api

    work = Path(work)
    common = dict(target="cpu", device="local", threads=threads, data=data, image_size=image_size,
                  profiles_dir=str(work / "profiles"), work_dir=str(work / "deploy"), epochs=epochs, min_s=min_s,
                  max_rounds=3, calibrate_count=calibrate_count, joint_calibrate_count=joint_calibrate_count,
                  space=space, teacher=teacher, percentile=percentile, min_accuracy=min_accuracy)
    t0 = time.perf_counter()
    log("== pinned: ONNX Runtime fp32")
    pinned = api.deploy(format="onnx", precision="fp32", budget_ms=budget_ms, output=str(work / "bundle-pinned"),
                        log=lambda m: log(f"  [pinned] {m}"), **common)
    log(f"== joint: formats {formats}, precisions {precisions}, at the pinned run's budget {pinned['budget_ms']:.4g} ms")
    joint = api.deploy(format=formats, precision=precisions, budget_ms=pinned["budget_ms"],
                       output=str(work / "bundle-joint"), log=lambda m: log(f"  [joint] {m}"), **common)
    resolution = image_size or (8 if data == "digits" else None)
    out = {"joint": _summary(joint, resolution), "pinned_ort_fp32": _summary(pinned, resolution),
           "joint_rounds": joint["device_rounds"], "seconds": round(time.perf_counter() - t0, 1)}
    views = (joint.get("candidates") or [[]])[-1]
    out["candidates"] = views
    ref = next((v for v in views if (v["runtime"], v["precision"]) == ("onnxruntime", "fp32")), None)
    won = next((v for v in views if v["status"] == "chosen"), None)
    if won is None:
        why = "the joint deploy chose nothing"
    elif (won["runtime"], won["precision"]) == ("onnxruntime", "fp32"):
        why = "ONNX Runtime fp32 won the joint choice too: at this budget the runtime/precision choice did not change it"
    elif ref is None or not ref.get("winner"):
        why = (f"no student meeting the floor was predicted within budget on ONNX Runtime fp32, "
               f"{won['winner']} on {won['runtime']}/{won['precision']} was")
    else:
        why = (f"{won['runtime']}/{won['precision']} holds {won['winner']} within budget at "
               f"{won['accuracy_per_mb']:.4g} val accuracy per MB vs ONNX Runtime fp32's best {ref['winner']} at "
               f"{ref['accuracy_per_mb']:.4g}")
    out["choice"] = why
    return out


def print_joint(res: dict[str, Any]) -> None:
    """The side-by-side table and the per-configuration candidates of the joint deploy's last round."""
    print(f"{'deploy':<16} {'status':<10} {'spec':<28} {'px':>3} {'runtime/precision':<20} {'params':>8} "
          f"{'MB':>7} {'p90 ms':>9} {'accuracy':>9} {'rounds':>6}")
    for name in ("pinned_ort_fp32", "joint"):
        r = res[name]
        p90 = f"{r['p90_ms']:.4g}" if r["p90_ms"] else "-"
        acc = f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-"
        size = f"{r['size_bytes'] / 1e6:.4f}" if r["size_bytes"] else "-"
        print(f"{name:<16} {r['status']:<10} {str(r['spec']):<28} {r['resolution'] or '-':>3} "
              f"{str(r['runtime']) + '/' + str(r['precision']):<20} {r['params'] or 0:>8,} {size:>7} {p90:>9} {acc:>9} "
              f"{r['device_rounds']:>6}")
    print(f"budget p90 {res['joint']['budget_ms']:.4g} ms, floor {res['joint']['min_accuracy']:.2%}; why the choice "
          f"matters here: {res['choice']}")
    for v in res["candidates"]:
        who = (f"{v['winner']} ({v['params']:,} params, val {v['val_accuracy']:.2%}, {v['latency_source']} "
               f"{v['latency_ms']:.4g} ms)" if v["winner"] else "-")
        print(f"  {v['runtime'] + '/' + v['precision']:<20} {v['within_budget']:>3} within budget  {who}  "
              f"{v['status']}: {v['why']}")
        for miss in v.get("missed") or []:
            print(f"      tried first: {miss}")
