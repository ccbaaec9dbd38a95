"""`edgekd profile calibrate`: measure untrained students spread over the search space, fit the model.

The nn-Meter / OFA habit: latency does not depend on the weights, so a latency table can be built
without training anything. Students are built with random weights from specs *sampled* around every
student family's search space (`edgekd.latency.search_space.calibration_specs`), exported for the device's
runtime, benchmarked on the device (through the agent, or in a fresh runner process here), recorded in
the device profile with their architecture features, and one `edgekd.latency.model` model is fitted per
(runtime, precision, threads, batch).

The search-space specs themselves are *not* in the calibration sample by default, so every later
prediction for them is a genuine out-of-sample prediction (what `scripts/bench_select.py` checks).
Host side.
"""
from __future__ import annotations

from typing import Any

# what each calibration measurement asks, and in how many rounds (edgekd.latency.anchor says why)
from edgekd.latency.anchor import CALIBRATION_REQUEST, CALIBRATION_ROUNDS  # noqa: F401
from edgekd.latency.section import fit_profile, latency_section, note_inputs, update_profile_section
from edgekd.models.spec import MODELS, parse_spec
# the sample of the search space a calibration measures (importable from here as before)
from edgekd.latency.search_space import (calibration_specs, space_calibration_specs, student_families,  # noqa: F401
                                         student_specs, with_vocab)


def accelerator_request(target: Any) -> dict[str, Any]:
    """The bench-request part that puts a measurement on the target's accelerator: nothing for a
    target without one (each runtime's default; an older agent takes such a request as it always
    did), else {"accelerator": name}."""
    return {"accelerator": target.accelerator} if getattr(target, "accelerator", None) else {}



def export_untrained(spec: str, input_shape: tuple[int, ...], num_classes: int, runtime: str, precision: str,
                     work_dir: Any, *, seed: int = 0, batch: int = 1, layout: str = "NCHW",
                     device_identity: Any = None) -> Any:
    """Build `spec` with seeded random weights and export it for `runtime`/`precision` under
    `work_dir` (reused when already there: the same seed gives the same artifact). Returns the dir.
    `device_identity` (a fingerprint or hardware identity), when given, lets the exporter choose
    device-dependent settings (ONNX Runtime's INT8, `edgekd.runtimes.int8_settings`)."""
    from pathlib import Path

    import numpy as np
    import torch

    from edgekd.latency.features import spec_features
    from edgekd.models import ModelInfo, create_model
    from edgekd.runtimes import RUNTIMES, read_manifest

    text = MODELS.get(parse_spec(spec)[0]).task == "text"
    if not text:  # a spec with resolution=r takes (C, r, r) whatever the data's size: export and time it there
        from edgekd.models import spec_input_shape

        input_shape = spec_input_shape(spec, tuple(input_shape))

    name = f"{spec.replace(':', '_').replace(',', '_').replace('=', '')}-{'x'.join(map(str, input_shape))}"
    out = Path(work_dir) / runtime / precision / f"b{batch}" / name
    if (out / "manifest.json").is_file():
        man = read_manifest(out)
        if ((man.get("source") or {}).get("spec") == spec and man.get("status") == "ok"
                and RUNTIMES.get(runtime).fits_device(man, device_identity)):
            return out  # same spec, and exported with the settings this device would get
    torch.manual_seed(seed)
    model = create_model(spec, input_shape, num_classes).eval()
    info = ModelInfo(spec=spec, input_shape=tuple(input_shape), num_classes=num_classes,
                     class_names=[str(i) for i in range(num_classes)], task="text" if text else "image",
                     normalization={"mean": [0.0] * input_shape[0], "std": [1.0] * input_shape[0]},
                     meta={"untrained": True, "purpose": "latency calibration"} | ({"pad_id": 0} if text else {}))
    rng = np.random.default_rng(seed)
    # int8 needs calibration batches; for timing, random normalised inputs (text: random token ids,
    # timed at the full sequence length input_shape[0]) are as good as real ones
    if text:
        vocab = int(parse_spec(spec)[1]["vocab"])
        calib = [{"input": rng.integers(1, vocab, (batch, *input_shape)).astype(np.int64)} for _ in range(16)]
    else:
        calib = [{"input": rng.standard_normal((batch, *input_shape)).astype(np.float32)} for _ in range(16)]
    opts: dict[str, Any] = {"batch": batch}
    if device_identity is not None:
        opts["device_identity"] = device_identity
    if runtime == "litert":
        opts["layout"] = layout
    RUNTIMES.get(runtime).export(model, info, out, precision=precision, calibration=calib, **opts)
    # the features go with the artifact, so the profile can store them under the artifact's sha256
    spec_features(spec, input_shape, num_classes)
    return out


def calibrate_device(dev: Any, fingerprint: dict[str, Any], path: Any, *, specs: list[str], shape: tuple[int, ...],
                     classes: int, runtimes: list[str], precisions: list[str], threads: int | None, batch: int = 1,
                     work_dir: Any = "runs/calibrate", seed: int = 0, request: dict[str, Any] | None = None,
                     layout: str = "NCHW", rounds: int = CALIBRATION_ROUNDS,
                     on_progress: Any = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Export untrained `specs` once, measure them on an open device in `rounds` interleaved rounds
    (alternating order; each round one `bench_many`: one runner process per runtime, so many
    short rounds cost little), keep each model's least-disturbed round, record it in the profile at
    `path` as soon as it is the best so far (an interrupted run keeps what it measured), then fit.
    Returns (rows, {key: LatencyModel})."""
    from pathlib import Path

    from edgekd.bench.measure import MAX_MANY
    from edgekd.errors import ConfigError, EdgeKDError
    from edgekd.device.profiles import Measurement, record_measurements
    from edgekd.latency.anchor import anchor_floor, round_rank
    from edgekd.latency.features import spec_features
    from edgekd.latency.recipe import artifact_recipe
    from edgekd.runtimes import read_manifest

    req = {**CALIBRATION_REQUEST, **(request or {}), "threads": threads, "batch": batch}
    jobs = [(s, r, p) for r in runtimes for p in precisions for s in specs]
    rounds = max(1, int(rounds))
    best: dict[int, dict[str, Any]] = {}  # job index -> its row (with the best p50 so far)
    kept_lat: dict[int, dict[str, Any]] = {}  # job index -> latency of the round kept so far
    seen_lat: list[dict[str, Any]] = []  # every round's latency (the anchor floor so far)
    failed: dict[int, dict[str, Any]] = {}
    arts: dict[int, Any] = {}  # job index -> its exported artifact (built once, measured every round)
    for j, (spec, runtime, precision) in enumerate(jobs):  # every artifact is built once, measured every round
        if on_progress:
            on_progress(f"export {spec} {runtime}/{precision}", j + 1, len(jobs))
        try:
            arts[j] = export_untrained(spec, shape, classes, runtime, precision, Path(work_dir), seed=seed,
                                       batch=batch, layout=layout, device_identity=fingerprint or None)
        except EdgeKDError as err:
            failed[j] = {"spec": spec, "runtime": runtime, "precision": precision, "ok": False, "error": str(err)}
    for r in range(rounds):
        order = [j for j in (range(len(jobs)) if r % 2 == 0 else reversed(range(len(jobs)))) if j not in failed]
        if on_progress:  # a few models by name (a deploy's probe), more by count
            what = (", ".join(" ".join((jobs[j][0], "/".join(jobs[j][1:]))) for j in order) if len(order) <= 3
                    else f"{len(order)} models")
            on_progress(f"round {r + 1}/{rounds}: measuring {what}", r + 1, rounds)
        results: list[Any] = []
        for at in range(0, len(order), MAX_MANY):  # one runner process per chunk: many short rounds stay cheap
            results += dev.bench_many([arts[j] for j in order[at:at + MAX_MANY]], req)
        for j, result in zip(order, results):
            spec, runtime, precision = jobs[j]
            row: dict[str, Any] = {"spec": spec, "runtime": runtime, "precision": precision}
            try:
                if isinstance(result, EdgeKDError):
                    raise result
                feats = spec_features(spec, shape, classes)
                m = Measurement.from_result(result, spec=spec, params=feats["params"], macs=feats["macs"],
                                            recipe=artifact_recipe(read_manifest(arts[j])))
            except EdgeKDError as err:
                failed[j] = {**row, "ok": False, "error": str(err)}  # not measured again (a round kept stays)
                continue
            if not (m.latency or {}).get("p50_ms"):
                continue
            # least disturbed (edgekd.latency.anchor.round_rank): a calm round (speed anchor near the
            # device's floor so far) with the lowest p50, else the calmest; without an anchor the lowest p50
            seen_lat.append(m.latency)
            floor = anchor_floor(seen_lat)
            if j in kept_lat and round_rank(m.latency, floor) >= round_rank(kept_lat[j], floor):
                continue  # an earlier round was less disturbed
            kept_lat[j] = m.latency
            m.warnings = [*m.warnings, "untrained (random weights): latency calibration only"]
            if rounds > 1:
                m.warnings.append(f"least-disturbed of {rounds} interleaved rounds (by the speed anchor: calm and lowest p50) kept")
            best[j] = {**row, "ok": True, "p50_ms": m.latency["p50_ms"], "model_sha256": m.model_sha256}
            entry = {"spec": spec, "input_shape": list(shape), "num_classes": classes, "features": feats}

            def add_features(prof: Any, sha: str = m.model_sha256, entry: dict = entry) -> None:
                sec = latency_section(prof)
                sec["features"][sha] = entry
                note_inputs(sec, shape, classes, entry["spec"])
                prof.latency_model = sec

            record_measurements(path, [m], device=fingerprint)
            update_profile_section(path, add_features)
    rows = [best.get(j) or failed[j] for j in range(len(jobs)) if j in best or j in failed]
    if not Path(path).exists():
        raise ConfigError(f"no calibration measurement succeeded: {rows[0].get('error') if rows else 'nothing to do'}")
    fitted: dict[str, Any] = {}

    def refit(prof: Any) -> None:
        fitted.update(fit_profile(prof, seed=seed))

    update_profile_section(path, refit)
    return rows, fitted


def _resolution(spec: str) -> int:
    """A spec's own input resolution (``resolution=r``), 0 when it takes the data's size."""
    return int(float(parse_spec(spec)[1].get("resolution", 0) or 0))


def run_calibration(
    *,
    device: str = "local",
    target: str = "cpu",
    profile: str | None = None,
    profiles_dir: str = "profiles",
    count: int = 36,
    seed: int = 0,
    image_size: int | None = None,
    data: str = "digits",
    runtimes: list[str] | None = None,
    precisions: list[str] | None = None,
    threads: int | None = None,
    batch: int = 1,
    include_search_space: bool = False,
    work_dir: str = "runs/calibrate",
    key: str | None = None,
    request: dict[str, Any] | None = None,
    rounds: int = CALIBRATION_ROUNDS,
    on_progress: Any = None,
    family: str | None = None,
    family_grid: Any = None,
    prior: str | None = None,
    space: list[str] | None = None,
) -> dict[str, Any]:
    """Benchmark `count` untrained students spread over the search space on the device, record them
    in its profile with their features, and fit the latency model per (runtime, precision, threads,
    batch). Returns a JSON-able report (models with their cross-validated error, measured rows).
    `family` / `family_grid`: a user's family (`edgekd.models.user_family`) sampled with the built-in ones.
    `prior`: another device's profile whose model for this configuration is adapted from `count`
    informative students instead (few-shot, `edgekd.latency.fewshot`).
    `space`: the specs of a search space (`edgekd.deploy.spaces`, e.g. the ImageNet-scale students at
    96-260 px) to calibrate for instead of the micro families: `count` untrained students around it, each
    at its own resolution (`space_calibration_specs`); `include_search_space` adds the space's own."""
    from edgekd.bench.devices import open_device
    from edgekd.data import load_dataset
    from edgekd.errors import ConfigError
    from edgekd.device.profiles import device_name, profile_path
    from edgekd.device.targets import load_target

    tgt = load_target(target)
    ds = load_dataset(data, image_size=image_size)
    shape, classes = tuple(int(d) for d in ds.input_shape), int(ds.num_classes)
    threads = threads if threads is not None else tgt.default_threads
    from edgekd.models.user_family import join_user_family

    user = join_user_family(family, family_grid, shape, classes, getattr(ds, "task", "image"))
    if prior and (len(runtimes or []) > 1 or len(precisions or []) > 1):
        raise ConfigError("--prior adapts one configuration: pass at most one runtime and one precision")
    if prior and space:
        raise ConfigError("--prior picks its students from the micro search space; calibrate a --space "
                          "without --prior (or adapt the micro model with --prior alone)")
    families = [*student_families(), user] if user else None
    if space:
        names = [*dict.fromkeys(s.split(":")[0] for s in space), *([user] if user else [])]
        specs = space_calibration_specs(count, list(space), seed=seed, families=names, input_shape=shape,
                                        num_classes=classes)
        own = list(space) + (student_specs(families=[user]) if user else [])
    else:
        specs = calibration_specs(count, seed=seed, families=families) if not prior else []
        own = student_specs(families=families)
    if include_search_space:
        specs += [s for s in own if s not in specs]
    dev = open_device(device, key)
    try:
        fingerprint = dev.fingerprint()
        have = dev.runtimes()
        wanted = runtimes or [next((r for r in tgt.runtimes if r in have), "")]
        missing = [r for r in wanted if r not in have]
        if not wanted[0] or missing:
            raise ConfigError(f"device {device} has none of the runtimes {missing or list(tgt.runtimes)} of target "
                              f"{tgt.name}; install one there (see `edgekd targets`, install)")
        precs = precisions or ["fp32" if "fp32" in tgt.precisions else tgt.precisions[0]]
        path = profile_path(profile or device_name(fingerprint), profiles_dir)
        prior_info = None
        if prior:
            prior_info = _start_fewshot(prior, path, fingerprint, tgt, runtime=wanted[0], precision=precs[0],
                                        threads=threads, batch=batch, shape=shape, classes=classes, count=count,
                                        seed=seed, families=families, profiles_dir=profiles_dir)
            specs = prior_info["students"] + [s for s in specs if s not in prior_info["students"]]
        rows, fitted = calibrate_device(dev, fingerprint, path, specs=specs, shape=shape, classes=classes,
                                        runtimes=wanted, precisions=precs, threads=threads, batch=batch,
                                        work_dir=work_dir, seed=seed, layout=tgt.input_layout,
                                        request={**accelerator_request(tgt), **(request or {})},
                                        rounds=rounds, on_progress=on_progress)
        return {
            "profile": str(path), "device": fingerprint, "device_url": device, "target": tgt.name,
            "input_shape": list(shape), "rows": rows, **({"prior": prior_info} if prior_info else {}),
            "space": {"students": len(space), "resolutions": sorted({_resolution(s) for s in specs} - {0})}
            if space else None,
            "models": {k: {"n_samples": m.n_samples, "cv": m.cv, "coef": m.coef, "folds": m.folds,
                           "pad_block": list(m.pad_block), "kind": m.kind, "label": m.label,
                           **({"scales": _scales(m)} if m.transfer else {})}
                       for k, m in fitted.items()},
        }
    finally:
        dev.close()


def _start_fewshot(prior: str, path: Any, fingerprint: dict[str, Any], tgt: Any, *, runtime: str, precision: str,
                   threads: int | None, batch: int, shape: tuple[int, ...], classes: int, count: int, seed: int,
                   families: Any, profiles_dir: str) -> dict[str, Any]:
    """`--prior`: the prior's model for this configuration, written into `path` as a transfer with no
    points yet, and the `count` students that inform it most (`edgekd.latency.fewshot`)."""
    from edgekd.latency.fewshot import pick_students, prior_from_profile, start_transfer
    from edgekd.latency.model import model_key
    from edgekd.runtimes.catalog import runtime_format

    key = model_key(runtime, precision, threads, batch, shape, accelerator=getattr(tgt, "accelerator", None))
    model, prior_path, prior_key = prior_from_profile(prior, key, profiles_dir, path)
    students = pick_students(model, key, count, shape=shape, classes=classes, seed=seed, families=families)
    meta = {"runtime": runtime, "format": runtime_format(runtime), "precision": precision,
            "threads": int(threads or 0), "batch": batch}
    since = start_transfer(path, key, model, prior_path, fingerprint, meta)
    return {"profile": str(prior_path), "key": key, "prior_key": prior_key, "since": since, "students": students}


def _scales(model: Any) -> dict[str, float]:
    """A transferred model's per-group scales of the prior's p50 (what the device changed), if any."""
    entry = (((model.transfer or {}).get("correction") or {}).get("metrics") or {}).get("p50_ms") or {}
    return {g: round(float(v), 4) for g, v in (entry.get("scales") or {}).items()}
