"""Soft-target cache: computed once, reused, invalidated by any key change, atomic, pickle-free."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekd import api
from edgekd.distill.cache import CacheKey, SoftTargetCache, default_cache_dir
from edgekd.distill.teachers import load_teacher

BASE = CacheKey("teacher-sha", "data-fp", "train", {"image_size": None, "seed": 0})


def _counting(value: np.ndarray):
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return value

    return compute, calls


def test_computed_once_then_hit(tmp_path: Path):
    cache = SoftTargetCache(tmp_path)
    logits = np.arange(12, dtype=np.float32).reshape(4, 3)
    compute, calls = _counting(logits)
    first, hit1 = cache.get_or_compute(BASE, compute, expected_rows=4)
    second, hit2 = SoftTargetCache(tmp_path).get_or_compute(BASE, compute, expected_rows=4)
    assert (hit1, hit2, len(calls)) == (False, True, 1)
    np.testing.assert_array_equal(first, second)
    assert [e["hit"] for e in cache.events] == [False]
    # stored as a plain .npz: readable without pickle, carrying the key it was made for
    with np.load(cache.path_for(BASE), allow_pickle=False) as data:
        assert json.loads(str(data["key"][()]))["teacher"] == "teacher-sha"
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]  # no temp file left behind


@pytest.mark.parametrize(
    "changed",
    [
        CacheKey("other-teacher", "data-fp", "train", {"image_size": None, "seed": 0}),
        CacheKey("teacher-sha", "other-data", "train", {"image_size": None, "seed": 0}),
        CacheKey("teacher-sha", "data-fp", "test", {"image_size": None, "seed": 0}),
        CacheKey("teacher-sha", "data-fp", "train", {"image_size": 32, "seed": 0}),
        CacheKey("teacher-sha", "data-fp", "train", {"image_size": None, "seed": 0},
                 {"kind": "shift", "shift": 1, "copies": 1, "seed": 0}),
    ],
    ids=["teacher", "dataset", "split", "preprocess", "augmentation"],
)
def test_any_key_change_is_a_new_entry(tmp_path: Path, changed: CacheKey):
    cache = SoftTargetCache(tmp_path)
    cache.get_or_compute(BASE, lambda: np.zeros((2, 3), np.float32))
    compute, calls = _counting(np.ones((2, 3), np.float32))
    got, hit = cache.get_or_compute(changed, compute)
    assert not hit and calls == [1] and got.sum() == 6
    assert cache.path_for(changed) != cache.path_for(BASE)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_augmentation_seed_is_part_of_the_key():
    a = CacheKey("t", "d", "train", {}, {"kind": "shift", "shift": 1, "copies": 2, "seed": 0})
    b = CacheKey("t", "d", "train", {}, {"kind": "shift", "shift": 1, "copies": 2, "seed": 1})
    assert a.digest() != b.digest()


def test_corrupt_or_mismatched_entry_is_recomputed(tmp_path: Path):
    cache = SoftTargetCache(tmp_path)
    path = cache.path_for(BASE)
    path.write_bytes(b"not an npz file")
    compute, calls = _counting(np.ones((3, 2), np.float32))
    _, hit = cache.get_or_compute(BASE, compute, expected_rows=3)
    assert not hit and calls == [1]
    # a valid file with the wrong number of rows (e.g. another split) is not trusted either
    _, hit = cache.get_or_compute(BASE, compute, expected_rows=5)
    assert not hit and len(calls) == 2


def test_default_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("EDGEKD_CACHE")
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / ".edgekd-cache"


def test_teacher_logits_match_a_fresh_teacher_pass(tmp_path: Path, tiny_teacher_ckpt: Path, digits_small):
    teacher = load_teacher(tiny_teacher_ckpt)
    cache = SoftTargetCache(tmp_path)
    logits, hit = cache.teacher_logits(teacher, digits_small, "val")
    assert not hit and logits.shape == (len(digits_small.val), 10)
    np.testing.assert_allclose(logits, teacher.logits(digits_small.val.x), rtol=0, atol=1e-6)
    assert cache.teacher_logits(teacher, digits_small, "val")[1]


def _run(tmp_path: Path, teacher: Path, name: str, **extra) -> dict:
    cfg = {"teacher": str(teacher), "student": "mlp:hidden=16", "cache_dir": str(tmp_path / "cache"),
           "train": {"epochs": 1, "threads": 1}, "output": str(tmp_path / name), **extra}
    return api.distill(cfg, progress=False)


def test_runs_record_hit_and_miss_and_augmentation_seed_invalidates(tmp_path: Path, tiny_teacher_ckpt: Path):
    first = _run(tmp_path, tiny_teacher_ckpt, "a")
    second = _run(tmp_path, tiny_teacher_ckpt, "b", train={"epochs": 1, "threads": 1, "seed": 5})
    assert first["soft_target_cache"]["train"] == "miss"
    assert second["soft_target_cache"]["train"] == "hit"  # another student seed reuses the teacher pass
    aug0 = _run(tmp_path, tiny_teacher_ckpt, "c", augment={"shift": 1, "copies": 1, "seed": 0})
    aug0b = _run(tmp_path, tiny_teacher_ckpt, "d", augment={"shift": 1, "copies": 1, "seed": 0})
    aug1 = _run(tmp_path, tiny_teacher_ckpt, "e", augment={"shift": 1, "copies": 1, "seed": 1})
    assert [r["soft_target_cache"]["train"] for r in (aug0, aug0b, aug1)] == ["miss", "hit", "miss"]
    online = _run(tmp_path, tiny_teacher_ckpt, "f", online=True)
    assert online["soft_target_cache"]["train"] == "online"
    on_disk = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert on_disk["soft_target_cache"] == second["soft_target_cache"]
