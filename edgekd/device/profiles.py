"""Per-device profiles: `profiles/<device>.yaml`, every measurement ever taken on one physical device.

Device-safe: yaml + stdlib only. The file is meant to be read by people and diffed in review:

    schema: edgekd.profile/1
    name: amd-epyc-x86_64-2c
    device: {...}                  # the fingerprint from the agent's hello (latest)
    created: 2025-...Z
    updated: 2025-...Z
    measurements:                  # sorted by key, one entry per (model, format, precision, threads, batch,
      <sha12>/onnx/fp32/t1/b1:     #   accelerator); the runtime's default accelerator is not written in
        model_sha256: ...          #   the key (`.../b1`), any other is (`.../b1@npu`): keys from before
        format: onnx               #   accelerators existed mean the default one, as they always did
        precision: fp32
        threads: 1
        batch: 1
        accelerator: cpu           # absent in older rows: the runtime's default
        count: 3                   # how many times this key was measured; the latest replaces the rest
        spec / params / macs / size_bytes / latency{p50_ms..} / peak_rss_bytes / accuracy /
        dataset_fingerprint / measured_at / versions / ...
    latency_model: null            # fitted by `edgekd profile calibrate` (later issue); kept as is

Updates go through `record_measurements`, which holds a lock on `<file>.lock` across
read-modify-write and writes atomically, so two benches writing the same profile lose nothing.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from edgekd.errors import ConfigError, ProfileError
from edgekd.fileio import atomic_write_text
from edgekd.device.profile_lock import file_lock

SCHEMA = "edgekd.profile/1"
KEY_FIELDS = ("model_sha256", "format", "precision", "threads", "batch", "accelerator")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# libyaml's parser and emitter where PyYAML was built with them (its wheels are): the same safe loader,
# the same text, ~10x faster (the committed 94 KB profile: load 0.29 -> 0.025 s, dump 0.12 -> 0.022 s on
# a 2-vCPU x86 VM). Calibration and deploy read and rewrite the profile after every measurement.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Measurement:
    """One benchmark result as a profile stores it. The key is (model_sha256, format, precision,
    threads, batch, accelerator); `threads=None` means the runtime's default and is written as 0;
    `accelerator` None (rows from before accelerators) means the runtime's default one."""

    model_sha256: str
    format: str
    precision: str
    threads: int
    batch: int
    accelerator: str | None = None
    spec: str | None = None
    params: int | None = None
    macs: int | None = None
    size_bytes: int | None = None
    latency: dict[str, float] | None = None
    peak_rss_bytes: int | None = None
    accuracy: float | None = None
    accuracy_count: int | None = None
    dataset_fingerprint: str | None = None
    load_ms: float | None = None
    first_inference_ms: float | None = None
    input_source: str | None = None
    runtime: str | None = None
    artifact_sha256: str | None = None
    measured_at: str = field(default_factory=now_iso)
    versions: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    count: int = 1
    recipe: str | None = None  # INT8: the artifact's quantization recipe (edgekd.latency.recipe); None otherwise

    @property
    def key(self) -> str:
        """The profile key as written in the file, e.g. `1a2b3c4d5e6f/onnx/fp32/t1/b1`, or
        `1a2b3c4d5e6f/openvino/fp32/t1/b1@npu` on an accelerator other than the runtime's default."""
        from edgekd.runtimes.catalog import accelerator_suffix

        return (f"{self.model_sha256[:12]}/{self.format}/{self.precision}/t{self.threads}/b{self.batch}"
                f"{accelerator_suffix(self.runtime_name, self.accelerator)}")

    @property
    def runtime_name(self) -> str:
        """The runtime that ran it (older rows name only the format)."""
        from edgekd.runtimes.catalog import FORMAT_RUNTIME

        return str(self.runtime or FORMAT_RUNTIME.get(self.format, self.format))

    @property
    def on_accelerator(self) -> str | None:
        """The accelerator it ran on: the recorded one, else the runtime's default (None: unknown runtime)."""
        from edgekd.runtimes.catalog import RUNTIMES, default_accelerator

        if self.accelerator:
            return self.accelerator
        return default_accelerator(self.runtime_name) if self.runtime_name in RUNTIMES else None

    @property
    def key_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in KEY_FIELDS[:-1]) + (self.on_accelerator,)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if out["accelerator"] is None:
            del out["accelerator"]  # a row from before accelerators stays as it was written
        if out["recipe"] is None:
            del out["recipe"]  # fp32 rows, and rows from before recipes, stay as they were written
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Measurement":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def from_result(cls, result: dict[str, Any], *, model_sha256: str | None = None, spec: str | None = None,
                    params: int | None = None, macs: int | None = None,
                    dataset_fingerprint: str | None = None, recipe: str | None = None) -> "Measurement":
        """Build from what `edgekd.bench.measure` returns (in-process, isolated, or from the agent).
        Missing model facts fall back to the artifact's own (its file hash stands in for the model).
        `recipe`: the INT8 recipe of the artifact, read by the host from its own manifest
        (`edgekd.latency.recipe.artifact_recipe`), never from the device's answer. The answer is checked
        first (`edgekd.device.answer.check_answer`: AgentError on a value no measurement has)."""
        from edgekd.device.answer import check_answer

        check_answer(result)
        art = result.get("artifact") or {}
        settings = result.get("settings") or {}
        acc = result.get("accuracy") or {}
        lat = result.get("latency")
        artifact_sha = art.get("model_sha256")
        sha = model_sha256 or artifact_sha
        if not sha:
            raise ProfileError("a measurement needs a model sha256 (the artifact manifest lists none); re-export it")
        keep = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms", "cv", "count", "throughput_per_s")
        anchor = result.get("speed_anchor") or {}
        if lat and anchor.get("p50_ms") and anchor.get("ratio_p50"):
            # how fast the machine was meanwhile (edgekd.bench.anchor): the fit divides that state out
            lat = {**lat, "anchor_p50_ms": anchor["p50_ms"], "anchor_ratio_p50": anchor["ratio_p50"]}
            keep = (*keep, "anchor_p50_ms", "anchor_ratio_p50")
        return cls(
            model_sha256=sha,
            format=str(art.get("format")),
            precision=str(art.get("precision")),
            threads=int(settings.get("threads") or 0),
            batch=int(settings.get("batch") or 1),
            accelerator=settings.get("accelerator") or (result.get("runner_info") or {}).get("accelerator"),
            spec=spec,
            params=params,
            macs=macs,
            size_bytes=art.get("size_bytes"),
            latency={k: _round(lat[k]) for k in keep if k in lat} if lat else None,
            peak_rss_bytes=(result.get("memory") or {}).get("peak_rss_bytes"),
            accuracy=acc.get("top1"),
            accuracy_count=acc.get("count"),
            dataset_fingerprint=dataset_fingerprint or acc.get("data_sha256"),
            load_ms=_round(result.get("load_ms")),
            first_inference_ms=_round(result.get("first_inference_ms")),
            input_source=settings.get("input_source"),
            runtime=art.get("runtime"),
            artifact_sha256=artifact_sha,
            versions=dict(result.get("versions") or {}),
            warnings=list(result.get("warnings") or []),
            recipe=recipe,
        )


def _round(v: Any) -> Any:
    # 5 significant digits keep the YAML readable; a fixed number of *decimals* would leave a 5 µs
    # model (0.0054 ms) with two digits, a 1-2 % error the latency model then has to fit around
    return float(f"{v:.5g}") if isinstance(v, float) else v


@dataclass
class Profile:
    """A device profile in memory. Use `record` to add a measurement, `save_profile` to write."""

    name: str
    device: dict[str, Any] = field(default_factory=dict)
    measurements: dict[str, Measurement] = field(default_factory=dict)
    created: str = field(default_factory=now_iso)
    updated: str = field(default_factory=now_iso)
    latency_model: Any = None  # owned by the calibration step (later issue); stored verbatim
    extra: dict[str, Any] = field(default_factory=dict)  # unknown top-level keys, kept on save
    path: Path | None = None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Profile":
        """Read a profile; a missing, unparsable or wrongly shaped file raises ProfileError naming it."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ProfileError(f"profile {path} does not exist; run `edgekd bench ... --profile {path.stem}` first") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ProfileError(f"profile {path} is unreadable ({err})") from None
        try:
            data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 (a safe loader: libyaml's or PyYAML's)
        except yaml.YAMLError as err:
            line = getattr(getattr(err, "problem_mark", None), "line", None)
            where = f" near line {line + 1}" if line is not None else ""
            raise ProfileError(f"profile {path} is not valid YAML{where}; fix or delete it") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ProfileError(f"profile {path} is not an {SCHEMA} file; fix or delete it")
        from edgekd.device.profile_schema import check_profile_data

        check_profile_data(data, path)  # every field of the right type, or one line naming it
        raw = data.get("measurements") or {}
        if not isinstance(raw, dict):
            raise ProfileError(f"profile {path}: 'measurements' must be a mapping; fix or delete the file")
        measurements = {}
        for key, entry in raw.items():
            try:
                m = Measurement.from_dict(entry)
            except TypeError as err:
                raise ProfileError(f"profile {path}: measurement {key!r} is malformed ({err}); fix or delete it") from None
            measurements[m.key] = m
        known = {"schema", "name", "device", "measurements", "created", "updated", "latency_model"}
        return cls(
            name=str(data.get("name") or path.stem),
            device=dict(data.get("device") or {}),
            measurements=measurements,
            created=str(data.get("created") or now_iso()),
            updated=str(data.get("updated") or now_iso()),
            latency_model=data.get("latency_model"),
            extra={k: v for k, v in data.items() if k not in known},
            path=path,
        )

    @classmethod
    def load_or_new(cls, path: str | os.PathLike[str], device: dict[str, Any] | None = None) -> "Profile":
        path = Path(path)
        if path.exists():
            return cls.load(path)
        return cls(name=path.stem, device=dict(device or {}), path=path)

    def record(self, measurement: Measurement | dict[str, Any]) -> Measurement:
        """Add a measurement; one with the same key replaces the old one and its count goes up."""
        m = measurement if isinstance(measurement, Measurement) else Measurement.from_dict(measurement)
        old = self.measurements.get(m.key)
        m.count = (old.count + 1) if old else max(1, m.count)
        self.measurements[m.key] = m
        self.updated = now_iso()
        return m

    def set_device(self, fingerprint: dict[str, Any]) -> None:
        """Store the latest fingerprint; a different machine is refused, because one profile describes
        one device: another arch / CPU model, or (when both fingerprints carry one) another speed
        identity (`edgekd.device.identity`: ISA flags, CPU family/model/stepping, cores, ...). Such a
        foreign profile can only be a prior for this device (`edgekd deploy` transfers from it)."""
        from edgekd.device.identity import hardware_identity, model_identity, differences

        where = self.path or self.name
        for key in ("arch", "cpu_model"):
            old, new = self.device.get(key), fingerprint.get(key)
            if old and new and old != new:
                raise ProfileError(
                    f"profile {where} belongs to a device with {key}={old!r}, not {new!r}; "
                    "use --profile with another name for this device"
                )
        if hardware_identity(self.device) is not None and hardware_identity(fingerprint) is not None:
            diff = differences(model_identity(self.device, ""), model_identity(fingerprint, ""))
            if diff:
                raise ProfileError(
                    f"profile {where} was measured on another device ({'; '.join(diff)}); it is foreign here and "
                    f"is never used as this device's: drop --profile (the default name is {device_name(fingerprint)}), "
                    "and deploy transfers from it"
                )
        self.device = dict(fingerprint)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "name": self.name,
            "device": self.device,
            "created": self.created,
            "updated": self.updated,
            "measurements": {k: self.measurements[k].to_dict() for k in sorted(self.measurements)},
            "latency_model": self.latency_model,
            **self.extra,
        }

    def rows(self) -> list[Measurement]:
        """Measurements ordered for display: by spec, then format, precision, threads, batch."""
        return sorted(self.measurements.values(),
                      key=lambda m: (m.spec or "", m.format, m.precision, m.threads, m.batch, m.model_sha256))


def dump_profile(profile: Profile) -> str:
    return yaml.dump(profile.to_dict(), Dumper=_SAFE_DUMPER, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


def save_profile(profile: Profile, path: str | os.PathLike[str] | None = None) -> Path:
    """Write `profile` atomically under its lock. This overwrites the file with exactly `profile`;
    to add measurements without losing a concurrent writer's, use `record_measurements`."""
    path = Path(path or profile.path or profile_path(profile.name))
    with file_lock(path):
        _write(path, dump_profile(profile))
    profile.path = path
    return path


def record_measurements(path: str | os.PathLike[str], measurements: Iterable[Measurement],
                        device: dict[str, Any] | None = None) -> Profile:
    """Lock, re-read the newest profile from disk, record, write atomically, unlock.

    Re-reading under the lock is what keeps two concurrent benches from losing each other's rows.
    """
    path = Path(path)
    with file_lock(path):
        profile = Profile.load_or_new(path, device)
        if device:
            profile.set_device(device)
        for m in measurements:
            profile.record(m)
        _write(path, dump_profile(profile))
    profile.path = path
    return profile


def _write(path: Path, text: str) -> None:
    """Write under the profile's lock: no other writer is active, so any temp file of an earlier
    write beside the profile was left by a killed writer, and is removed."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            stale.unlink()
        except OSError:
            pass
    atomic_write_text(path, text)
    # the temp file behind the atomic write is created 0600; a profile is a shared, committed file
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# the write every profile writer uses under the profile's lock (calibration too)
write_under_lock = _write


def profile_path(name: str, profiles_dir: str | os.PathLike[str] = "profiles") -> Path:
    """`profiles/<name>.yaml` for a bare name; a name ending in .yaml/.yml or holding a path
    separator is taken as a path."""
    if name.endswith((".yaml", ".yml")) or os.sep in name or "/" in name:
        return Path(name)
    if not _NAME_RE.match(name):
        raise ConfigError(f"profile name {name!r} may hold only letters, digits, '.', '_' and '-'")
    return Path(profiles_dir) / f"{name}.yaml"


def device_name(fingerprint: dict[str, Any]) -> str:
    """A file name that says what the device is, from its fingerprint: CPU model, arch, cores
    (and GPU when there is one), then the widest vector ISA and a digest of the speed identity
    (`edgekd.device.identity.name_suffix`), e.g. `amd-epyc-x86_64-2c-avx2-1a2b3c4d`: two VMs that
    report the same CPU model name but differ in an ISA flag (or family, stepping, ...) get two
    profiles. A fingerprint from before identities keeps the short name (`amd-epyc-x86_64-2c`)."""
    from edgekd.device.identity import name_suffix

    cpu = str(fingerprint.get("cpu_model") or fingerprint.get("cpu") or fingerprint.get("processor") or "cpu")
    parts = [cpu, str(fingerprint.get("arch") or fingerprint.get("machine") or "")]
    cores = fingerprint.get("cores_physical") or fingerprint.get("cores") or fingerprint.get("cores_logical")
    if cores:
        parts.append(f"{cores}c")
    gpu = fingerprint.get("gpu")
    if isinstance(gpu, dict):
        gpu = gpu.get("name")
    if gpu:
        parts.append(str(gpu))
    parts.append(name_suffix(fingerprint))
    slug = re.sub(r"\((r|tm)\)", "", "-".join(p for p in parts if p).lower())
    slug = re.sub(r"[^a-z0-9._]+", "-", slug).strip("-.")
    return re.sub(r"-{2,}", "-", slug) or "device"
