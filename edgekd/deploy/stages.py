"""The stages `edgekd.deploy.loop` drives, one function each: the teacher, distillation (+ the optional
compression chain), export for the target, verification on the device, and the choice of the next
candidate. Every stage caches under the deploy's `work_dir`, keyed by everything that shapes its result.
Each stage calls its own package (`edgekd.distill.run`, `edgekd.compress.pipeline`,
`edgekd.runtimes.export`), never the `edgekd.api` façade. Host side.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekd.errors import ConfigError, EdgeKDError, ExportError

Log = Callable[[str], None]


@dataclass(frozen=True)
class HostAccuracy:
    """A trained model's accuracy on the host, on both held-out splits. `val` drives every choice
    (the floor check of the bisection, stepping to a larger student); `test` is only reported:
    choosing on the split we report on would bias the reported figure upward."""

    val: float
    test: float


def kept_val_accuracy(summary: dict[str, Any], where: Path) -> float:
    """The val accuracy of the weights a run kept (`train.keep`: best-on-val or last epoch), from its
    summary.json; a compress run's is that of its final (fine-tuned) model."""
    if isinstance(summary.get("after"), dict):  # edgekd.compress summary
        val = summary["after"].get("val_acc")
    else:
        val = summary.get("val_acc_last") if summary.get("kept") == "last" else summary.get("val_acc_best")
    if val is None or float(val) < 0:
        raise EdgeKDError(f"{where} records no val accuracy for the kept weights; delete that run dir so it is "
                          "trained again")
    return float(val)


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(spec: str) -> str:
    return spec.replace(":", "_").replace(",", "_").replace("=", "")


# ------------------------------------------------------------------------------ stages

def ensure_teacher(cfg: Any, ds: Any, log: Log) -> tuple[Path, HostAccuracy, str]:
    """(checkpoint or .onnx path, host val/test accuracy, spec or file name); trains the default one if needed."""
    import numpy as np

    from edgekd import __version__
    from edgekd.distill.teacher_recipe import TEACHER_VIEWS
    from edgekd.distill.teachers import load_teacher
    from edgekd.models import default_specs

    DEFAULT_TEACHER = default_specs(getattr(ds, "task", "image"))[0]  # text: the bench_text teacher
    if cfg.teacher:
        path = Path(cfg.teacher)
        if path.is_dir():
            path = path / "student.pt"
        if not path.is_file():
            raise ConfigError(f"teacher {cfg.teacher} not found; give an edgekd checkpoint (.pt), a run dir or an .onnx")
        teacher = load_teacher(path)
        teacher.check_compatible(ds.input_shape, ds.num_classes, ds.name)
        acc = HostAccuracy(val=float(np.mean(teacher.logits(ds.val.x).argmax(axis=1) == ds.val.y)),
                           test=float(np.mean(teacher.logits(ds.test.x).argmax(axis=1) == ds.test.y)))
        return path, acc, getattr(teacher, "spec", None) or path.name
    run = Path(cfg.work_dir) / f"teacher-{_key(ds.fingerprint, DEFAULT_TEACHER, cfg.seed, cfg.teacher_epochs, __version__, TEACHER_VIEWS)}"
    summary_path = run / "summary.json"
    if summary_path.is_file() and (run / "student.pt").is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        log(f"teacher: reusing {run} ({DEFAULT_TEACHER})")
    else:
        log(f"teacher: training {DEFAULT_TEACHER} on {ds.name} ({cfg.teacher_epochs} epochs max, cached in {run})")
        from edgekd.distill.run import run_training
        from edgekd.distill.teacher_recipe import teacher_config

        summary = run_training(teacher_config(data=cfg.data, image_size=cfg.image_size, seed=cfg.seed,
                                              epochs=cfg.teacher_epochs, patience=3, output=str(run),
                                              arch=DEFAULT_TEACHER, max_len=getattr(cfg, "max_len", None),
                                              tokenizer=getattr(cfg, "tokenizer", None)),
                               progress=False)
    acc = HostAccuracy(val=kept_val_accuracy(summary, summary_path), test=float(summary["test_acc"]))
    log(f"teacher: val accuracy {acc.val:.2%} (sets the floor for choosing), test accuracy {acc.test:.2%}")
    return run / "student.pt", acc, DEFAULT_TEACHER


def distill_student(cfg: Any, spec: str, teacher: Path, teacher_sha: str, ds: Any, log: Log,
                    floor: float | None = None) -> tuple[Path, HostAccuracy]:
    """Distill `spec` from the teacher (cached by everything that shapes it); (checkpoint, host val/test
    accuracy of the kept weights, read from the run's summary.json). `floor`: the choosing (val)
    floor, only to say in the log line whether this student meets it."""
    from edgekd import __version__
    from edgekd.config import DEFAULT_RECIPE, RECIPES, TEXT_TRAIN_DEFAULTS, config_from_dict
    from edgekd.distill.run import run_training

    text = getattr(ds, "task", "image") == "text"
    # lr None: 0.01 for image students (as always); text students the lr `edgekd distill` uses for text
    lr = cfg.lr
    if lr is None:
        lr = float(TEXT_TRAIN_DEFAULTS["lr"]) if text else 0.01
    from edgekd.models.user_family import user_family_meta

    # a user family's student is also keyed by its builder, grid and builder source (edited code: distilled anew)
    user = [user_family_meta(spec)] if user_family_meta(spec) else []
    run = Path(cfg.work_dir) / "students" / f"{_slug(spec)}-{_key(spec, teacher_sha, ds.fingerprint, cfg.epochs, lr, cfg.seed, __version__, RECIPES[DEFAULT_RECIPE], *user)}"
    cached = (run / "summary.json").is_file() and (run / "student.pt").is_file()
    t0 = time.perf_counter()
    if not cached:
        data: dict[str, Any] = {"source": cfg.data, "image_size": cfg.image_size, "seed": cfg.seed}
        if text:
            data.update(max_len=getattr(cfg, "max_len", None), tokenizer=getattr(cfg, "tokenizer", None))
        train: dict[str, Any] = {"epochs": cfg.epochs, "lr": lr, "seed": cfg.seed, "threads": 1}
        run_training(config_from_dict({"teacher": str(teacher), "student": spec, "output": str(run), "data": data,
                                       # one thread: tiny students train faster that way on a small, shared CPU
                                       "train": train}),
                     progress=False)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    acc = HostAccuracy(val=kept_val_accuracy(summary, run / "summary.json"), test=float(summary["test_acc"]))
    log(f"  distill {spec}: val accuracy {acc.val:.2%}{_verdict(acc.val, floor)}, test {acc.test:.2%} (reported only) "
        + ("(cached)" if cached else f"({time.perf_counter() - t0:.1f} s)"))
    ckpt = run / "student.pt"
    from edgekd.deploy.config import compress_chain

    chain = compress_chain(cfg)
    if chain:
        ckpt, acc = compress_student(chain, run, teacher, log, floor)
    return ckpt, acc


COMPRESS_FINETUNE_EPOCHS = 3  # KD fine-tuning epochs after each pass of deploy's chain


def compress_student(chain: list[Any], run: Path, teacher: Path, log: Log,
                     floor: float | None = None) -> tuple[Path, HostAccuracy]:
    """Run the chain on the distilled student in `run` (cached next to it, named after the chain);
    (compressed checkpoint, host val/test accuracy after fine-tuning)."""
    from edgekd.compress.passes import chain_slug
    from edgekd.compress.pipeline import is_complete_run, run_compression

    slug = chain_slug(chain)
    out = run.parent / f"{run.name}-{slug}"
    if not is_complete_run(out):
        run_compression({"source": str(run), "passes": chain, "finetune_epochs": COMPRESS_FINETUNE_EPOCHS,
                         "teacher": str(teacher), "output": str(out)}, progress=False)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    acc = HostAccuracy(val=kept_val_accuracy(summary, out / "summary.json"), test=float(summary["test_acc"]))
    log(f"  compressed {slug}: val accuracy {acc.val:.2%}{_verdict(acc.val, floor)}, test {acc.test:.2%}")
    return out / "student.pt", acc


def _verdict(val: float, floor: float | None) -> str:
    if floor is None:
        return ""
    return f" (meets the choosing floor {floor:.2%})" if val >= floor else f" (below the choosing floor {floor:.2%})"


def export_for(cfg: Any, ckpt: Path, out: Path, fmt: str, threads: int | None, precision: str | None = None,
               device_identity: dict[str, Any] | None = None) -> Path:
    """Export one checkpoint for the target in (fmt, precision) through the parity gate (INT8: its
    accuracy gate, on the host runtime); the artifact dir. `precision` defaults to `cfg.precision`.
    `device_identity` (the device's agent fingerprint) chooses device-dependent settings (ONNX Runtime
    INT8: `runtimes.int8_settings`), recorded in the manifest; a cached artifact made with other
    settings is exported again."""
    from edgekd.runtimes.catalog import FORMAT_RUNTIME, RUNTIMES
    from edgekd.runtimes.export import export_checkpoint

    precision = precision or cfg.precision
    art = out / f"{fmt}-{precision}"
    if (art / "manifest.json").is_file():
        from edgekd.fileio import sha256_file
        from edgekd.runtimes import read_manifest

        man = read_manifest(art)
        if (man.get("status") == "ok" and (man.get("source") or {}).get("checkpoint_sha256") == sha256_file(ckpt)
                and RUNTIMES.get(FORMAT_RUNTIME[fmt]).fits_device(man, device_identity)):
            return art  # same checkpoint, already exported for this device and parity-checked
    report = export_checkpoint(str(ckpt), str(out), target=cfg.target, formats=[fmt], precisions=[precision],
                               threads=threads, device_identity=device_identity or None).to_dict()
    row = report["rows"][0]
    if row["status"] != "ok":
        raise ExportError(f"export of {ckpt} to {fmt}/{precision} failed: {row['error']}")
    return Path(row["artifact"])


def verify(dev: Any, art: Path, *, spec: str, ckpt: Path, eval_npz: Path, data_fp: str, threads: int | None,
           min_s: float) -> tuple[dict[str, Any], Any]:
    """Latency + peak memory (bench at batch 1) and accuracy (eval) of `art` on the device; the
    merged result and its profile Measurement (keyed by the checkpoint's sha256)."""
    from edgekd.fileio import sha256_file
    from edgekd.device.profiles import Measurement
    from edgekd.runtimes import read_manifest

    result = dev.bench(art, {"threads": threads, "batch": 1, "warmup_s": 0.5, "min_s": min_s, "min_count": 200})
    acc = dev.eval(art, eval_npz, {"threads": threads, "latency": False, "accuracy": True})
    result["accuracy"] = acc.get("accuracy")
    from edgekd.latency.recipe import artifact_recipe

    manifest = read_manifest(art)
    src = manifest.get("source") or {}
    m = Measurement.from_result(result, model_sha256=sha256_file(ckpt), spec=spec, params=src.get("params"),
                                macs=src.get("macs"), dataset_fingerprint=data_fp, recipe=artifact_recipe(manifest))
    return result, m


# ------------------------------------------------------------------------------ choosing

def latency_table(profile: Any, target: Any, config_key: tuple[str, str, str, int], shape: tuple[int, ...],
                  classes: int, percentile: int, space: list[str] | None = None) -> dict[str, tuple[float, str]]:
    """{spec: (latency ms at the percentile, "measured"/"predicted"/"predicted, unmeasured")} for every
    search-space student (`space`, default the image students) in one (runtime, format, precision,
    threads) configuration."""
    from edgekd.latency.search_space import student_specs
    from edgekd.deploy.candidates import gather_candidates

    runtime, fmt, precision, threads = config_key
    space = list(space) if space is not None else student_specs()
    cands, _ = gather_candidates(profile, input_shape=shape, num_classes=classes, formats=[fmt],
                                 precisions=[precision], threads=threads, target=target, percentile=percentile,
                                 specs=space)
    specs = set(space)
    out: dict[str, tuple[float, str]] = {}
    for c in cands:
        if c.spec not in specs or c.latency_ms is None:
            continue
        plain = c.latency_source != "measured" or c.params == _params(c.spec, shape, classes)
        if not plain:
            continue  # a compressed model of that spec: not what distilling the spec gives
        # a measurement of that very architecture beats any prediction; the latest one wins
        if c.spec not in out or (c.latency_source == "measured" and out[c.spec][1] != "measured"):
            out[c.spec] = (float(c.latency_ms), c.latency_label)
    return out


def _params(spec: str, shape: tuple[int, ...], classes: int) -> int:
    from edgekd.latency.features import spec_features

    return spec_features(spec, shape, classes)["params"]


def pick(fast: list[str], accuracy_of: Callable[[str], float], floor: float, rejected: set[str]) -> str | None:
    """The smallest spec in `fast` (sorted by params) whose accuracy meets `floor`, by bisection."""
    pool = [s for s in fast if s not in rejected]
    if not pool:
        return None
    lo, hi = 0, len(pool) - 1
    if accuracy_of(pool[hi]) < floor:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if accuracy_of(pool[mid]) >= floor:
            hi = mid
        else:
            lo = mid + 1
    return pool[lo]


def default_device(target: Any) -> str | None:
    """'local' when this machine can stand in for the target (same CPU architecture and the target's
    preferred runtime importable here), else None (no device: unverified)."""
    from edgekd.runtimes import RUNTIMES

    arch = platform.machine().lower()
    same_arch = target.arch.lower() in (arch, {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch))
    first = target.runtimes[0] if target.runtimes else None
    if not same_arch or first is None or first not in RUNTIMES:
        return None
    return "local" if RUNTIMES.get(first).unavailable_reason() is None else None

