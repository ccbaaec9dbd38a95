"""Choosing (student, runtime, precision) together: `edgekd deploy --format auto` (or a comma list of
formats / precisions). Opt-in, because its first run on a device calibrates every extra
configuration (LiteRT alone exports an untrained student in ~15 s here), while the default deploy
(README command 1) stays in the target's preferred configuration and verifies in seconds.

How (`pick_round`), in each device round:

  1. per configuration (format x precision the device runs and this host can export): the students
     its latency model (measured, else predicted) puts within budget, and the smallest of them whose
     host val accuracy meets the choosing floor (the same per-family frontier search as a single
     configuration, `edgekd.deploy.choice.frontier_search`; distills are shared, since one trained
     student serves every configuration);
  2. an INT8 (fp16) configuration's winner is exported there and then (through its accuracy gate on
     the host runtime: a failed gate drops that (student, configuration) without a device round),
     and its val accuracy is **measured on the exported artifact** on the host runtime: what
     quantization costs is measured, not assumed to be nothing (the search of step 1 uses the fp32
     student's val accuracy: one trained student serves every configuration). The smallest student
     meeting the floor sits at its edge, so quantization often pushes it under: that student is out
     of that configuration (for the whole deploy) and the search goes on to the next one, at most
     `REDUCED_RETRIES` more per configuration per round (each may cost a distill and an export);
  3. across the configurations' winners whose val accuracy is at least the reference configuration's
     winner's (so the joint choice is never less accurate on val than pinning the reference would
     be; without a reference winner, every winner): the best **accuracy per size**, val accuracy per
     MB of weights on the device (parameters x bytes per weight: fp32 4, fp16 2, int8 1); ties go to
     the faster one, then to the reference configuration;
  4. the winner is verified on the device like any round: its latency there, and TEST accuracy on the
     deployed runtime against the floor, so an INT8 candidate passes its accuracy gate on the runtime
     it will run on.

Why step 3 has a floor of its own: by accuracy per MB alone, an INT8 export of the reference's winner
always wins (a quarter of the bytes), however many images quantization costs; session 7 measured
exactly that (the same net on OpenVINO INT8, one test image behind the pinned fp32 choice).

Latency models (`ensure_config_models`): the reference configuration (the first: the teacher and
the budget are measured there) goes through the drift check and transfer of `edgekd.deploy.trust`;
each other configuration has no teacher measurement to check its model with, so it gets a probe of
its own: one untrained student predicted just within the budget (where the choice is made) is
measured there and compared with this device's model *before* it joins the fit; within the drift
tolerance the model is used, beyond it the model is adapted on the probe (`edgekd.latency.drift`), so
a stale model (another runtime version, another INT8 recipe, a machine that changed) never picks a
configuration's winner unchecked. A configuration without a model of this identity is calibrated on
`joint_calibrate_count` untrained students (fewer than the reference's `calibrate_count`, and never
more: every round's measurement joins and corrects its model). Host side.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from edgekd.deploy.candidates import BYTES_PER_WEIGHT, size_bytes  # noqa: F401  (re-exported: the joint rule's size)
from edgekd.deploy.session import Session

#: after an INT8/fp16 winner misses the floor on its artifact (or its gate refuses it), how many more
#: students one configuration tries in one round
REDUCED_RETRIES = 2

RULE = ("within budget (measured, else predicted) and host val accuracy >= the choosing floor; per "
        "configuration the smallest such student (an INT8/fp16 one's val accuracy measured on its exported "
        "artifact); across configurations, among those at least as accurate on val as the reference "
        "configuration's, the best val accuracy per MB of weights (params x bytes per weight: fp32 4, "
        "fp16 2, int8 1), ties to the faster")


@dataclass
class ConfigView:
    """One configuration in one round: how many students fit, its winner, and why it lost or won."""

    format: str
    runtime: str
    precision: str
    within_budget: int
    students: int
    winner: str | None = None
    params: int | None = None
    size_bytes: int | None = None
    val_accuracy: float | None = None
    val_source: str = ""  # "fp32 student" or "<precision> artifact on <runtime> (host)"
    latency_ms: float | None = None
    latency_source: str = ""
    accuracy_per_mb: float | None = None
    status: str = "no candidate"  # chosen / lost / no candidate
    why: str = ""
    missed: list[str] = field(default_factory=list)  # INT8/fp16 students tried first whose artifact missed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_config_models(s: Session, budget_ms: float) -> dict[str, dict[str, Any]]:
    """A latency model for every non-reference configuration: this device's own when the profile has
    one fitted on this identity and a probe near `budget_ms` agrees with it (`probe_config`), else a
    calibration on `joint_calibrate_count` untrained students (at most `calibrate_count`). Leaves the
    reference configuration current; {model key: {format, runtime, precision, action[, probe]}}."""
    from edgekd.latency.drift import assess

    out: dict[str, dict[str, Any]] = {}
    if not s.joint:
        return out
    ref = s.configs[0]
    try:
        for config in s.configs[1:]:
            s.use(config)
            entry: dict[str, Any] = {"format": s.fmt, "runtime": s.runtime, "precision": s.precision}
            if s.dev is None or s.path is None:
                entry["action"] = "no device: the profile's model or the datasheet prior"
            else:
                a = assess(s.path, s.fingerprint, s.model_key, s.runtime, teacher_features=None,
                           teacher_latency=None, metric=s.metric, profiles_dir=s.cfg.profiles_dir,
                           tolerance=s.cfg.drift_tolerance)
                if a.status == "trusted" and not s.unmeasured_families():
                    entry["probe"] = probe_config(s, budget_ms)
                    entry["action"] = entry["probe"]["action"]
                else:
                    specs = s.calibration_specs(min(s.cfg.joint_calibrate_count, s.cfg.calibrate_count))
                    n = len(specs)
                    why = {"trusted": " (or none measured on this search space's families)",
                           "foreign": f" (the profile's model was fitted under another identity: "
                                      f"{'; '.join(a.differences[:2])})"}.get(a.status, "")
                    s.say(f"latency model: none of this device for {s.model_key}{why}; calibrating on {n} untrained "
                          "students")
                    s.calibrate_on(specs)
                    entry["action"] = f"calibrated on {n} untrained students"
            out[s.model_key] = entry
    finally:
        s.use(ref)
    return out


def probe_config(s: Session, budget_ms: float) -> dict[str, Any]:
    """The drift check of a non-reference configuration (current in `s`): measure one untrained student
    its model predicts just within the budget, compare out of sample, adapt the model on it when it is
    beyond the drift tolerance. Returns {spec, predicted_ms, measured_ms, ratio, drift_detected, action}."""
    from edgekd.device.profiles import now_iso
    from edgekd.latency.drift import adapt, beyond_tolerance, describe, probe_specs, round_drift
    from edgekd.latency.section import device_points

    table = s.latency_table()
    specs = probe_specs(table, budget_ms, 1, s.params)
    if not specs:
        s.say(f"drift check: {s.model_key}: no unmeasured student predicted within the budget to probe; "
              "this device's model is used, every round's measurement corrects it")
        return {"spec": None, "drift_detected": False, "action": "this device's model, unprobed (nothing to probe)"}
    spec, predicted = specs[0], float(table[specs[0]][0])
    since = now_iso()
    s.say(f"drift check: {s.model_key}: measuring the untrained {spec} (predicted p{s.cfg.percentile} "
          f"{predicted:.4g} ms) before trusting this configuration's model")
    s.calibrate_on([spec])
    # the probe's own row: measured since the probe started, of this spec (the fit already includes
    # it; `round_drift` reads that fit only to take it as the prior of an adaptation)
    prof = s.load_profile()
    mine = [p for p in device_points(prof, s.model_key, since) if p.name.split("@")[0] == spec]
    if not mine or not mine[-1].latency.get(s.metric):
        return {"spec": spec, "predicted_ms": predicted, "drift_detected": False,
                "action": "this device's model, unprobed (the probe gave no figure)"}
    measured = float(mine[-1].latency[s.metric])
    out: dict[str, Any] = {"spec": spec, "predicted_ms": predicted, "measured_ms": measured,
                           "ratio": measured / max(predicted, 1e-9)}
    tol = s.cfg.drift_tolerance
    out["drift_detected"] = beyond_tolerance(out["ratio"], tol)
    # beyond the tolerance, a native model becomes the prior of a transfer (None: within it, or already one)
    drifted = round_drift(s.path, s.model_key, predicted, measured, tol)
    if drifted is not None:
        adapted = adapt(s.path, drifted, s.fingerprint, s.measurement_meta, since=since)
        s.say(f"drift check: {describe(drifted, s.metric, spec).split(': ', 1)[1]} ({adapted.label})")
        out["action"] = f"this device's model, adapted on the probe {spec} (x{out['ratio']:.2f})"
    elif out["drift_detected"]:  # already a transfer: the probe's point has re-adapted it
        s.say(f"drift check: {spec} measured x{out['ratio']:.2f} its prediction; this configuration's transfer "
              "model has re-adapted on it")
        out["action"] = f"this device's transfer model, re-adapted on the probe {spec} (x{out['ratio']:.2f})"
    else:
        s.say(f"drift check: {spec} predicted {predicted:.4g} ms, measured {measured:.4g} ms (x{out['ratio']:.2f}; "
              f"tolerance ±{tol:.0%}) -> this configuration's model is used")
        out["action"] = f"this device's model, checked on the probe {spec} (x{out['ratio']:.2f})"
    return out


def pick_round(s: Session, floor: float, budget_ms: float, accuracy_of: Callable[[str], float], *,
               over_budget: set[tuple[str, str, str]], refused: dict[tuple[str, str, str], str],
               under_floor: dict[str, set[str]], round_no: int, margin: float = 0.0,
               reduced_accuracy_of: Callable[[str], float] | None = None,
               reduced_under_floor: dict[tuple[str, str], set[str]] | None = None,
               ) -> tuple[tuple[str, str] | None, str | None, tuple[float, str] | None, list[ConfigView]]:
    """One round's choice over every configuration (module docstring). `accuracy_of(spec)`: the fp32
    student's host val accuracy; `reduced_accuracy_of(spec)`: in a joint choice, the val accuracy of
    `spec` exported in the current INT8/fp16 configuration (ExportError when its gate refuses it).
    `over_budget` / `refused`: (spec, format, precision) the device measured over budget / whose export gate failed;
    `under_floor`: {precision: specs under the floor on the device} (fp32 runtimes agree to 1e-4, so
    one fp32 runtime's miss is every fp32 runtime's); `reduced_under_floor`: {(format, precision):
    specs whose artifact there missed the floor on host val}, filled here and kept by the caller
    across rounds. `margin` (`rounds.choice_margin`): the students
    predicted within budget / (1 + margin) are searched first, the rest of those within budget only
    when none of them meets the floor. Returns (configuration, spec, (latency, source),
    the per-configuration views) and leaves the chosen configuration current (the reference when none)."""
    views: list[ConfigView] = []
    found: list[tuple[tuple[str, str], str, tuple[float, str], ConfigView]] = []
    reduced_under_floor = {} if reduced_under_floor is None else reduced_under_floor
    for config in s.configs:
        s.use(config)
        table = s.latency_table()
        where = f"{s.runtime}/{s.precision}: " if s.joint else ""
        v = ConfigView(format=s.fmt, runtime=s.runtime, precision=s.precision, within_budget=0,
                       students=len(table))
        views.append(v)
        reduced = s.joint and s.precision != "fp32" and reduced_accuracy_of is not None
        missed = reduced_under_floor.setdefault(config, set())
        counted: list[int] = []

        def search(exclude: set[str], say: bool) -> str | None:
            spec, fast = _search(s, config, table, budget_ms, floor, accuracy_of, margin=margin,
                                 over_budget=over_budget, refused=refused,
                                 rejected=under_floor.get(s.precision, set()) | exclude,
                                 say=(lambda m: s.say(f"round {round_no}: {where}{m}")) if say else None)
            counted.append(len(fast))
            return spec

        def refuse(spec: str, why: str) -> None:
            refused[(spec, *config)] = why

        if reduced:
            def measure(spec: str) -> float:
                val = reduced_accuracy_of(spec)
                s.say(f"round {round_no}: {where}{spec} exported: val accuracy {val:.2%} on the artifact "
                      f"(the fp32 student: {accuracy_of(spec):.2%})")
                return val

            spec, val, misses = first_that_holds(search, measure, floor, missed=missed, refuse=refuse,
                                                 say=lambda m: s.say(f"round {round_no}: {where}{m}"),
                                                 precision=s.precision)
            v.val_source = f"{s.precision} artifact on {s.runtime} (host)"
        else:
            spec, misses = search(set(), True), []
            val = accuracy_of(spec) if spec is not None else None
            v.val_source = "fp32 student"
        v.within_budget, v.missed = counted[0], misses
        if spec is None or val is None:
            exhausted = reduced and len(misses) > REDUCED_RETRIES  # stopped by the bound, not by the search
            v.why = "; ".join(misses + ([] if exhausted else ["no student within budget meets the floor"
                                                              if counted[-1] else "no student predicted within budget"]))
            continue
        v.winner, v.params, v.val_accuracy = spec, s.params(spec), val
        v.latency_ms, v.latency_source = table[spec]
        v.size_bytes = size_bytes(v.params, s.precision)
        v.accuracy_per_mb = v.val_accuracy / (v.size_bytes / 1e6)
        found.append((config, spec, table[spec], v))
    if not found:
        s.use(s.configs[0])
        return None, None, None, views
    config, spec, lat, best = choose_across(found, s.configs)
    if s.joint:
        s.say(f"round {round_no}: joint choice: {spec} on {best.runtime}/{best.precision} — {best.why}; "
              + "; ".join(f"{v.runtime}/{v.precision}: {v.winner or '-'} ({v.status})" for v in views))
    s.use(config)
    return config, spec, lat, views


def first_that_holds(search: Callable[[set[str], bool], str | None], measure: Callable[[str], float],
                     floor: float, *, missed: set[str], refuse: Callable[[str, str], None],
                     say: Callable[[str], None] = lambda m: None, precision: str = "int8",
                     retries: int | None = None) -> tuple[str | None, float | None, list[str]]:
    """Step 2 with its bounded retry: the first student `search(exclude, narrate)` finds (the smallest
    meeting the floor on fp32 val, none of `exclude`) whose reduced-precision artifact holds the floor,
    `measure(spec)` giving that artifact's val accuracy (ExportError: its gate refused it, and
    `refuse(spec, why)` records it). A student under the floor joins `missed` (the caller keeps it
    across rounds), so no later round tries it again. At most 1 + `retries` (default REDUCED_RETRIES)
    students are measured. Returns (spec, its artifact's val accuracy, what each miss was) or
    (None, None, misses)."""
    from edgekd.errors import ExportError

    retries = REDUCED_RETRIES if retries is None else retries
    misses: list[str] = []
    for attempt in range(1 + retries):
        spec = search(set(missed), attempt == 0)
        if spec is None:
            return None, None, misses
        try:
            val = measure(spec)
        except ExportError as err:
            refuse(spec, str(err))
            missed.add(spec)
            misses.append(f"{spec} refused by the {precision} export gate ({err})")
        else:
            if val >= floor:
                return spec, val, misses
            missed.add(spec)
            misses.append(f"{spec}'s {precision} artifact has val accuracy {val:.2%} < the floor {floor:.2%}")
        say(misses[-1] + ("; trying the next student" if attempt < retries else
                          f"; {1 + retries} tried this round (REDUCED_RETRIES), the next round goes on"))
    return None, None, misses


def _search(s: Session, config: tuple[str, str], table: dict[str, tuple[float, str]], budget_ms: float,
            floor: float, accuracy_of: Callable[[str], float], *, margin: float,
            over_budget: set[tuple[str, str, str]], refused: dict[tuple[str, str, str], str], rejected: set[str],
            say: Callable[[str], None] | None) -> tuple[str | None, list[str]]:
    """Step 1 in the current configuration: (the smallest student predicted within budget whose val
    accuracy meets `floor`, not `rejected`, or None; the students within budget). `say` (the first
    search of a round only) narrates it."""
    from edgekd.deploy.choice import frontier_search

    gone = {spec for spec, f, p in (*over_budget, *refused) if (f, p) == config}
    fast = sorted((spec for spec, (lat, _) in table.items() if lat <= budget_ms and spec not in gone),
                  key=lambda spec: (s.params(spec), table[spec][0]))
    if say:
        say(f"{len(fast)} of {len(table)} students predicted within budget; distilling each family's frontier "
            f"to find the smallest whose val accuracy meets {floor:.2%}")
    predicted = {spec: lat for spec, (lat, _) in table.items()}  # equal size and accuracy: the faster
    safe = [spec for spec in fast if table[spec][0] <= budget_ms / (1.0 + margin)] if margin > 0 else fast
    spec = frontier_search(safe, accuracy_of, floor, params=s.params, rejected=rejected,
                           tiebreak=predicted.__getitem__).best
    if margin > 0 and say:
        say(f"{len(safe)} of them within budget / {1 + margin:.2f} (the largest under-prediction so far, "
            f"{margin:.0%}) searched first: " + (f"{spec} meets the floor" if spec else
                                                 "none meets the floor; searching all within budget"))
    if spec is None and len(safe) < len(fast):
        spec = frontier_search(fast, accuracy_of, floor, params=s.params, rejected=rejected,
                               tiebreak=predicted.__getitem__).best
    return spec, fast


Found = tuple[tuple[str, str], str, tuple[float, str], ConfigView]


def choose_across(found: list[Found], configs: list[tuple[str, str]]) -> Found:
    """Step 3 of the module docstring over each configuration's (configuration, winner, (latency,
    source), view), `configs` in order, the reference first. Marks every view chosen or lost, with why."""
    order = {c: i for i, c in enumerate(configs)}
    ref = next((f[3] for f in found if f[0] == configs[0]), None)
    least = ref.val_accuracy if ref is not None else float("-inf")
    eligible = [f for f in found if f[3].val_accuracy >= least]
    config, spec, lat, best = max(eligible, key=lambda f: (f[3].accuracy_per_mb, -f[2][0], -order[f[0]]))
    best.status, best.why = "chosen", (f"best val accuracy per MB: {best.accuracy_per_mb:.4g} "
                                       f"({best.val_accuracy:.2%} / {best.size_bytes / 1e6:.4g} MB)"
                                       + (" among those at least as accurate as the reference configuration's"
                                          if len(eligible) < len(found) else ""))
    for _, _, _, v in found:
        if v is best:
            continue
        v.status = "lost"
        if v.val_accuracy < least:
            v.why = (f"val accuracy {v.val_accuracy:.2%} ({v.val_source}) < {least:.2%} of {ref.winner} on "
                     f"{ref.runtime}/{ref.precision}, the reference configuration: never less accurate than it")
        elif v.accuracy_per_mb < best.accuracy_per_mb:
            v.why = (f"{v.accuracy_per_mb:.4g} val accuracy per MB ({v.val_accuracy:.2%} / {v.size_bytes / 1e6:.4g} MB)"
                     f" < {best.accuracy_per_mb:.4g} of {best.winner} on {best.runtime}/{best.precision}")
        else:
            v.why = "tie on accuracy per MB; slower or later in order"
    return config, spec, lat, best


def int8_record(artifact: str | None) -> dict[str, Any] | None:
    """The INT8 settings the chosen artifact was quantized with, as its manifest records them
    (`options.int8_settings`, the same keys for every runtime: `runtimes.int8_settings.SETTINGS_KEYS`,
    with the rule that chose them from the device's ISA). An artifact exported before its runtime
    recorded them: what its manifest holds, said so. None for an fp32/fp16 artifact or none at all."""
    from pathlib import Path

    from edgekd.runtimes import read_manifest

    if not artifact or not Path(artifact).is_dir():
        return None
    man = read_manifest(artifact)
    if man.get("precision") != "int8":
        return None
    options = dict(man.get("options") or {})
    if isinstance(options.get("int8_settings"), dict):
        return {"runtime": man.get("runtime"), **options["int8_settings"]}
    return {"runtime": man.get("runtime"), "rule": f"{man.get('runtime')}: exported before INT8 settings were "
                                                   "recorded; the quantizer's options as recorded",
            "options": options}
