"""The public Python API: one function per stage, what the CLI calls.

    from edgekd import api
    teacher = api.train_teacher(output="runs/teacher")
    summary = api.distill({"teacher": "runs/teacher/student.pt", "student": "cnn:width=8,depth=2",
                           "output": "runs/s1"})

Each function takes a config object or plain mapping and returns a JSON-able summary dict. Heavy
imports (torch) happen inside the functions, so `import edgekd.api` stays cheap.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from edgekd.config import DistillConfig, config_from_dict, config_to_dict, merge_overrides


def _as_config(config: DistillConfig | Mapping[str, Any], overrides: Mapping[str, Any] | None) -> DistillConfig:
    raw = config_to_dict(config) if isinstance(config, DistillConfig) else dict(config)
    return config_from_dict(merge_overrides(raw, overrides or {}))


def distill(
    config: DistillConfig | Mapping[str, Any],
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a student from `config` (a DistillConfig or a mapping in the YAML layout, see
    `edgekd.config`); keyword `overrides` are merged on top. Returns the run's summary dict (also
    written to `<output>/summary.json`). `resume=True` continues from `<output>/checkpoints/last.pt`."""
    from edgekd.distill.run import run_training

    return run_training(_as_config(config, overrides), resume=resume, progress=progress, log=log)


def teacher_config(**options: Any) -> DistillConfig:
    """The config `edgekd teacher` runs: cross-entropy on labels, early stop on val accuracy. Options
    (data, image_size, arch, epochs, patience, seed, lr, batch_size, threads, output, max_len,
    tokenizer): see `edgekd.distill.teacher_recipe.teacher_config`, where the recipe lives."""
    from edgekd.distill.teacher_recipe import teacher_config as recipe

    return recipe(**options)


def register_family(builder: str, grid: Any = None, *, name: str | None = None) -> str:
    """Register a user's model family: `builder` is ``module:function`` returning an nn.Module, `grid`
    a YAML path or mapping of its arguments to value lists (every combination is one spec of its
    search space, ordered by parameters). Returns the family's name for specs (``name:key=value``).
    Deploy/select take the same pair (`DistillConfig.family` / `family_grid`). ConfigError (one line)
    when the import fails, the builder raises or a spec does not run; `check_family` also exports."""
    from edgekd.models.user_family import register_user_family

    return register_user_family(builder, grid, name)


def unregister_family(name: str) -> None:
    """Remove a family registered with `register_family` (to register an edited builder or grid under
    the same name). ConfigError for an unknown name or a built-in family."""
    from edgekd.models.user_family import unregister_user_family

    unregister_user_family(name)


def check_family(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Build family `name`'s smallest spec, check its logits' shape and export it to ONNX once
    (ConfigError naming what failed)."""
    from edgekd.models.user_family import check_user_family

    check_user_family(name, tuple(input_shape), int(num_classes))


def train_teacher(
    config: DistillConfig | None = None,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train a teacher (default family `edgekd.models.DEFAULT_TEACHER`) with cross-entropy and early
    stopping on val accuracy. Pass a DistillConfig, or keyword options of `teacher_config`. The
    teacher checkpoint is `<output>/student.pt` (every run names its trained model student.pt)."""
    from edgekd.distill.run import run_training

    cfg = config if config is not None else teacher_config(**options)
    return run_training(cfg, resume=resume, progress=progress, log=log)


def compress(
    config: Any,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Compress a distilled student: run the pass chain of `config` (a CompressConfig or a mapping:
    ``{source: RUN or .pt, passes: [{pass: prune, ratio: 0.5}, ...], finetune_epochs: 2,
    output: RUN2, teacher?, data?, lr?}``, keyword `overrides` on top), each pass followed by KD
    fine-tuning from the teacher. Returns the summary (also `<output>/summary.json`): params, MACs,
    file size and test accuracy before/after each pass. See `edgekd.compress.pipeline`."""
    import dataclasses

    from edgekd.compress.pipeline import CompressConfig, run_compression

    raw = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} if isinstance(config, CompressConfig) \
        else dict(config)
    return run_compression({**raw, **overrides}, progress=progress, log=log)


def export(
    checkpoint: str,
    output: str,
    *,
    target: str = "cpu",
    formats: str | list[str] | None = None,
    precisions: str | list[str] | None = None,
    data: str | None = None,
    threads: int | None = None,
    targets_dir: str | None = None,
    log: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Export a checkpoint (or run directory) for `target`: one artifact per (format, precision) under
    `output/<format>-<precision>/`, each through the parity gate (fp32: max |diff| <= 1e-4; int8:
    accuracy drop <= 1 point). Returns the report dict (`ok`, `rows` with status/reason/size/parity/
    accuracy, `device`); a failing row never aborts the others. `options`: fp32_tol, max_drop,
    calibration_samples, image_size, format_options={"tflite": {"layout": "NHWC"}, ...}; and the
    device the artifacts are for, whose ISA picks the INT8 settings: `device` (an agent URL, 'local'
    or 'inprocess' = this machine; its fingerprint is asked, nothing is measured) with `key`, or
    `profile` (a profile path or name in `profiles_dir`: the device it was measured on)."""
    from edgekd.runtimes.export import export_checkpoint

    identity, source = _export_device(options.pop("device", None), options.pop("key", None),
                                      options.pop("profile", None), options.pop("profiles_dir", "profiles"))
    report = export_checkpoint(checkpoint, output, target=target, formats=formats, precisions=precisions, data=data,
                               threads=threads, targets_dir=targets_dir, log=log, device_identity=identity,
                               device_source=source, **options)
    return report.to_dict()


def _export_device(device: str | None, key: Any, profile: str | None,
                   profiles_dir: str) -> tuple[dict[str, Any] | None, str | None]:
    """(fingerprint, where it came from) of the device an export is for; (None, None) for none."""
    from edgekd.device.identity import hardware_identity
    from edgekd.errors import ConfigError

    if device and profile:
        raise ConfigError("pass --device or --profile, not both: each names the device the export is for")
    if device:
        from edgekd.bench.devices import fingerprint_of

        fp = fingerprint_of(device, key)
        if hardware_identity(fp) is None:
            raise ConfigError(f"the agent at {device} reports no CPU identity (an edgekd agent from before identities); "
                              "update edgekd on the device, or pass --profile")
        return fp, f"device {device}"
    if profile:
        from edgekd.device.profiles import Profile, profile_path

        path = profile_path(profile, profiles_dir)
        if not path.is_file():
            raise ConfigError(f"profile {path} does not exist; pass a profile .yaml written by a deploy or `edgekd profile calibrate`, or --device")
        fp = Profile.load(path).device or {}
        if hardware_identity(fp) is None:
            raise ConfigError(f"profile {path} records no device identity (written before identities); "
                              "pass --device URL to ask the device itself")
        return dict(fp), f"profile {path}"
    return None, None


def calibrate(**options: Any) -> dict[str, Any]:
    """Fit a device's latency model without training: benchmark untrained students spread over the
    search space on the device (`device` = agent URL, 'local' or 'inprocess'), record them in its
    profile, fit one NNLS model per (runtime, precision, threads, batch). Options: see
    `edgekd.latency.calibrate.run_calibration`. Returns the report (profile path, rows, models with their
    cross-validated error). `space` (`edgekd.deploy.spaces`: "micro" = the default, "real", or a grid
    file): calibrate on untrained students around that search space, each at its own resolution."""
    from edgekd.latency.calibrate import run_calibration

    space = options.pop("space", None)
    if space is not None:
        from edgekd.data import source_task
        from edgekd.deploy.spaces import is_default, space_specs

        options["space"] = None if is_default(space) else space_specs(space, source_task(options.get("data", "digits")))
    return run_calibration(**options)


def select(
    profile: str,
    *,
    budget_ms: float,
    percentile: int = 50,
    min_accuracy: float | None = None,
    formats: list[str] | None = None,
    precisions: list[str] | None = None,
    threads: int | None = None,
    profiles_dir: str = "profiles",
    target: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    task: str | None = None,
    family: str | None = None,
    family_grid: Any = None,
    space: str | None = None,
) -> dict[str, Any]:
    """The smallest student (fewest params; tie -> higher accuracy) whose latency at `percentile` on
    the profiled device meets `budget_ms` (measured if present, else predicted and flagged) and whose
    accuracy meets `min_accuracy`. Returns the Selection as a dict: `chosen` (or None), every
    candidate with its reasons, and `closest_miss` when nothing fits. `family` / `family_grid`: a
    user's family (`register_family`) whose students join the built-in ones as candidates. `space`:
    the built-in students ranked (`edgekd.deploy.spaces`: "micro" by default, "real", or a grid file;
    any other: only its students, measured or predicted, are candidates). `formats` / `precisions`
    ["auto"]: a joint choice among every runtime x precision the profile has (the `target`'s, when
    given), ranked by the weights' bytes on the device (`edgekd.deploy.select.RULES`)."""
    from edgekd.device.profiles import Profile, profile_path
    from edgekd.deploy.select import select as run_select
    from edgekd.deploy.user_space import select_specs
    from edgekd.device.targets import load_target

    from edgekd.deploy.select import joint_choice
    from edgekd.deploy.spaces import is_default

    tgt = load_target(target) if target else None
    formats, precisions, joint = joint_choice(formats, precisions, tgt)
    prof = Profile.load(profile_path(profile, profiles_dir))
    specs = select_specs(prof, family, family_grid, input_shape=input_shape, num_classes=num_classes, task=task,
                         space=space)
    return run_select(prof, budget_ms=budget_ms, percentile=percentile, min_accuracy=min_accuracy, formats=formats,
                      precisions=precisions, threads=threads, target=tgt, input_shape=input_shape,
                      num_classes=num_classes, task=task, specs=specs, only_specs=not is_default(space),
                      joint=joint).to_dict()


def deploy(config: Any = None, *, log: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """The closed loop for one target: predict -> pick -> distill -> (compress) -> export -> verify on
    the device through the agent -> record in its profile -> step smaller/larger, at most
    `max_rounds` device rounds; then write the bundle. `config` is a DeployConfig or a mapping of its
    fields (`options` on top; an unknown key is a ConfigError naming the valid ones). Returns the deploy report (status "verified", "unverified" or "failed")."""
    import dataclasses

    from edgekd.config import dataclass_from_mapping
    from edgekd.deploy.config import DeployConfig
    from edgekd.deploy.loop import run_deploy

    raw = dataclasses.asdict(config) if isinstance(config, DeployConfig) else dict(config or {})
    return run_deploy(dataclass_from_mapping(DeployConfig, {**raw, **options}, "deploy config"), log=log)
