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

from edgekd.bench.devices import Device, open_device
from edgekd.bench.inputs import read_manifest
from edgekd.bench.table import BenchRow
from edgekd.errors import ConfigError, EdgeKDError
from edgekd.profiles import Measurement, device_name, profile_path, record_measurements

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
    batch: int = 1
    warmup_count: int = 10
    warmup_s: float = 1.0
    min_count: int = 100
    min_s: float = 3.0
    export_dir: str | None = None  # where missing exports go; default: next to the checkpoint


@dataclass
class BenchReport:
    rows: list[BenchRow]
    device: dict[str, Any]
    device_url: str
    profile_path: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"device_url": self.device_url, "device": self.device, "profile": self.profile_path,
                "rows": [r.to_dict() for r in self.rows]}


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
    jobs: list[_Job] = []
    for source in cfg.sources:
        artifacts, checkpoint = _resolve_source(Path(source))
        have: set[tuple[str, str]] = set()
        for art in artifacts:
            man = read_manifest(art)
            fmt, prec = _format_of(man, table), str(man.get("precision"))
            if fmt not in formats or prec not in cfg.precisions:
                continue
            have.add((fmt, prec))
            model = (man.get("source") or {}).get("spec") or art.name
            jobs.append(_Job(model, fmt, prec, man.get("runtime"), artifact=art))
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


def _resolve_source(path: Path) -> tuple[list[Path], Path | None]:
    """(artifact dirs, checkpoint or None) for a run dir, a checkpoint, an artifact or a folder of them."""
    if not path.exists():
        raise ConfigError(f"{path}: no such run, checkpoint or artifact directory")
    if path.is_file():
        if path.suffix != ".pt":
            raise ConfigError(f"{path}: give a run directory, a .pt checkpoint or an artifact directory")
        return _artifacts_under(_export_root(path)), path
    if (path / "manifest.json").is_file():
        return [path], None
    checkpoint = path / "student.pt" if (path / "student.pt").is_file() else None
    artifacts = _artifacts_under(path) + (_artifacts_under(_export_root(checkpoint)) if checkpoint else [])
    if not artifacts and checkpoint is None:
        raise ConfigError(f"{path}: no student.pt and no artifact (manifest.json) inside; nothing to benchmark")
    return sorted(set(artifacts)), checkpoint


def _artifacts_under(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob("*/manifest.json"))


def _export_root(checkpoint: Path, export_dir: str | None = None) -> Path:
    return Path(export_dir) if export_dir else checkpoint.parent / "artifacts"


def _spec_of(checkpoint: Path) -> str:
    return checkpoint.parent.name if checkpoint.name == "student.pt" else checkpoint.stem


def prepare_eval_data(data: str | None, artifacts_hint: list[Path], workdir: Path) -> tuple[Path | None, str | None]:
    """(.npz to evaluate on, dataset fingerprint). A .npz is used whole; a dataset name or folder is
    loaded with the model's input size and its test split written out."""
    if not data:
        return None, None
    path = Path(data)
    if path.suffix == ".npz":
        if not path.is_file():
            raise ConfigError(f"evaluation data {path} not found")
        from edgekd.fileio import sha256_file

        return path, sha256_file(path)
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.data import load_dataset

    size = None
    for art in artifacts_hint:
        shape = read_manifest(art)["inputs"][0]["shape"]
        if len(shape) == 4:
            size = int(shape[2] if read_manifest(art)["inputs"][0].get("layout", "NCHW") == "NCHW" else shape[1])
            break
    ds = load_dataset(data, image_size=size)
    out = write_eval_npz(workdir / f"{ds.name}-test.npz", ds.test.x, ds.test.y, normalized=True)
    return out, f"{ds.fingerprint}:test"


def run_bench(cfg: BenchConfig, on_progress: Callable[[str, int, int], None] | None = None) -> BenchReport:
    """Benchmark every planned row on the device; record the good ones in the profile."""
    device = open_device(cfg.device, cfg.key)
    try:
        fingerprint = device.fingerprint()
        jobs = plan_jobs(cfg, device.runtimes())
        rows: list[BenchRow] = []
        measurements: list[Measurement] = []
        with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
            data_path, data_fp = None, None
            total = len(jobs)
            for i, job in enumerate(jobs):
                label = f"{job.model} {job.format}/{job.precision}"
                if on_progress:
                    on_progress(label, i, total)
                if job.skip_reason:
                    rows.append(BenchRow(job.model, job.format, job.precision, False, job.skip_reason))
                    continue
                try:
                    if job.artifact is None:
                        assert job.checkpoint is not None
                        job.artifact = export_missing(job.checkpoint, job.format, job.precision, cfg, data_path)
                    if cfg.data and data_path is None:
                        data_path, data_fp = prepare_eval_data(cfg.data, [job.artifact], Path(tmp))
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
            record_measurements(path, measurements, device=fingerprint)
            saved = str(path)
        return BenchReport(rows, fingerprint, cfg.device, saved)
    finally:
        device.close()


def export_missing(checkpoint: Path, fmt: str, precision: str, cfg: BenchConfig, data: Path | None) -> Path:
    """Export `checkpoint` to one format × precision through the public export API."""
    from edgekd import api

    out = _export_root(checkpoint, cfg.export_dir) / f"{fmt}-{precision}"
    result = api.export(str(checkpoint), formats=[fmt], precisions=[precision], out_dir=str(out.parent))
    return _artifact_from_export(result, out)


def _artifact_from_export(result: Any, expected: Path) -> Path:
    # the export API returns artifact dirs (or rows with a status); take the one it made
    items = result if isinstance(result, (list, tuple)) else [result]
    for item in items:
        status = getattr(item, "status", None) or (item.get("status") if isinstance(item, dict) else None)
        if status not in (None, "ok"):
            reason = getattr(item, "error", None) or (item.get("error") if isinstance(item, dict) else None)
            raise EdgeKDError(f"export failed: {reason}")
        path = getattr(item, "artifact", None) or getattr(item, "path", None) or \
            (item.get("artifact") or item.get("path") if isinstance(item, dict) else item)
        if path and (Path(path) / "manifest.json").is_file():
            return Path(path)
    if (expected / "manifest.json").is_file():
        return expected
    raise EdgeKDError(f"export produced no artifact at {expected}")


def _bench_one(device: Device, job: _Job, cfg: BenchConfig, data: Path | None,
               data_fp: str | None) -> tuple[BenchRow, Measurement]:
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
    if data is not None:
        try:
            acc = device.eval(job.artifact, data, {"threads": cfg.threads, "latency": False, "accuracy": True})
            result["accuracy"] = acc.get("accuracy")
        except EdgeKDError as err:
            warnings.append(f"accuracy failed: {_short(err)}")
    result["warnings"] = warnings
    src = manifest.get("source") or {}
    m = Measurement.from_result(result, model_sha256=src.get("checkpoint_sha256"), spec=src.get("spec") or job.model,
                                params=src.get("params"), macs=src.get("macs"), dataset_fingerprint=data_fp)
    lat = result.get("latency") or {}
    row = BenchRow(job.model, job.format, job.precision, True, "; ".join(warnings) or None,
                   size_bytes=(result.get("artifact") or {}).get("size_bytes"), accuracy=m.accuracy,
                   p50_ms=lat.get("p50_ms"), p90_ms=lat.get("p90_ms"), p99_ms=lat.get("p99_ms"),
                   peak_rss_bytes=(result.get("memory") or {}).get("peak_rss_bytes"), artifact=str(job.artifact),
                   threads=cfg.threads, batch=cfg.batch, warnings=warnings, result=result)
    return row, m


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
