"""Everything one deploy works with, opened once: the target, the data, the teacher, the device (or
none), the runtime configuration and the device's profile — and the few operations every later step
performs on them (read the profile, record a device measurement, calibrate, look up latencies).
Host side."""
from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekd.deploy.config import DeployConfig, check_config, choose_configs
from edgekd.errors import ConfigError, EdgeKDError

Log = Callable[[str], None]


def calibration_request(min_s: float) -> dict[str, Any]:
    """The timed loop of each calibration round a deploy makes, from its `--min-seconds`: CALIBRATION_ROUNDS
    (8) interleaved rounds (the least disturbed kept; edgekd.latency.calibrate says why 8) of a
    sixteenth of it, 0.1-0.25 s (0.125 s at the default 2 s: the 8 rounds time a model as long as the 2
    rounds of a quarter did), after a warm-up of the same, 0.05-0.2 s; at least 20 runs either way."""
    part = float(min_s) / 16
    return {"min_s": min(max(part, 0.1), 0.25), "warmup_s": min(max(part, 0.05), 0.2), "min_count": 20}


@dataclass
class Session:
    """The state a deploy's steps share. `dev` is None without a reachable device (`device_note` says
    why); `path` is the device's profile (None without a device and without `--profile`)."""

    cfg: DeployConfig
    say: Log
    tgt: Any
    ds: Any
    shape: tuple[int, ...]
    classes: int
    task: str
    vocab: int | None
    space: list[str]
    teacher_path: Path
    teacher_host: Any  # edgekd.deploy.stages.HostAccuracy
    teacher_spec: str
    teacher_sha: str
    url: str | None
    dev: Any | None
    device_note: str
    work: Path
    metric: str
    fingerprint: dict[str, Any] = field(default_factory=dict)
    fmt: str = ""
    runtime: str = ""
    precision: str = ""
    # the (format, precision) configurations chosen among, the reference first (one unless joint);
    # `use` switches fmt / runtime / precision, and every key below follows
    configs: list[tuple[str, str]] = field(default_factory=list)
    threads: int | None = None
    path: Path | None = None
    eval_npz: Path | None = None
    data_fp: str = ""

    # -- the runtime configuration, under the names the profile and the latency model use
    @property
    def joint(self) -> bool:
        return len(self.configs) > 1

    def use(self, config: tuple[str, str]) -> None:
        """Make (format, precision) the current configuration of every later step."""
        from edgekd.runtimes import FORMAT_RUNTIME

        self.fmt, self.precision = config
        self.runtime = FORMAT_RUNTIME[self.fmt]

    @property
    def config_key(self) -> tuple[str, str, str, int]:
        return (self.runtime, self.fmt, self.precision or "", int(self.threads or 0))

    @property
    def model_key(self) -> str:
        from edgekd.latency.model import model_key

        return model_key(self.runtime, self.precision, self.threads, 1, self.shape, self.tgt.accelerator)

    @property
    def measurement_meta(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "format": self.fmt, "precision": self.precision,
                "threads": int(self.threads or 0), "batch": 1}

    # -- the profile
    def load_profile(self) -> Any:
        from edgekd.device.profiles import Profile

        return Profile.load(self.path) if self.path is not None and self.path.exists() else None

    def remember(self, m: Any, ckpt: Path, spec: str) -> None:
        """Record a device measurement in the profile and refit the latency model with it at once."""
        from edgekd.device.profiles import record_measurements
        from edgekd.latency.section import fit_profile, latency_section, note_inputs, update_profile_section
        from edgekd.latency.features import architecture_features
        from edgekd.models import load_model

        assert self.path is not None
        model, _ = load_model(ckpt)
        entry = {"spec": spec, "input_shape": list(self.shape), "num_classes": self.classes,
                 "features": architecture_features(model, self.shape)}

        def change(prof: Any) -> None:
            sec = latency_section(prof)
            sec["features"][m.model_sha256] = entry
            note_inputs(sec, self.shape, self.classes, spec, self.vocab)
            prof.latency_model = sec
            fit_profile(prof)

        record_measurements(self.path, [m], device=self.fingerprint)
        update_profile_section(self.path, change)

    def calibrate_on(self, specs: list[str]) -> None:
        """Measure untrained `specs` on the device, in the current configuration, into the profile and
        refit (edgekd.latency.calibrate)."""
        from edgekd.latency.calibrate import CALIBRATION_ROUNDS, calibrate_device

        say = self.say
        calibrate_device(self.dev, self.fingerprint, self.path, specs=specs, shape=self.shape, classes=self.classes,
                         runtimes=[self.runtime], precisions=[self.precision], threads=self.threads,
                         work_dir=self.work / "calibrate", seed=self.cfg.seed, layout=self.tgt.input_layout,
                         request=calibration_request(self.cfg.min_s), rounds=CALIBRATION_ROUNDS,
                         on_progress=lambda label, i, n: say(f"  calibrate {i}/{n} {label}") if i in (1, n) else None)

    def calibration_specs(self, count: int | None = None) -> list[str]:
        from edgekd.latency.search_space import space_calibration_specs

        from edgekd.deploy.user_space import deploy_families

        return space_calibration_specs(count or self.cfg.calibrate_count, self.space, seed=self.cfg.seed,
                                       families=deploy_families(self.task, self.space), task=self.task,
                                       input_shape=self.shape, num_classes=self.classes, vocab=self.vocab)

    def test_x(self, spec: str, n: int | None = None) -> Any:
        """The (first `n`) test samples as `spec` takes them: as loaded, or for a student with
        ``resolution=r`` resampled to r x r (as it was trained and tested on the host,
        `edgekd.data.resolution`)."""
        return self._as_taken(self.ds.test.x[:n] if n is not None else self.ds.test.x, spec)

    def val_x(self, spec: str) -> Any:
        """The val samples as `spec` takes them (see `test_x`)."""
        return self._as_taken(self.ds.val.x, spec)

    def _as_taken(self, x: Any, spec: str) -> Any:
        from edgekd.data.resolution import resample_images

        shape = self.input_shape_of(spec)
        return x if shape == tuple(self.shape) else resample_images(x, int(shape[1]))

    def input_shape_of(self, spec: str) -> tuple[int, ...]:
        """The input shape `spec` takes: its own ``resolution=r`` for images, else the data's."""
        from edgekd.models import spec_input_shape

        return tuple(spec_input_shape(spec, self.shape) if self.task == "image" else self.shape)

    def eval_for(self, spec: str) -> tuple[Path, str]:
        """(evaluation set, its fingerprint) for `spec` on the device: the test split as `test_x`
        gives it, written once per resolution."""
        from edgekd.bench.accuracy import write_eval_npz

        assert self.eval_npz is not None
        shape = self.input_shape_of(spec)
        if shape == tuple(self.shape):
            return self.eval_npz, self.data_fp
        size = int(shape[1])
        path = self.eval_npz.with_name(f"{self.eval_npz.stem}-r{size}.npz")
        if not path.is_file():
            write_eval_npz(path, self.test_x(spec), self.ds.test.y, normalized=True)
        return path, f"{self.data_fp}@{size}x{size}"

    def unmeasured_families(self) -> list[str]:
        """Families of the search space of which the profile holds no measured student in the current
        configuration (format, precision, threads). A model fitted only on other families (say micro
        students at µs, for a deploy over `--space real` at ms) would extrapolate to them: the deploy
        calibrates on the space's sample first, so their points join the fit."""
        if self.load_profile() is None:
            return []
        seen = self.measured_families()
        return [n for n in dict.fromkeys(s.split(":")[0] for s in self.space) if n not in seen]

    def measured_families(self) -> set[str]:
        """The model families of the students the profile measured in the current configuration."""
        from edgekd.latency.recipe import is_current

        prof = self.load_profile()
        return {str(m.spec).split(":")[0] for m in (prof.measurements.values() if prof is not None else ())
                if m.spec and m.format == self.fmt and m.precision == self.precision
                and int(m.threads or 0) == int(self.threads or 0) and is_current(m, prof.device, shape=self.shape)}

    # -- the students
    def latency_table(self) -> dict[str, tuple[float, str]]:
        """{spec: (latency at the percentile, source)} over the search space, from the current profile."""
        from edgekd.deploy.stages import latency_table

        return latency_table(self.load_profile(), self.tgt, self.config_key, self.shape, self.classes,
                             self.cfg.percentile, self.space)

    def params(self, spec: str) -> int:
        from edgekd.deploy.stages import _params

        return _params(spec, self.shape, self.classes)

    def close(self) -> None:
        if self.dev is not None:
            self.dev.close()


def check_space_budget(cfg: DeployConfig, space: list[str], shape: tuple[int, ...]) -> None:
    """A space whose students run at other resolutions than the data (`--space real`) needs
    `--budget-ms`: the default budget is the teacher's latency / 5, and the teacher runs at the data's
    size, which says nothing about a student at 96-260 px (ConfigError, one line, before any work)."""
    from edgekd.models import spec_input_shape

    if cfg.budget_ms is not None:
        return
    sizes = sorted({spec_input_shape(s, shape)[1] for s in space} - {shape[1]}) if len(shape) == 3 else []
    if sizes:
        raise ConfigError(
            f"--space {cfg.space or 'micro'}: students run at {sizes[0]}-{sizes[-1]} px and the teacher at the data's "
            f"{shape[1]}x{shape[2]}, so the teacher's latency / {cfg.speedup_goal:g} is no budget for them; "
            "give --budget-ms")


def open_session(cfg: DeployConfig, say: Log) -> Session:
    """Target and config checks, the data, the teacher (trained if needed), the device (or the reason
    there is none), the format/runtime the device runs, the profile path and the evaluation file."""
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.bench.devices import on_accelerator, open_device
    from edgekd.data import load_dataset
    from edgekd.deploy.stages import default_device, ensure_teacher
    from edgekd.device.profiles import device_name, profile_path
    from edgekd.device.targets import load_target
    from edgekd.fileio import sha256_file
    from edgekd.latency.model import metric_for
    from edgekd.deploy.user_space import deploy_space
    from edgekd.runtimes import FORMAT_RUNTIME

    tgt = load_target(cfg.target)
    check_config(cfg, tgt)
    ds = load_dataset(cfg.data, image_size=cfg.image_size, seed=cfg.seed, max_len=cfg.max_len, tokenizer=cfg.tokenizer)
    shape, classes = tuple(int(d) for d in ds.input_shape), int(ds.num_classes)
    task = getattr(ds, "task", "image")
    vocab = int(ds.extra["vocab_size"]) if task == "text" else None
    # text specs carry vocab=N (their size depends on it); a user's --family joins the built-in students
    space = deploy_space(task, vocab, cfg.family, cfg.family_grid, shape, classes, cfg.family_only, cfg.space)
    check_space_budget(cfg, space, shape)
    if task == "text":
        say(f"data {ds.name}: text, {classes} classes, sequence length {shape[0]} (latency is measured at it), "
            f"vocabulary {vocab}; students: {', '.join(sorted({s.split(':')[0] for s in space}))}")
    teacher_path, teacher_host, teacher_spec = ensure_teacher(cfg, ds, say)

    url = cfg.device if cfg.device is not None else default_device(tgt)
    dev, device_note = None, ""
    if url:
        say(f"device: connecting to {url}")
        try:
            dev = on_accelerator(open_device(url, cfg.key), tgt.accelerator)  # every request on the target's
        except EdgeKDError as err:
            device_note = f"device {url} could not be reached ({err})"
    else:
        device_note = (f"no --device given, and this machine ({platform.machine()}) cannot stand in for a "
                       f"{tgt.name} ({tgt.arch}, {tgt.runtimes[0]})")
    if device_note:
        say(f"device: {device_note}; choosing by prediction, the result will be UNVERIFIED")
    s = Session(cfg=cfg, say=say, tgt=tgt, ds=ds, shape=shape, classes=classes, task=task, vocab=vocab, space=space,
                teacher_path=teacher_path, teacher_host=teacher_host, teacher_spec=teacher_spec,
                teacher_sha=sha256_file(teacher_path), url=url, dev=dev, device_note=device_note,
                work=Path(cfg.work_dir), metric=metric_for(cfg.percentile))
    try:
        s.fingerprint = dev.fingerprint() if dev else {}
        s.configs = choose_configs(cfg, tgt, dev.runtimes() if dev else None)
        s.use(s.configs[0])
        s.threads = cfg.threads if cfg.threads is not None else tgt.default_threads
        if dev:
            s.path = profile_path(cfg.profile or device_name(s.fingerprint), cfg.profiles_dir)
        else:
            s.path = profile_path(cfg.profile, cfg.profiles_dir) if cfg.profile else None
        if s.joint:
            say(f"joint choice among {len(s.configs)} configurations: "
                + ", ".join(f"{FORMAT_RUNTIME[f]}/{p}" for f, p in s.configs)
                + "; the teacher and the budget are measured in the first")
        say(f"target {tgt.name}: {s.fmt}/{s.precision} on {s.runtime}"
            + (f" ({tgt.accelerator})" if tgt.accelerator else "") + f", threads {s.threads or 'default'}"
            + (f"; profile {s.path}" if s.path else "; no profile: datasheet prior"))
        s.eval_npz = write_eval_npz(s.work / f"eval-{ds.fingerprint[:12]}.npz", ds.test.x, ds.test.y, normalized=True)
        s.data_fp = f"{ds.fingerprint}:test"
    except BaseException:
        s.close()
        raise
    return s
