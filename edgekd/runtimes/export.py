"""`edgekd export`: one checkpoint -> one artifact per (format, precision), each through the parity gate.

Ultralytics-style table, without its failure modes: every row has a status (ok / failed + reason),
one failing format never aborts or hides the others, and a row that fails its parity gate keeps its
artifact on disk, marked failed in its manifest. Host side (torch); called by `edgekd.api.export`.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from edgekd.errors import ConfigError, DataError, EdgeKDError
from edgekd.fileio import atomic_write_json, sha256_file
from edgekd.runtimes import FORMAT_RUNTIME, RUNTIMES
from edgekd.runtimes.base import artifact_size, read_manifest, update_manifest
from edgekd.runtimes.parity import DEFAULT_FP32_TOL, DEFAULT_MAX_DROP_PTS, check_parity, mark_failed
from edgekd.device.targets import Target, load_target
from edgekd.runtimes.catalog import PRECISION_NAMES, export_formats

SUMMARY_FILE = "export.json"


@dataclasses.dataclass
class ExportRow:
    """One (format, precision) outcome. `status` is "ok" or "failed" (with `error`)."""

    format: str
    precision: str
    runtime: str
    status: str = "failed"
    error: str | None = None
    artifact: str | None = None
    size_bytes: int | None = None
    max_abs: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    torch_accuracy: float | None = None
    accuracy_drop_pts: float | None = None
    parity_proxy: str | None = None
    int8_kernels: dict[str, Any] | None = None  # ONNX Runtime INT8: convs this host fuses (manifest fused_convs)
    int8_settings: dict[str, Any] | None = None  # INT8: the quantizer settings and the rule that chose them
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclasses.dataclass
class ExportReport:
    """All rows plus what they were made from; `to_dict()` is what `--json` prints."""

    checkpoint: str
    target: str
    out_dir: str
    data: dict[str, Any]
    rows: list[ExportRow]
    device: dict[str, Any] | None = None  # the device the artifacts were made for (None: no particular one)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "target": self.target, "out_dir": self.out_dir, "data": self.data,
                "device": self.device, "ok": self.ok, "rows": [dataclasses.asdict(r) for r in self.rows]}


def parse_names(value: str | Iterable[str] | None, valid: Iterable[str], kind: str) -> list[str] | None:
    """'a,b' or ['a','b'] -> ['a','b'] (deduplicated, ordered); ConfigError listing valid names."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = list(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    valid = list(valid)
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise ConfigError(f"unknown {kind} {', '.join(bad) or '(none given)'}; valid {kind}s: {', '.join(valid)}")
    return names


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory (its student.pt) or a checkpoint file."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / "student.pt"
        if not candidate.is_file():
            raise ConfigError(f"{path}: run directory has no student.pt; pass a run directory or a .pt checkpoint")
        return candidate
    return path


def _data_settings(checkpoint: Path, info: Any, data: str | None, image_size: int | None) -> dict[str, Any]:
    """Which dataset to calibrate and check on: --data, else the run's config.yaml, else digits at the
    model's input size."""
    import yaml

    text = getattr(info, "task", "image") == "text"
    settings: dict[str, Any] = {"source": "reviews" if text else "digits", "image_size": None, "seed": 0}
    config = checkpoint.parent / "config.yaml"
    if config.is_file():
        try:
            cfg = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            section = cfg.get("data") or {}
            for key in ("source", "image_size", "seed", "val_fraction", "test_fraction"):
                if section.get(key) is not None:
                    settings[key] = section[key]
        except (OSError, yaml.YAMLError, AttributeError):
            pass  # the run's config is a convenience; the explicit defaults still work
    if data is not None:
        settings["source"] = data
    if image_size is not None:
        settings["image_size"] = image_size
    if (not text and settings["image_size"] is None and settings["source"] == "digits"
            and tuple(info.input_shape)[1:] != (8, 8) and not _spec_fixes_resolution(info)):
        settings["image_size"] = int(info.input_shape[1])
    return settings


def checkpoint_data(checkpoint: str | Path, info: Any = None, data: str | None = None,
                    image_size: int | None = None) -> tuple[dict[str, Any], Any]:
    """(settings, dataset) an export of `checkpoint` calibrates and checks on: `--data` / `--image-size`,
    else the run's, resampled to the resolution its spec fixes (what `export_checkpoint` uses)."""
    ckpt = resolve_checkpoint(checkpoint)
    if info is None:
        from edgekd.models import load_model

        info = load_model(ckpt)[1]
    settings = _data_settings(ckpt, info, data, image_size)
    return settings, _load_data(settings, info)


def _load_data(settings: dict[str, Any], info: Any) -> Any:
    from edgekd.data import load_for_model

    ds = load_for_model(settings, info)  # text: tokenized with the checkpoint's own tokenizer
    if getattr(info, "task", "image") != "text":
        ds = _at_model_resolution(ds, info)
    if tuple(ds.input_shape) != tuple(info.input_shape) or int(ds.num_classes) != int(info.num_classes):
        raise DataError(f"data {settings['source']!r} gives inputs {tuple(ds.input_shape)} / {ds.num_classes} classes, "
                        f"the model takes {tuple(info.input_shape)} / {info.num_classes}; pass the matching --data")
    return ds


def _spec_fixes_resolution(info: Any) -> bool:
    """Whether the checkpoint's spec sets ``resolution=r`` (its data are then the run's, resampled)."""
    from edgekd.models import spec_input_shape

    try:
        return spec_input_shape(str(info.spec), (1, 1, 1))[1:] != (1, 1)
    except EdgeKDError:
        return False


def _at_model_resolution(ds: Any, info: Any) -> Any:
    """The data as a student whose spec fixes ``resolution=r`` saw it in training (resampled to r x r,
    `edgekd.data.resolution`); unchanged for every other model."""
    from edgekd.data.resolution import at_resolution
    from edgekd.models import spec_input_shape

    try:
        shape = spec_input_shape(str(info.spec), tuple(ds.input_shape))
    except EdgeKDError:
        return ds  # a spec this edgekd cannot parse: the shape check below says what is wrong
    return at_resolution(ds, shape) if shape == tuple(info.input_shape) else ds


def calibration_feeds(x_train: np.ndarray, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` real training samples, drawn deterministically, as the calibration protocol's feeds."""
    rng = np.random.default_rng(seed)
    idx = rng.permutation(x_train.shape[0])[:count]
    return [{"input": x_train[i:i + 1]} for i in np.sort(idx)]


def _plan(target: Target, formats: list[str] | None, precisions: list[str] | None) -> list[tuple[str, str]]:
    """(format, precision) rows. Explicit choices outside the target are user errors; when either the
    formats or the precisions are the target's defaults, combinations the format's adapter cannot produce
    are left out (`--target nvidia-gpu -p fp16` means TensorRT fp16, not a failed ONNX Runtime fp16 row),
    and an explicit precision no format can produce is a user error."""
    for kind, chosen, allowed in (("format", formats, target.formats), ("precision", precisions, target.precisions)):
        outside = [c for c in chosen or [] if c not in allowed]
        if outside:
            raise ConfigError(f"target {target.name!r} does not support {kind} {', '.join(outside)}; "
                              f"valid {kind}s for it: {', '.join(allowed)}")
    rows = []
    for fmt in formats or list(target.formats):
        adapter = RUNTIMES.get(FORMAT_RUNTIME[fmt])
        for precision in precisions or list(target.precisions):
            if (precisions is None or formats is None) and precision not in adapter.precisions:
                continue
            rows.append((fmt, precision))
    unmade = [p for p in precisions or [] if p not in {prec for _, prec in rows}]
    if unmade:
        raise ConfigError(f"no format of target {target.name!r} exports {', '.join(unmade)}; "
                          f"choose formats with -f (valid: {', '.join(target.formats)})")
    return rows


MARKER = ".edgekd-artifact"


def _prepare_dir(path: Path) -> None:
    """Start an artifact directory afresh, refusing to delete anything edgekd did not create (a
    marker file is written first, so even a half-finished earlier export is recognised)."""
    if path.exists():
        ours = (path / "manifest.json").is_file() or (path / MARKER).is_file()
        if any(path.iterdir()) and not ours:
            raise ConfigError(f"{path}: exists and is not an edgekd artifact; choose another -o directory")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by edgekd export\n", encoding="utf-8")


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    target: str = "cpu",
    formats: str | Iterable[str] | None = None,
    precisions: str | Iterable[str] | None = None,
    data: str | None = None,
    image_size: int | None = None,
    threads: int | None = None,
    targets_dir: Any = None,
    fp32_tol: float = DEFAULT_FP32_TOL,
    max_drop: float = DEFAULT_MAX_DROP_PTS,
    calibration_samples: int = 256,
    format_options: dict[str, dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    device_identity: dict[str, Any] | None = None,
    device_source: str | None = None,
) -> ExportReport:
    """Export `checkpoint` (file or run dir) for `target`: one artifact per (format, precision) under
    `out_dir/<format>-<precision>/`, each parity-checked on the labelled test split, and a summary
    `out_dir/export.json`. Rows never raise: a failure is a row with its reason. `device_identity`
    (the device's agent fingerprint or hardware identity) lets adapters pick ISA-dependent settings
    (ONNX Runtime INT8: `int8_settings.ort_int8_settings`), recorded in each manifest; `device_source`
    says where it came from (an agent URL, a profile) for the report."""
    from edgekd.models import load_model

    tgt = load_target(target, targets_dir)
    fmts = parse_names(formats, export_formats(), "format")
    precs = parse_names(precisions, PRECISION_NAMES, "precision")
    plan = _plan(tgt, fmts, precs)
    ckpt = resolve_checkpoint(checkpoint)
    model, info = load_model(ckpt)
    settings, ds = checkpoint_data(ckpt, info, data, image_size)
    threads = threads if threads is not None else tgt.default_threads
    calibration = calibration_feeds(ds.train.x, calibration_samples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_sha = sha256_file(ckpt)
    rows: list[ExportRow] = []
    for fmt, precision in plan:
        row = _export_row(model, info, fmt, precision, out / f"{fmt}-{precision}", ds=ds, calibration=calibration,
                          threads=threads, target=tgt, fp32_tol=fp32_tol, max_drop=max_drop,
                          options=(format_options or {}).get(fmt, {}), checkpoint=ckpt, checkpoint_sha=ckpt_sha,
                          device_identity=device_identity)
        rows.append(row)
        if log:
            log(f"{fmt}/{precision}: {row.status}" + (f" ({row.error})" if row.error else ""))
    report = ExportReport(checkpoint=str(ckpt), target=tgt.name, out_dir=str(out), rows=rows,
                          data={**settings, "fingerprint": ds.fingerprint,
                                "matches_training": info.meta.get("dataset_fingerprint") in (None, ds.fingerprint),
                                "parity_split": "test", "parity_samples": int(ds.test.x.shape[0]),
                                "calibration_samples": len(calibration)},
                          device=_device_record(device_identity, device_source))
    atomic_write_json(out / SUMMARY_FILE, report.to_dict())
    return report


def _device_record(identity: dict[str, Any] | None, source: str | None) -> dict[str, Any] | None:
    """What the report says of the device the artifacts were made for: where its fingerprint came
    from, its profile name and its speed identity (None: made for no particular device)."""
    if identity is None:
        return None
    from edgekd.device.identity import hardware_identity, isa_level
    from edgekd.device.profiles import device_name

    fingerprint = isinstance(identity.get("cpu"), dict)  # else a hardware identity ({arch, isa, ...})
    hw = hardware_identity(identity) if fingerprint else identity
    return {"source": source, "name": device_name(identity) if fingerprint else None,
            "arch": (hw or {}).get("arch"), "isa_level": isa_level(hw)}


def _export_row(model: Any, info: Any, fmt: str, precision: str, artifact: Path, *, ds: Any, calibration: list,
                threads: int | None, target: Target, fp32_tol: float, max_drop: float, options: dict[str, Any],
                checkpoint: Path, checkpoint_sha: str, device_identity: dict[str, Any] | None = None) -> ExportRow:
    runtime = FORMAT_RUNTIME[fmt]
    row = ExportRow(format=fmt, precision=precision, runtime=runtime)
    start = time.perf_counter()
    adapter = RUNTIMES.get(runtime)
    reason = adapter.unavailable_reason()
    if reason is not None and not getattr(adapter, "host_export_without_runtime", False):
        row.error = reason
        return row
    if precision not in adapter.precisions:
        row.error = f"{runtime} exports {', '.join(adapter.precisions)}, not {precision}"
        return row
    opts = dict(options)
    if device_identity is not None:
        opts.setdefault("device_identity", device_identity)
    if fmt == "tflite":
        opts.setdefault("layout", target.input_layout)
    if opts.get("accuracy_control"):
        opts.setdefault("max_drop", max_drop)
        opts.setdefault("validation", (ds.val.x, ds.val.y))
    try:
        _prepare_dir(artifact)
        row.artifact = str(artifact)
        adapter.export(model, info, artifact, precision=precision, calibration=calibration, **opts)
        manifest = read_manifest(artifact)
        source = {**manifest["source"], "checkpoint": str(checkpoint), "checkpoint_sha256": checkpoint_sha}
        update_manifest(artifact, source=source, target=target.name)
        parity = check_parity(model, artifact, ds.test.x, ds.test.y, threads=threads, fp32_tol=fp32_tol,
                              max_drop=max_drop)
        manifest = read_manifest(artifact)
        row.status, row.error = manifest["status"], manifest["error"]
        row.int8_kernels = (manifest.get("options") or {}).get("fused_convs")
        row.int8_settings = (manifest.get("options") or {}).get("int8_settings")
        row.size_bytes = artifact_size(artifact, manifest)
        row.max_abs, row.top1_agreement = parity.get("max_abs"), parity.get("top1_agreement")
        row.accuracy, row.torch_accuracy = parity.get("accuracy"), parity.get("torch_accuracy")
        row.accuracy_drop_pts, row.parity_proxy = parity.get("accuracy_drop_pts"), parity.get("proxy")
    except EdgeKDError as err:
        row.status, row.error = "failed", str(err)
    except Exception as err:  # a converter's own crash: recorded on the row so the other rows still run
        first = (str(err).strip().splitlines() or [""])[0][:300]
        row.status, row.error = "failed", f"{type(err).__name__}: {first}"
    if row.status == "failed" and row.artifact:
        mark_failed(artifact, row.error or "failed")
    row.seconds = round(time.perf_counter() - start, 3)
    return row
