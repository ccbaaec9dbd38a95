"""`edgekd bench` as a library call: export what is missing, measure every format × precision the
device can run, one row each, and record the results in the device's profile (host side).

    rows = run_bench(BenchConfig(sources=["runs/s1"], device="local", data="digits"))

One failing format never aborts or hides the others: every step of every row (export, upload,
latency run, accuracy run) is caught on its own and turned into a ❌ row with the reason.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekd.bench.devices import Device, on_accelerator, open_device
from edgekd.bench.inputs import read_manifest
from edgekd.bench.table import BenchRow
from edgekd.errors import ConfigError, DataError, EdgeKDError
from edgekd.fileio import sha256_file
from edgekd.device.profiles import Measurement, Profile, device_name, profile_path, record_measurements

ALL = "all"


@dataclass
class BenchConfig:
    """Everything `edgekd bench` takes. `formats`/`precisions` of None mean all / fp32+int8."""

    sources: list[str]
    device: str = "local"
    key: str | None = None
    formats: list[str] | None = None
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    data: str | None = None  # an evaluation .npz, or a dataset name/folder whose test split is used
    profile: str | None = None  # name or path; None = named after the device's fingerprint
    profiles_dir: str = "profiles"
    record: bool = True
    threads: int | None = None
    accelerator: str | None = None  # cpu, gpu, npu, ...: None = each runtime's default
    batch: int = 1
    warmup_count: int = 10
    warmup_s: float = 1.0
    min_count: int = 100
    min_s: float = 3.0
    export_dir: str | None = None  # where missing exports go; default: <run>/artifacts
    target: str = "cpu"  # the target class missing exports are made for (`edgekd targets` lists them)


@dataclass
class BenchReport:
    rows: list[BenchRow]
    device: dict[str, Any]
    device_url: str
    profile_path: str | None
    drift: list[dict[str, Any]] = field(default_factory=list)  # edgekd.latency.drift.bench_drift: measured vs predicted

    def to_dict(self) -> dict[str, Any]:
        return {"device_url": self.device_url, "device": self.device, "profile": self.profile_path,
                "rows": [r.to_dict() for r in self.rows], "drift": self.drift}


@dataclass
class _Job:
    """One row to produce: an artifact that exists, or a (checkpoint, format, precision) to export."""

    model: str
    format: str
    precision: str
    runtime: str | None
    artifact: Path | None = None
    checkpoint: Path | None = None
    skip_reason: str | None = None


def runtime_formats() -> dict[str, tuple[str, tuple[str, ...]]]:
    """{format as users type it: (runtime name, precisions it exports)} from the RUNTIMES registry."""
    from edgekd.runtimes import FORMAT_RUNTIME, RUNTIMES

    return {fmt: (rt, tuple(RUNTIMES.get(rt).precisions)) for fmt, rt in FORMAT_RUNTIME.items()}


def _format_of(manifest: dict[str, Any], table: dict[str, tuple[str, tuple[str, ...]]]) -> str:
    # an artifact's manifest names its runtime; the user-facing format is the one that runtime runs
    for fmt, (rt, _) in table.items():
        if rt == manifest.get("runtime"):
            return fmt
    return str(manifest.get("format"))


def plan_jobs(cfg: BenchConfig, device_runtimes: dict[str, str | None]) -> list[_Job]:
    """Turn the sources into rows: existing artifacts as they are, checkpoints × formats × precisions."""
    table = runtime_formats()
    formats = list(table) if not cfg.formats or cfg.formats == [ALL] else cfg.formats
    for f in formats:
        if f not in table:
            raise ConfigError(f"unknown format {f!r}; formats: {', '.join(table)} or all")
    from edgekd.runtimes.base import PRECISIONS

    for p in cfg.precisions:
        if p not in PRECISIONS:
            raise ConfigError(f"unknown precision {p!r}; precisions: {', '.join(PRECISIONS)}")
    jobs: list[_Job] = []
    for source in cfg.sources:
        artifacts, checkpoint = _resolve_source(Path(source), cfg.export_dir)
        have: set[tuple[str, str]] = set()
        ckpt_sha = sha256_file(checkpoint) if checkpoint is not None else None
        for art in artifacts:
            man = read_manifest(art)
            if ckpt_sha and (man.get("source") or {}).get("checkpoint_sha256") not in (None, ckpt_sha):
                continue  # made from an older checkpoint: stale, export it again
            fmt, prec = _format_of(man, table), str(man.get("precision"))
            if fmt not in formats or prec not in cfg.precisions:
                continue
            have.add((fmt, prec))
            model = (man.get("source") or {}).get("spec") or art.name
            jobs.append(_Job(model, fmt, prec, man.get("runtime"), artifact=art, checkpoint=checkpoint))
        if checkpoint is None:
            continue
        for fmt in formats:
            runtime, precs = table[fmt]
            for prec in cfg.precisions:
                if prec not in precs or (fmt, prec) in have:
                    continue  # a precision a format cannot export is not a row; an existing artifact is reused
                jobs.append(_Job(_spec_of(checkpoint), fmt, prec, runtime, checkpoint=checkpoint))
    for job in jobs:
        if job.runtime not in device_runtimes:
            job.skip_reason = f"device has no {job.runtime} runtime"
    if not jobs:
        raise ConfigError(f"nothing to benchmark in {', '.join(cfg.sources)} for formats {formats} and "
                          f"precisions {cfg.precisions}")
    return jobs


def _resolve_source(path: Path, export_dir: str | None = None) -> tuple[list[Path], Path | None]:
    """(artifact dirs, checkpoint or None) for a run dir, a checkpoint, an artifact or a folder of them."""
    if not path.exists():
        raise ConfigError(f"{path}: no such run, checkpoint or artifact directory")
    if path.is_file():
        if path.suffix != ".pt":
            raise ConfigError(f"{path}: give a run directory, a .pt checkpoint or an artifact directory")
        return _artifacts_under(_export_root(path, export_dir)), path
    if (path / "manifest.json").is_file():
        return [path], None
    checkpoint = path / "student.pt" if (path / "student.pt").is_file() else None
    artifacts = _artifacts_under(path) + (_artifacts_under(_export_root(checkpoint, export_dir)) if checkpoint else [])
    if not artifacts and checkpoint is None:
        raise ConfigError(f"{path}: no student.pt and no artifact (manifest.json) inside; nothing to benchmark")
    return sorted(set(artifacts)), checkpoint


def _artifacts_under(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/manifest.json"))


def _export_root(checkpoint: Path, export_dir: str | None = None) -> Path:
    # one folder per checkpoint, so two runs benched together never share an artifact directory
    return Path(export_dir) / _spec_of(checkpoint) if export_dir else checkpoint.parent / "artifacts"


def _spec_of(checkpoint: Path) -> str:
    return checkpoint.parent.name if checkpoint.name == "student.pt" else checkpoint.stem


def prepare_eval_data(data: str | None, artifacts_hint: list[Path], workdir: Path) -> tuple[Path | None, str | None]:
    """(.npz to evaluate on, dataset fingerprint). An evaluation .npz is used whole; a dataset (a name,
    a folder, or an .npz of raw images as `edgekd deploy --data` takes) gives its test split, prepared
    as the artifact's manifest says (`edgekd.bench.prepare`)."""
    from edgekd.bench.eval_check import check_eval_npz
    from edgekd.bench.prepare import dataset_eval_npz, is_eval_npz

    if not data:
        return None, None
    path = Path(data)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ConfigError(f"evaluation data {path} not found")
        if is_eval_npz(path):
            from edgekd.fileio import sha256_file

            check_eval_npz(path, artifacts_hint)  # bad data is a usage error (exit 2), not a warning per row
            return path, sha256_file(path)
    out, fingerprint = dataset_eval_npz(data, artifacts_hint, workdir)
    try:
        check_eval_npz(out, artifacts_hint)  # the prepared split must fit every artifact too (exit 2 if not)
    except DataError as err:
        raise DataError(f"--data {data}, prepared as the artifact's manifest says: {err}") from None
    return out, fingerprint


def run_bench(cfg: BenchConfig, on_progress: Callable[[str, int, int], None] | None = None) -> BenchReport:
    """Benchmark every planned row on the device; record the good ones in the profile."""
    if cfg.accelerator is not None:  # a misspelt accelerator is a usage error before anything runs
        from edgekd.runtimes.catalog import canonical_accelerator

        cfg.accelerator = canonical_accelerator(cfg.accelerator, "--accelerator")
    device = on_accelerator(open_device(cfg.device, cfg.key), cfg.accelerator)
    try:
        fingerprint = device.fingerprint()
        if cfg.record:
            # a malformed profile is a usage error found before any measurement, not after
            existing = profile_path(cfg.profile or device_name(fingerprint), cfg.profiles_dir)
            if existing.exists():
                Profile.load(existing)
        jobs = plan_jobs(cfg, device.runtimes())
        total = len(jobs) + 1
        if on_progress:
            on_progress("exporting what is missing", 0, total)
        data_settings = export_missing(jobs, cfg, fingerprint)
        _name_rows_by_spec(jobs)
        rows: list[BenchRow] = []
        measurements: list[Measurement] = []
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
            data_path, data_fp = _eval_data(cfg, jobs, data_settings, Path(tmp))
            for i, job in enumerate(jobs, start=1):
                if on_progress:
                    on_progress(f"{job.model} {job.format}/{job.precision}", i, total)
                if job.skip_reason:
                    rows.append(BenchRow(job.model, job.format, job.precision, False, job.skip_reason,
                                         artifact=str(job.artifact) if job.artifact else None))
                    continue
                try:
                    row, m = _bench_one(device, job, cfg, data_path, data_fp)
                except EdgeKDError as err:
                    row, m = BenchRow(job.model, job.format, job.precision, False, _short(err),
                                      artifact=str(job.artifact) if job.artifact else None), None
                rows.append(row)
                if m is not None:
                    measurements.append(m)
            if on_progress:
                on_progress("done", total, total)
        saved = None
        if cfg.record and measurements:
            path = profile_path(cfg.profile or device_name(fingerprint), cfg.profiles_dir)
            from edgekd.latency.drift import bench_drift

            drift = bench_drift(path, fingerprint, measurements)  # before recording: out of sample
            record_measurements(path, measurements, device=fingerprint)
            saved = str(path)
        return BenchReport(rows, fingerprint, cfg.device, saved, drift if cfg.record and measurements else [])
    finally:
        device.close()


def _name_rows_by_spec(jobs: list[_Job]) -> None:
    # rows of one checkpoint are named by the student's spec once any of its artifacts tells it
    specs: dict[Path, str] = {}
    for job in jobs:
        if job.checkpoint is not None and job.artifact is not None:
            spec = (read_manifest(job.artifact).get("source") or {}).get("spec")
            if spec:
                specs[job.checkpoint] = spec
    for job in jobs:
        if job.checkpoint in specs:
            job.model = specs[job.checkpoint]


def export_missing(jobs: list[_Job], cfg: BenchConfig, fingerprint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Export every row that has no artifact yet, one `export_checkpoint` call per checkpoint (the
    model and data load once), for the device whose `fingerprint` it is (its ISA picks the INT8
    settings). A row whose export fails gets its reason; the others go on.
    Returns the data settings the export checked parity on (the run's own dataset), if any."""
    from edgekd.device.targets import load_target

    pending: dict[Path, list[_Job]] = {}
    for job in jobs:
        if job.artifact is None and job.skip_reason is None and job.checkpoint is not None:
            pending.setdefault(job.checkpoint, []).append(job)
    if not pending:
        return _summary_data(jobs, cfg)
    target = load_target(cfg.target)
    settings = None
    from edgekd.runtimes.export import export_checkpoint

    for checkpoint, todo in pending.items():
        for job in todo:
            if job.format not in target.formats or job.precision not in target.precisions:
                job.skip_reason = f"target {target.name} has no {job.format}/{job.precision} export; use --target"
        todo = [j for j in todo if j.skip_reason is None]
        if not todo:
            continue
        formats = sorted({j.format for j in todo})
        precisions = sorted({j.precision for j in todo})
        from edgekd.models.checkpoint import read_checkpoint

        # a checkpoint that cannot be read at all is bad input for the whole command (exit 2),
        # not one failed export per row
        read_checkpoint(checkpoint)
        try:
            data = cfg.data if cfg.data and not cfg.data.endswith(".npz") else None
            report = export_checkpoint(str(checkpoint), str(_export_root(checkpoint, cfg.export_dir)), target=target.name,
                                       formats=formats, precisions=precisions, data=data, threads=cfg.threads,
                                       device_identity=fingerprint or None,
                                       device_source=f"device {cfg.device}" if fingerprint else None).to_dict()
        except EdgeKDError as err:
            for job in todo:
                job.skip_reason = f"export failed: {_short(err)}"
            continue
        settings = settings or report.get("data")
        by_key = {(r["format"], r["precision"]): r for r in report.get("rows", [])}
        for job in todo:
            row = by_key.get((job.format, job.precision))
            if row is None:
                job.skip_reason = "export made no artifact"
            elif row.get("status") != "ok":
                job.skip_reason = f"export failed: {_short(Exception(row.get('error') or 'unknown'))}"
            else:
                job.artifact = Path(row["artifact"])
    return settings


def _summary_data(jobs: list[_Job], cfg: BenchConfig) -> dict[str, Any] | None:
    """Data settings from an earlier `edgekd export` summary: next to the checkpoint, or, for an
    export directory given as it is (`edgekd bench out/s1`), beside its artifacts; None without one."""
    import json

    for job in jobs:
        if job.checkpoint is not None:
            summary = _export_root(job.checkpoint, cfg.export_dir) / "export.json"
        elif job.artifact is not None:
            summary = job.artifact.parent / "export.json"
        else:
            continue
        try:
            data = json.loads(summary.read_text(encoding="utf-8")).get("data")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(data, dict):
            return data
    return None


def _eval_data(cfg: BenchConfig, jobs: list[_Job], settings: dict[str, Any] | None,
               workdir: Path) -> tuple[Path | None, str | None]:
    """--data as given; without it, the test split of the dataset the run was exported (and trained) on."""
    artifacts = [j.artifact for j in jobs if j.artifact is not None]
    if cfg.data:
        return prepare_eval_data(cfg.data, artifacts, workdir)
    if not settings or not settings.get("source"):
        return None, None
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.data import load_dataset

    kw = {k: settings[k] for k in ("val_fraction", "test_fraction") if settings.get(k) is not None}
    from edgekd.data.text import options_for_artifacts  # text: the artifact's own tokenizer and length

    kw.update(options_for_artifacts(artifacts))
    ds = load_dataset(settings["source"], image_size=settings.get("image_size"), seed=int(settings.get("seed") or 0), **kw)
    out = write_eval_npz(workdir / f"{ds.name}-test.npz", ds.test.x, ds.test.y, normalized=True)
    return out, f"{ds.fingerprint}:test"


def _bench_one(device: Device, job: _Job, cfg: BenchConfig, data: Path | None,
               data_fp: str | None) -> tuple[BenchRow, Measurement]:
    from edgekd.latency.recipe import artifact_recipe

    assert job.artifact is not None
    manifest = read_manifest(job.artifact)
    if manifest.get("status", "ok") != "ok":
        raise EdgeKDError(f"artifact failed its export: {manifest.get('error') or 'see manifest'}")
    request = {"threads": cfg.threads, "batch": cfg.batch, "warmup_count": cfg.warmup_count,
               "warmup_s": cfg.warmup_s, "min_count": cfg.min_count, "min_s": cfg.min_s}
    # latency and peak memory at the deployment batch; accuracy in its own run, so the evaluation
    # batch never inflates the peak memory figure
    result = device.bench(job.artifact, request)
    warnings = list(result.get("warnings") or [])
    acc_error = None  # a failed accuracy step fails the row (its latency is still shown and recorded)
    if data is not None:
        try:
            acc = device.eval(job.artifact, data, {"threads": cfg.threads, "latency": False, "accuracy": True})
            result["accuracy"] = acc.get("accuracy")
        except EdgeKDError as err:
            acc_error = f"accuracy failed: {_reason(err)}"
    result["warnings"] = warnings
    src = manifest.get("source") or {}
    job.model = src.get("spec") or job.model
    m = Measurement.from_result(result, model_sha256=src.get("checkpoint_sha256"), spec=job.model,
                                params=src.get("params"), macs=src.get("macs"), dataset_fingerprint=data_fp,
                                recipe=artifact_recipe(manifest))
    lat = result.get("latency") or {}
    reasons = [r for r in (acc_error, *warnings) if r]
    row = BenchRow(job.model, job.format, job.precision, acc_error is None, "; ".join(reasons) or None,
                   size_bytes=(result.get("artifact") or {}).get("size_bytes"), accuracy=m.accuracy,
                   p50_ms=lat.get("p50_ms"), p90_ms=lat.get("p90_ms"), p99_ms=lat.get("p99_ms"),
                   peak_rss_bytes=(result.get("memory") or {}).get("peak_rss_bytes"), artifact=str(job.artifact),
                   threads=cfg.threads, batch=cfg.batch, warnings=warnings, result=result)
    return row, m


def _reason(err: BaseException) -> str:
    """The whole first line of an error, long file paths (an agent's blob store) cut to their last part,
    so the cause (e.g. the shapes that do not fit) is never pushed off the end."""
    import re

    text = str(err).strip().splitlines()
    line = text[0] if text else type(err).__name__
    return re.sub(r"(?:/[^\s/:'\"]+){3,}/([^\s/:'\"]+)", r".../\1", line)


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
