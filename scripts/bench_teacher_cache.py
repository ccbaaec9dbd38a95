"""A teacher trained once per (data, teacher spec, seed, split), reused by every later benchmark run.

    cached_teacher(data, image_size=None, split_seed=0, teacher_seed=0, work=DIR) -> summary dict

The key is sha256 over the canonical JSON of the dataset's content fingerprint (the arrays after
loading and resizing, so a changed file is a new key) and the resolved teacher config (spec, epochs,
lr, patience, seed, ...; not the output path). The teacher lives in WORK/teachers/KEY/ as an ordinary
`edgekd teacher` run directory; its summary.json marks it complete (written last, atomically), so a
run killed mid-training is retrained (resumed from its last checkpoint), never half-read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def teacher_key(data: str, image_size: int | None, split_seed: int, teacher_seed: int) -> tuple[str, Any]:
    """(key, teacher config) for this data and seeds."""
    from edgekd import api
    from edgekd.config import config_to_dict
    from edgekd.data import load_dataset
    from edgekd.fileio import sha256_bytes

    cfg = api.teacher_config(data=data, image_size=image_size, seed=teacher_seed, threads=1, output="-")
    cfg.data.seed = split_seed
    d = cfg.data
    ds = load_dataset(d.source, image_size=d.image_size, seed=d.seed, val_fraction=d.val_fraction,
                      test_fraction=d.test_fraction)
    raw = config_to_dict(cfg)
    for k in ("output", "cache_dir"):
        raw.pop(k)
    raw["data"].pop("source")  # the content fingerprint stands for the data, not its path
    blob = json.dumps({"fingerprint": ds.fingerprint, "teacher": raw}, sort_keys=True, default=str)
    return sha256_bytes(blob.encode("utf-8"))[:16], cfg


def cached_teacher(data: str, *, image_size: int | None, split_seed: int, teacher_seed: int, work: Path,
                   log=None) -> dict[str, Any]:
    """The teacher's summary (train it on a miss; resume an interrupted training)."""
    from edgekd import api

    key, cfg = teacher_key(data, image_size, split_seed, teacher_seed)
    run_dir = Path(work) / "teachers" / key
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        summary["teacher_cache"] = "hit"
        return summary
    cfg.output = str(run_dir)
    resume = (run_dir / "checkpoints" / "last.pt").is_file()
    summary = api.train_teacher(cfg, resume=resume, progress=False, log=log)
    summary["teacher_cache"] = "miss"
    return summary


if __name__ == "__main__":  # train (or find) one teacher: bench_teacher_cache.py DATA [WORK]
    import sys

    ROOT = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(ROOT))
    work = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / ".edgekd-cache" / "bench-distill"
    s = cached_teacher(sys.argv[1], image_size=None, split_seed=0, teacher_seed=0, work=work, log=print)
    print(json.dumps({k: s.get(k) for k in ("student", "test_acc", "val_acc_best", "params", "epochs_run",
                                             "train_time_s", "teacher_cache", "run_dir")}))
