"""What issue 10 must measure: few-shot transfer of a latency model to another device, a deploy that
starts from a foreign profile, and README command 1 — printed as tables and, last, one JSON line.

Devices: pairs of genuinely different "devices" reachable on one machine, each with its own fitted
model (every model below is measured here, in this process, in interleaved rounds, with the speed
anchor timed in bursts alongside; each model keeps its least-disturbed round by the anchor, rescaled
to the run's anchor floor when it was clearly slowed, as `edgekd profile calibrate` does):

    (a) ort-t1 -> ort-t2        ONNX Runtime 1 intra-op thread vs 2
    (b) ort-noopt -> ort-t1     ONNX Runtime graph optimizations disabled vs enabled (1 thread)
    (c) openvino -> ort-t1      OpenVINO vs ONNX Runtime (1 thread)
    (d) committed -> deploy's   profiles/amd-epyc-x86_64-2c.yaml (another machine, its model of ORT
                                default threads) vs this one at what `edgekd deploy --target cpu`
                                runs (ONNX Runtime, the cpu target's default threads: 1 -> ort-t1)

For each pair the source model (fitted on the source's `--count` untrained students; for (d) the
committed profile's own model) is adapted with k = 0, 1, 3, 5, 10 measurements of the target
(random calibration students, `--draws` draws) by each method of `edgekd.latency.transfer`, and
predicts the held-out search-space students measured on the target: the share within ±10 % of
their measured p50. The target's own full calibration (fitted on all `--count`) is the reference.

`--space micro` (default): the 26 students the default deploy searches (8x8 digits, 6-200 us), where
a runtime's per-call overhead is most of the time and a shared VM's noise caps what any model can
predict. `--space real`: the 30 students of `edgekd deploy --space real` (MobileNetV2/V3,
EfficientNet-lite, ResNet-10/18/34 at 96-260 px, ms), calibrated on `--count` untrained students
around them; pairs (a)-(c) only (the committed profile models the micro space) and no deploys.

Then `edgekd deploy --target cpu` as real subprocesses (cached teacher in runs/deploy):
  foreign_deploy    profiles dir holding only a foreign profile built from this run: the
                    `--foreign-source` configuration's measurements of the calibration students
                    (default ort-noopt: graph optimizations off, 1 thread), fitted as the model of
                    what deploy runs (ORT, the cpu target's default threads) and recorded under the identity of the
                    runtime configuration that measured them -- a device that really differs here;
  committed_deploy  profiles dir holding only the committed profile (another machine's sample; it may
                    happen to predict this machine well, then the drift check rightly stays quiet);
  demo              exactly README command 1 (`bash scripts/demo.sh --json`); a profile it creates
                    for this machine in profiles/ is removed afterwards when it was not there before.

    .venv/bin/python scripts/bench_transfer.py [--count 24] [--rounds 8] [--min-s 0.15] [--calm-s 240] [--draws 20]

Many short rounds, not a few long ones: a shared VM's slow stretches last seconds to tens of seconds,
so each model needs rounds spread over minutes for one of them to land in a fast stretch
(`scripts/bench_rounds.py` measures how many this machine needs). On the 2-vCPU Xeon VM (2026-12-02)
8 rounds of 0.15 s gave real-scale full calibrations of 80 / 97 / 97 % (pairs a / b / c) where 3
rounds of 0.3 s had given 43 / 53 / 53 % (2026-12-01): 1.2 s of timed loop per model instead of 0.9 s.
When the fast stretches get rarer (later that day: 1-2 rounds in 8), models none of whose rounds
was calm by the speed anchor are measured again, while `--calm-s` lasts.

`--repeat-of other.json` (with `--load-measurements`): how well two measurement runs of this machine
agree per student -- the ceiling of any prediction here.

Split into shorter runs (the shared machine's lock turns): measure and tabulate with
`--skip-deploy --save-measurements m.json`, then `--load-measurements m.json [--deploys foreign,committed]`
(the tables again, offline, and the chosen deploys; the foreign profile is built from the saved
measurements).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPE, CLASSES = (1, 8, 8), 10  # the micro space's input; see `Space` for the real one
KS = (0, 1, 3, 5, 10)


def _deploy_threads() -> int:
    from edgekd.device.targets import load_target

    return int(load_target("cpu").default_threads or 0)


DEPLOY_THREADS = _deploy_threads()  # what `edgekd deploy --target cpu` runs ONNX Runtime with (0 = its own)
DEPLOY_CONFIG = f"ort-t{DEPLOY_THREADS}"
PAIRS = {"a": ("ort-t1", "ort-t2"), "b": ("ort-noopt", "ort-t1"), "c": ("openvino", "ort-t1"),
         "d": ("committed", DEPLOY_CONFIG)}


@dataclass(frozen=True)
class Space:
    """Which students a run calibrates on and holds out, at which input, with which pairs."""

    name: str
    shape: tuple[int, ...]  # the data's input; a spec's own resolution= overrides H x W
    classes: int
    pairs: dict[str, tuple[str, str]]
    min_count: int  # timed runs per model per round, at least

    def fit_and_held(self, count: int) -> tuple[list[str], list[str]]:
        from edgekd.latency.search_space import calibration_specs, student_families, student_specs

        if self.name == "micro":
            return calibration_specs(count, seed=0), student_specs()
        families = student_families(scale="real")
        return (calibration_specs(count, seed=0, families=families, input_shape=self.shape, num_classes=self.classes),
                student_specs(scale="real", families=families))

    def input_of(self, spec: str) -> tuple[int, ...]:
        from edgekd.models import spec_input_shape

        return tuple(spec_input_shape(spec, self.shape))


# micro: what the default deploy searches (8x8 digits, 6-200 us); real: the ImageNet-scale families at
# 96-260 px (`--space real`, ms), where compute, not the per-call overhead, is the time. Pair (d) needs
# the committed profile's model, which covers the micro space only.
SPACES = {"micro": Space("micro", SHAPE, CLASSES, PAIRS, 200),
          "real": Space("real", (3, 224, 224), 1000, {p: PAIRS[p] for p in "abc"}, 20)}


def sessions(arts_ort: dict[str, Path], config: str, space: Space):
    """{spec: step()} running each model once with random input in `config`."""
    import onnxruntime as ort

    steps = {}
    for spec in arts_ort:
        x = np.random.default_rng(0).standard_normal((1, *space.input_of(spec))).astype(np.float32)
        man = json.loads((arts_ort[spec] / "manifest.json").read_text())
        onnx_file = arts_ort[spec] / man["model_file"]
        if config == "openvino":  # OpenVINO compiles the very same ONNX file: same model, other runtime
            import openvino as ov

            compiled = ov.Core().compile_model(str(onnx_file), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                                     "PERFORMANCE_HINT": "LATENCY",
                                                                     "INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            steps[spec] = (lambda r=request, x=x: r.infer({0: x}))
            continue
        opts = ort.SessionOptions()
        opts.inter_op_num_threads = 1
        threads = {"ort-t1": 1, "ort-t2": 2, "ort-noopt": 1, "ort-t0": 0}[config]
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if config == "ort-noopt"
                                         else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        steps[spec] = (lambda s=sess, n=name, x=x: s.run(None, {n: x}))
    return steps


def timed_rounds(steps: dict[str, dict[str, Any]], rounds: int, min_s: float, min_count: int,
                 calm_s: float = 0.0, label: str = "round") -> dict[str, dict[str, list[dict[str, float]]]]:
    """`rounds` interleaved rounds over every (config, model) of `steps` ({config: {model: step()}}),
    alternating order, each timed with the speed anchor alongside (`edgekd.bench.anchor`); then, while
    `calm_s` seconds (from the start) last, more passes over the models none of whose rounds was calm
    (anchor within CALM_BAND of the floor so far): the VM's fast stretches can be rare and short, and a
    model timed only in slow ones keeps a slow p50. Returns {config: {model: [round figures]}}."""
    from edgekd.bench.anchor import SpeedAnchor, anchor_summary, anchored_timing_loop
    from edgekd.latency.anchor import anchor_floor, is_calm

    anchor = SpeedAnchor()
    out: dict[str, dict[str, list[dict[str, float]]]] = {c: {s: [] for s in row} for c, row in steps.items()}
    start = time.perf_counter()

    def once(c: str, s: str) -> None:
        _, times, anchor_times = anchored_timing_loop(steps[c][s], anchor, warmup_count=10, warmup_s=0.05,
                                                      min_count=min_count, min_s=min_s, max_s=10.0)
        summary = anchor_summary(times, anchor_times)
        out[c][s].append({"p50_ms": float(np.median(times)) / 1e6, "p90_ms": float(np.percentile(times, 90)) / 1e6,
                          "p99_ms": float(np.percentile(times, 99)) / 1e6,
                          "anchor_p50_ms": summary["p50_ms"], "anchor_ratio_p50": summary["ratio_p50"]})

    # model-major: a model's configurations are timed back to back, so a pair compares like with like
    models = list(dict.fromkeys(s for row in steps.values() for s in row))
    jobs = [(c, s) for s in models for c in steps if s in steps[c]]
    for r in range(rounds):
        t0 = time.perf_counter()
        for c, s in (jobs if r % 2 == 0 else jobs[::-1]):
            once(c, s)
        print(f"  {label} {r + 1}/{rounds}: {len(jobs)} measurements in {time.perf_counter() - t0:.0f} s "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
    while time.perf_counter() - start < calm_s:
        floor = anchor_floor(x for row in out.values() for xs in row.values() for x in xs)
        restless = [(c, s) for c, s in jobs if not any(is_calm(x, floor) for x in out[c][s])]
        if not restless:
            break
        print(f"  {len(restless)} models without a calm round: measuring them again", flush=True)
        for c, s in restless:
            if time.perf_counter() - start < calm_s:
                once(c, s)
    return out


def measure(configs: list[str], specs: list[str], rounds: int, min_s: float, work: Path, space: Space,
            calm_s: float = 0.0
            ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, float]]:
    """`timed_rounds` over every (config, spec). Returns ({config: {spec: steady {p50_ms, p90_ms, p99_ms}}},
    {config: {spec: raw p50 ms}}, anchor figures): steady = the round `edgekd.latency.anchor.pick_round`
    keeps, through `steady_latency` (as calibration does); raw = the lowest p50 over the rounds (the
    method before)."""
    from edgekd.latency.calibrate import export_untrained
    from edgekd.latency.anchor import anchor_floor, pick_round, steady_latency

    arts_ort = {s: export_untrained(s, space.shape, space.classes, "onnxruntime", "fp32", work) for s in specs}
    print(f"exported {len(specs)} untrained students to ONNX", flush=True)
    steps = {c: sessions(arts_ort, c, space) for c in configs}
    rounds_of = timed_rounds(steps, rounds, min_s, space.min_count, calm_s)
    anchors = [x["anchor_p50_ms"] for row in rounds_of.values() for xs in row.values() for x in xs]
    raw = {c: {s: min(x["p50_ms"] for x in xs) for s, xs in row.items()} for c, row in rounds_of.items()}
    floor = anchor_floor(x for row in rounds_of.values() for xs in row.values() for x in xs)
    steady = {c: {s: {k: steady_latency(pick_round(xs, floor), floor)[k] for k in ("p50_ms", "p90_ms", "p99_ms")}
                  for s, xs in row.items()} for c, row in rounds_of.items()}
    return steady, raw, {"floor_ms": floor, "median_ms": float(np.median(anchors)), "max_ms": max(anchors),
                         "max_over_floor": max(anchors) / floor}


def committed_model():
    from edgekd.latency.section import latency_section
    from edgekd.latency.model import LatencyModel
    from edgekd.device.profiles import Profile

    prof = Profile.load(ROOT / "profiles" / "amd-epyc-x86_64-2c.yaml")
    key = "onnxruntime/fp32/t0/b1"
    return LatencyModel.from_dict(key, latency_section(prof)["models"][key])


def share_within(model, feats: dict, lat: dict, held: list[str]) -> float:
    errs = [model.predict(feats[s], "p50_ms") / lat[s] - 1 for s in held]
    return float(np.mean(np.abs(errs) <= 0.10))


def transfer_table(lat: dict[str, dict[str, float]], fit: list[str], held: list[str], draws: int,
                   pool: int = 16, space: Space = SPACES["micro"]) -> dict:
    from edgekd.latency.model import Sample, fit_latency_model
    from edgekd.latency.features import spec_features
    from edgekd.latency.design import informative_students
    from edgekd.latency.transfer import METHODS, Point, transferred_model

    feats = {s: spec_features(s, space.shape, space.classes) for s in fit + held}

    def native(config: str):
        return fit_latency_model([Sample(s, feats[s], {"p50_ms": lat[config][s]}) for s in fit], config)

    out: dict = {"within": {}, "full": {}, "median_err": {}, "informative": {}, "pools": {}}
    rng = np.random.default_rng(0)
    for pair, (src, dst) in space.pairs.items():
        base = committed_model() if src == "committed" else native(src)
        out["full"][pair] = share_within(native(dst), feats, lat[dst], held)
        out["within"][pair] = {}
        for method in METHODS:
            row = {}
            for k in KS:
                shares = []
                for _ in range(draws if k else 1):
                    pick = list(rng.choice(fit, size=k, replace=False)) if k else []
                    pts = [Point(s, feats[s], {"p50_ms": lat[dst][s]}) for s in pick]
                    model = transferred_model(base, pts, method=method) if pts else base
                    shares.append(share_within(model, feats, lat[dst], held))
                row[k] = float(np.mean(shares))
            out["within"][pair][method] = row
        # the default method on deterministic picks spread over the prior's per-kind shares (one draw)
        row = {}
        for k in KS:
            pick = informative_students(base, {s: feats[s] for s in fit}, k) if k else []
            pts = [Point(s, feats[s], {"p50_ms": lat[dst][s]}) for s in pick]
            row[k] = share_within(transferred_model(base, pts) if pts else base, feats, lat[dst], held)
        out["informative"][pair] = row
        # the same picks from `draws` random pools of `pool` of the calibration students: one deterministic
        # draw says little; this is the design's spread (mean and worst pool) when the candidates differ
        pools = [list(np.random.default_rng(1000 + d).choice(fit, size=min(pool, len(fit)), replace=False))
                 for d in range(draws)]
        row = {}
        for k in KS:
            shares = []
            for cand in (pools if k else pools[:1]):
                pick = informative_students(base, {s: feats[s] for s in cand}, k) if k else []
                pts = [Point(s, feats[s], {"p50_ms": lat[dst][s]}) for s in pick]
                shares.append(share_within(transferred_model(base, pts) if pts else base, feats, lat[dst], held))
            row[k] = (float(np.mean(shares)), float(np.min(shares)))
        out["pools"][pair] = row
    return out


def speed_ratios(lat: dict, held: list[str], space: Space = SPACES["micro"]) -> dict[str, float]:
    """Median over the held-out students of target p50 / source p50 (the committed model's prediction
    stands in for the other machine's measurements)."""
    from edgekd.latency.features import spec_features

    out = {}
    for pair, (src, dst) in space.pairs.items():
        if src == "committed":
            model = committed_model()
            source = {s: model.predict(spec_features(s, SHAPE, CLASSES), "p50_ms") for s in held}
        else:
            source = lat[src]
        out[pair] = float(np.median([lat[dst][s] / source[s] for s in held]))
    return out


# foreign_deploy's prior: this run's measurements of one configuration, fitted and recorded as the
# model of the configuration deploy uses (ONNX Runtime, the cpu target's default threads) under the
# identity of the runtime configuration that really produced them -- a device that differs here
FOREIGN_CONFIGS = {"ort-noopt": ("onnxruntime", "graph optimizations disabled, 1 thread"),
                   "openvino": ("openvino", "OpenVINO CPU plugin, 1 thread"),
                   "ort-t1": ("onnxruntime", "1 intra-op thread")}
FOREIGN_SOURCE = "ort-noopt"
DEPLOY_KEY = f"onnxruntime/fp32/t{DEPLOY_THREADS}/b1"
DEPLOYS = ("foreign", "committed", "demo")


def foreign_profile(path: Path, stats: dict, config: str, fit: list[str]) -> dict:
    """Write a profile whose `DEPLOY_KEY` model is fitted on this run's `config` measurements of the
    calibration students, recorded under the identity of what measured them: this machine's hardware,
    but the runtime / version of `config` -- so deploy must find it foreign, never this device's."""
    from edgekd.agent.fingerprint import device_fingerprint
    from edgekd.device.identity import model_identity
    from edgekd.device.profiles import Profile, save_profile
    from edgekd.latency.features import spec_features
    from edgekd.latency.model import Sample, fit_latency_model
    from edgekd.latency.section import SECTION_SCHEMA

    runtime, how = FOREIGN_CONFIGS[config]
    here = device_fingerprint()
    samples = [Sample(s, spec_features(s, SHAPE, CLASSES), dict(stats[config][s])) for s in fit]
    model = fit_latency_model(samples, DEPLOY_KEY, source=f"bench_transfer: {config} ({how}) on this machine")
    ident = model_identity(here, runtime)
    model.identity = {**ident, "runtime_version": f"{ident.get('runtime_version')} ({how})"}
    save_profile(Profile(name=path.stem, device=here, latency_model={
        "schema": SECTION_SCHEMA, "input_shape": list(SHAPE), "num_classes": CLASSES,
        "models": {DEPLOY_KEY: {**model.to_dict(), "runtime": "onnxruntime", "format": "onnx", "precision": "fp32",
                                "threads": DEPLOY_THREADS, "batch": 1}}}), path)
    return {"config": config, "how": f"{config} ({how}) measured here on {len(fit)} students, recorded as the "
            f"{DEPLOY_KEY} model of identity runtime={runtime} version={model.identity['runtime_version']}"}


def measured_here(profiles: Path, foreign: str) -> list[dict]:
    """What a deploy measured on this machine (its own profile in `profiles`, not the `foreign` file):
    spec, p50 and p90 of every measurement, to see what the transfer was adapted on."""
    from edgekd.device.profiles import Profile

    rows = []
    for path in sorted(profiles.glob("*.yaml")):
        if path.name == foreign:
            continue
        for m in Profile.load(path).measurements.values():
            if m.latency and m.latency.get("p90_ms"):
                rows.append({"spec": m.spec, "p50_ms": round(m.latency["p50_ms"], 5), "p90_ms": round(m.latency["p90_ms"], 5)})
    for r in rows:
        print(f"    measured here: {str(r['spec']):52s} p50 {r['p50_ms']:.4g} ms  p90 {r['p90_ms']:.4g} ms")
    return rows


def repeatability(lat: dict[str, dict[str, float]], other: dict[str, dict[str, float]],
                  held: list[str]) -> dict[str, dict]:
    """Per configuration: the share of students whose p50 in two measurement runs agree within ±10 %
    once the runs' global speed ratio (median over the students) is divided out, and the extremes of
    that ratio -- the ceiling any prediction of one run from the other can reach; `held_within_10pct`
    the same over the held-out students alone (what the within-10 % tables score)."""
    out = {}
    for c in sorted(set(lat) & set(other)):
        specs = sorted(set(lat[c]) & set(other[c]))
        if not specs:  # both runs measured the configuration, on no student in common
            continue
        r = np.array([other[c][s] / lat[c][s] for s in specs])
        r = r / np.median(r)
        on_held = np.array([x for s, x in zip(specs, r) if s in set(held)])
        out[c] = {"within_10pct": round(float(np.mean(np.abs(r - 1) <= 0.10)), 3), "students": len(specs),
                  "held_within_10pct": round(float(np.mean(np.abs(on_held - 1) <= 0.10)), 3) if len(on_held) else None,
                  "min": round(float(r.min()), 3), "max": round(float(r.max()), 3)}
    return out


def deploy(args: list[str], label: str, log: Path | None = None) -> dict:
    print(f"\n$ {' '.join(args)}   ({label})", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stderr)
        print(f"  (its whole log: {log})")
    for line in proc.stderr.splitlines():
        if "drift check" in line or line.lstrip("[ 0123456789.s]").startswith(("round", "transfer", "latency model", "budget")):
            print("  " + line)
    try:
        report = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        print(proc.stderr[-3000:])
        return {"status": f"error (exit {proc.returncode})", "device_rounds": None, "drift_detected": None}
    trust = report.get("latency_trust") or {}
    return {"status": report["status"], "status_note": report.get("status_note"),
            "device_rounds": report["device_rounds"],
            "drift_detected": report.get("drift_detected"), "trust_status": trust.get("status"),
            "teacher_ratio": trust.get("ratio"), "action": trust.get("action"),
            "chosen": (report.get("chosen") or {}).get("spec"), "wall_s": round(time.perf_counter() - t0, 1),
            "rounds": [{"spec": r["spec"], "predicted_ms": r["predicted_ms"], "measured_ms": r["measured_ms"],
                        "verdict": r["verdict"]} for r in report.get("rounds") or []]}


def fail(message: str) -> NoReturn:
    """A bad argument or file: one line on stderr, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def saved_measurements(path: str, space: Space, flag: str) -> dict[str, Any]:
    """A file written by --save-measurements, of `space`; anything else is a one-line error (exit 2)."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"{flag} {path}: cannot read it ({exc.strerror or exc}); pass a file written by --save-measurements")
    except (UnicodeDecodeError, json.JSONDecodeError):
        fail(f"{flag} {path} is not JSON; pass a file written by --save-measurements")
    if not isinstance(saved, dict) or not isinstance(saved.get("p50_ms"), dict):
        fail(f"{flag} {path} holds no p50_ms table; pass a file written by --save-measurements")
    if saved.get("space", "micro") != space.name:
        fail(f"{flag} {path} holds measurements of the {saved.get('space', 'micro')!r} space; "
             f"pass --space {saved.get('space', 'micro')}")
    return saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=24, help="untrained calibration students per device")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved measurement rounds (least-disturbed kept)")
    ap.add_argument("--draws", type=int, default=20, help="random draws of the k target points")
    ap.add_argument("--pool", type=int, default=16,
                    help="calibration students per random pool the informative picks are made from")
    ap.add_argument("--min-s", type=float, default=0.15, help="timed loop per model per round (s)")
    ap.add_argument("--calm-s", type=float, default=240.0,
                    help="after --rounds, models without a calm round are measured again until this many seconds "
                         "of measuring (0: none)")
    ap.add_argument("--skip-deploy", action="store_true", help="measure and tabulate only (no deploy subprocesses)")
    ap.add_argument("--repeat-of", default=None, metavar="PATH",
                    help="another saved measurement file of this machine: print how well the two runs agree")
    ap.add_argument("--deploys", default=",".join(DEPLOYS),
                    help="which deploy subprocesses to run (comma list of foreign, committed, demo)")
    ap.add_argument("--foreign-source", default=FOREIGN_SOURCE, choices=sorted(FOREIGN_CONFIGS),
                    help="configuration whose measurements here become the foreign profile of foreign_deploy")
    ap.add_argument("--save-measurements", default=None, metavar="PATH")
    ap.add_argument("--log-dir", default=None, metavar="DIR", help="write each deploy's whole log (stderr) there")
    ap.add_argument("--load-measurements", default=None, metavar="PATH", help="reuse a saved measurement file")
    ap.add_argument("--space", default="micro", choices=sorted(SPACES),
                    help="micro: the default deploy's students (8x8 digits, us; pairs a-d and the deploys); "
                         "real: the ImageNet-scale families at 96-260 px (ms; pairs a-c, no deploys)")
    args = ap.parse_args()

    from edgekd.agent.fingerprint import cpu_model

    space = SPACES[args.space]
    # every argument and file is checked before anything is measured (minutes) or written
    deploys = [] if args.skip_deploy else [d.strip() for d in args.deploys.split(",") if d.strip()]
    unknown = sorted(set(deploys) - set(DEPLOYS))
    if unknown:
        fail(f"unknown --deploys {', '.join(unknown)}; use some of {', '.join(DEPLOYS)}")
    other = saved_measurements(args.repeat_of, space, "--repeat-of") if args.repeat_of else None
    load_before = os.getloadavg()
    if args.load_measurements:
        saved = saved_measurements(args.load_measurements, space, "--load-measurements")
        lat, load_measuring = saved["p50_ms"], saved.get("load_avg_measuring")
        lat_raw, anchor_figs, stats = saved.get("p50_ms_raw"), saved.get("anchor"), saved.get("latency")
        fit, held = (saved["fit"], saved["held"]) if "fit" in saved else space.fit_and_held(args.count)
    else:
        fit, held = space.fit_and_held(args.count)
        configs = list(dict.fromkeys(["ort-t1", "ort-t2", "ort-noopt", "openvino", DEPLOY_CONFIG]))
        stats, lat_raw, anchor_figs = measure(configs, fit + held, args.rounds, args.min_s, ROOT / "runs" / "calibrate",
                                              space, args.calm_s)
        lat = {c: {s: v["p50_ms"] for s, v in row.items()} for c, row in stats.items()}
        load_measuring = [round(x, 2) for x in load_before] + [round(x, 2) for x in os.getloadavg()]
    if args.save_measurements:
        Path(args.save_measurements).write_text(json.dumps({"space": space.name, "p50_ms": lat, "latency": stats, "p50_ms_raw": lat_raw,
                                                            "anchor": anchor_figs,
                                                            "fit": fit, "held": held,
                                                            "load_avg_measuring": load_measuring}))
    res = transfer_table(lat, fit, held, args.draws, args.pool, space)
    # the same table from the raw p50s (lowest of the rounds, no anchor): what the anchor changes
    res_raw = transfer_table(lat_raw, fit, held, args.draws, space=space) if lat_raw else None
    ratios = speed_ratios(lat, held, space)
    print(f"\nheld-out search-space students within ±10 % of measured p50 (target device), mean over {args.draws} "
          f"draws of k random target points; fitted on {len(fit)} per device; held out {len(held)}")
    print(f"{'pair':30s} {'method':11s} " + " ".join(f"{'k=' + str(k):>6s}" for k in KS) + f" {'full cal':>9s} {'tgt/src':>8s}")
    for pair, (src, dst) in space.pairs.items():
        for method, row in res["within"][pair].items():
            print(f"({pair}) {src + ' -> ' + dst:25s} {method:11s} " + " ".join(f"{row[k]:6.0%}" for k in KS)
                  + f" {res['full'][pair]:9.0%} {ratios[pair]:7.2f}x")
    from edgekd.latency.transfer import DEFAULT_METHOD

    print(f"\nthe same, {DEFAULT_METHOD}, on the k calibration students that most inform its per-kind scales "
          "(deterministic, one draw; deploy measures students near the budget instead)")
    for pair, (src, dst) in space.pairs.items():
        row = res["informative"][pair]
        print(f"({pair}) {src + ' -> ' + dst:25s} {'informative':11s} " + " ".join(f"{row[k]:6.0%}" for k in KS))
    print(f"\nthe same picks from {args.draws} random pools of {args.pool} of the {len(fit)} calibration students: "
          "mean (worst pool)")
    for pair, (src, dst) in space.pairs.items():
        row = res["pools"][pair]
        print(f"({pair}) {src + ' -> ' + dst:25s} {'pools':11s} "
              + " ".join(f"{row[k][0]:4.0%} ({row[k][1]:3.0%})" for k in KS))
    if res_raw:
        print(f"\nthe same, {DEFAULT_METHOD}, from raw p50s (lowest of {args.rounds} rounds, machine state not divided out)")
        for pair, (src, dst) in space.pairs.items():
            row = res_raw["within"][pair][DEFAULT_METHOD]
            print(f"({pair}) {src + ' -> ' + dst:25s} {'raw':11s} " + " ".join(f"{row[k]:6.0%}" for k in KS)
                  + f" {res_raw['full'][pair]:9.0%}")
    out: dict = {
        "within_10pct": {p: {str(k): round(v, 3) for k, v in res["within"][p][DEFAULT_METHOD].items()} for p in space.pairs},
        "within_10pct_by_method": {p: {m: {str(k): round(v, 3) for k, v in row.items()}
                                       for m, row in res["within"][p].items()} for p in space.pairs},
        "full_calibration_within_10pct": {p: round(v, 3) for p, v in res["full"].items()},
        "within_10pct_informative_picks": {p: {str(k): round(v, 3) for k, v in row.items()}
                                           for p, row in res["informative"].items()},
        "within_10pct_informative_pools": {p: {str(k): {"mean": round(v[0], 3), "worst": round(v[1], 3)}
                                               for k, v in row.items()} for p, row in res["pools"].items()},
        "informative_pool_size": args.pool,
        "measurement": "steady p50: edgekd.latency.anchor.pick_round + steady_latency, as calibration keeps",
        "anchor": anchor_figs,
        **({"within_10pct_raw": {p: {str(k): round(v, 3) for k, v in res_raw["within"][p][DEFAULT_METHOD].items()}
                                 for p in space.pairs},
            "full_calibration_within_10pct_raw": {p: round(v, 3) for p, v in res_raw["full"].items()}}
           if res_raw else {}),
        "method": DEFAULT_METHOD, "median_speed_ratio_target_over_source": {p: round(v, 3) for p, v in ratios.items()},
        "space": space.name, "fit_on": len(fit), "held_out": len(held), "draws": args.draws, "rounds": args.rounds,
        "calm_s": args.calm_s,
        "load_avg_measuring": load_measuring,  # 1/5/15-min load averages before and after the measurements
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(),
    }
    if args.repeat_of:
        rep = repeatability(lat, other["p50_ms"], held)
        print(f"\nthe same students in two measurement runs ({args.repeat_of}): p50s within ±10 % of each other "
              "(global speed ratio divided out)")
        for c, r in rep.items():
            print(f"  {c:10s} {r['within_10pct']:5.0%} of {r['students']}  (held out: {r['held_within_10pct']:.0%}; "
                  f"ratio {r['min']:.2f}-{r['max']:.2f})")
        out["repeatability_within_10pct"] = rep
    best = {p: min((k for k in KS if res["within"][p][DEFAULT_METHOD][k] >= 0.9), default=None) for p in space.pairs}
    out["smallest_k_reaching_90pct"] = best
    if deploys and space.name != "micro":  # the deploys are README command 1 and its variants: the micro space
        print(f"\n(no deploy subprocesses with --space {space.name}: they deploy the default micro space)")
        deploys = []
    if "foreign" in deploys and (not stats or args.foreign_source not in stats):
        fail(f"the measurements lack full latency figures of {args.foreign_source!r} (p90 for the "
             "foreign profile); re-measure without --load-measurements")
    exe = str(ROOT / ".venv" / "bin" / "edgekd")

    def log_of(name: str) -> Path | None:
        return Path(args.log_dir) / f"{name}_deploy.log" if args.log_dir else None

    if "foreign" in deploys:
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-transfer-") as tmp:
            profiles = Path(tmp) / "profiles"
            profiles.mkdir()
            label = foreign_profile(profiles / f"foreign-{args.foreign_source}.yaml", stats, args.foreign_source, fit)
            out["foreign_profile"] = label
            out["foreign_deploy"] = deploy([exe, "deploy", "--target", "cpu", "--profiles-dir", str(profiles),
                                            "-o", str(Path(tmp) / "bundle"), "--json"],
                                           f"a profiles dir holding only a foreign profile: {label['how']}", log_of("foreign"))
            out["foreign_deploy"]["measured_here"] = measured_here(profiles, f"foreign-{args.foreign_source}.yaml")
    if "committed" in deploys:
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-transfer-") as tmp:
            profiles = Path(tmp) / "profiles"
            profiles.mkdir()
            shutil.copy(ROOT / "profiles" / "amd-epyc-x86_64-2c.yaml", profiles)
            out["committed_deploy"] = deploy([exe, "deploy", "--target", "cpu", "--profiles-dir", str(profiles),
                                              "-o", str(Path(tmp) / "bundle"), "--json"],
                                             "a profiles dir holding only the committed profile of another machine",
                                             log_of("committed"))
            out["committed_deploy"]["measured_here"] = measured_here(profiles, "amd-epyc-x86_64-2c.yaml")
    if "demo" in deploys:
        from edgekd.agent.fingerprint import device_fingerprint
        from edgekd.device.profiles import device_name

        own = ROOT / "profiles" / f"{device_name(device_fingerprint())}.yaml"
        existed = own.exists()
        out["demo"] = deploy(["bash", "scripts/demo.sh", "--json"], "README command 1, as is", log_of("demo"))
        out["demo_status"] = out["demo"]["status"]
        if not existed and own.exists():
            own.unlink()
            print(f"  (removed {own.relative_to(ROOT)}, which the demo created: the repository keeps one machine's sample)")
    if deploys:
        print(f"\n{'deploy':16s} {'status':10s} {'rounds':>6s} {'drift':>6s} {'teacher x':>9s} {'chosen':40s} {'wall':>6s}")
        for name in ("foreign_deploy", "committed_deploy", "demo"):
            if name not in out:
                continue
            d = out[name]
            print(f"{name:16s} {d['status']:10s} {str(d['device_rounds']):>6s} {str(d['drift_detected']):>6s} "
                  f"{(d.get('teacher_ratio') or float('nan')):8.2f}x {str(d.get('chosen')):40s} {d.get('wall_s', 0):5.0f}s")
    out["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps({"issue": 10, **out}))


if __name__ == "__main__":
    main()
