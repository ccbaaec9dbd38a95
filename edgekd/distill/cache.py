"""Soft-target cache: a teacher's logits on a split, computed once and reused by every student run.

Key = sha256 of the canonical JSON of
    (teacher identity = sha256 of the teacher file, dataset fingerprint, split name,
     dataset preprocessing record, augmentation record incl. its seed, cache format version).
Any change of any part gives a new key and so a new entry: a retrained teacher, other data, another
image size or another augmentation seed can never read stale logits. Entries are `.npz` files
(`logits` float32 N×K plus the key's JSON), written atomically (temp file + rename) and read with
`allow_pickle=False`. An entry whose stored key, shape or content does not match is treated as a miss
and rewritten.

Augmentation. edgekd's augmentation is *offline*: `augment.copies` shifted views of every training
image are drawn once from `augment.seed` and appended to the train split as fixed arrays. Because
the views are a deterministic function of the seed, the teacher's logits on them are cached like
any other split under a key that includes the augmentation record (shift, copies, seed); a new seed
is a new entry. Augmentation that would change inputs at every step (random per-step transforms) is
not offered, because cached logits of the clean image would be wrong for the transformed one; such a
run needs the online teacher (`online: true`), which runs the teacher on every batch and bypasses
the cache. Losses that need teacher *features* (`hint`) also run the teacher online.

Location: `cache_dir` argument, else `$EDGEKD_CACHE`, else `.edgekd-cache/` under the working directory.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd.fileio import atomic_write_with, cache_root, sha256_bytes

CACHE_FORMAT = "edgekd.softtargets/1"


def default_cache_dir() -> Path:
    return cache_root()


@dataclass(frozen=True)
class CacheKey:
    """What the cached logits depend on. `augment` is None for an un-augmented split."""

    teacher: str
    dataset: str
    split: str
    preprocess: dict[str, Any]
    augment: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "teacher": self.teacher,
            "dataset": self.dataset,
            "split": self.split,
            "preprocess": self.preprocess,
            "augment": self.augment,
        }

    def canonical(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), default=str)

    def digest(self) -> str:
        return sha256_bytes(self.canonical().encode("utf-8"))


class SoftTargetCache:
    """Teacher logits on disk, one `.npz` per CacheKey. Records every lookup in `events`."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.events: list[dict[str, Any]] = []

    def path_for(self, key: CacheKey) -> Path:
        return self.dir / f"{key.digest()}.npz"

    def load(self, key: CacheKey, expected_rows: int | None = None) -> np.ndarray | None:
        """The cached logits, or None if absent or not a valid entry for exactly this key."""
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                stored_key = str(data["key"][()])
                logits = np.array(data["logits"], dtype=np.float32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # torn or foreign file: recompute and overwrite
        if stored_key != key.canonical() or logits.ndim != 2 or not np.all(np.isfinite(logits)):
            return None
        if expected_rows is not None and logits.shape[0] != expected_rows:
            return None
        return logits

    def store(self, key: CacheKey, logits: np.ndarray) -> Path:
        path = self.path_for(key)
        logits = np.ascontiguousarray(logits, dtype=np.float32)

        def write(tmp: Path) -> None:
            # a file handle, not a name: np.savez would append ".npz" to the temp name
            with open(tmp, "wb") as fh:
                np.savez(fh, logits=logits, key=np.array(key.canonical()))

        atomic_write_with(path, write)
        return path

    def get_or_compute(
        self, key: CacheKey, compute: Callable[[], np.ndarray], expected_rows: int | None = None
    ) -> tuple[np.ndarray, bool]:
        """(logits, hit). On a miss, `compute()` runs and its result is stored."""
        logits = self.load(key, expected_rows)
        hit = logits is not None
        if logits is None:
            logits = np.asarray(compute(), dtype=np.float32)
            self.store(key, logits)
        self.events.append({"split": key.split, "key": key.digest(), "hit": hit, "path": str(self.path_for(key))})
        return logits, hit

    def teacher_logits(
        self,
        teacher: Any,
        dataset: Any,
        split: str,
        x: np.ndarray | None = None,
        augment: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, bool]:
        """Logits of `teacher` on `dataset`'s `split` (or on `x`, the augmented version of it)."""
        arrays = dataset.split(split).x if x is None else x
        key = CacheKey(teacher.identity, dataset.fingerprint, split, dict(dataset.preprocess), augment)
        return self.get_or_compute(key, lambda: teacher.logits(arrays), expected_rows=int(arrays.shape[0]))
