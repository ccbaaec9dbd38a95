"""`edgekd.latency.features_store`: students' architecture features stored on disk, keyed by the code
that computes them. A fresh process reads what another stored; a damaged entry is recomputed; a
user's family is never stored; changed code means another digest. Real files and subprocesses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgekd.latency import features_store

SPEC = "cnn:depth=1,width=8"
ROOT = Path(__file__).resolve().parents[1]


def _features_in_fresh_process(cache: Path, spec: str = SPEC) -> dict:
    code = ("import json, sys; from edgekd.latency.features import spec_features; "
            f"print(json.dumps(spec_features({spec!r}, (1, 8, 8), 10)))")
    env = {**os.environ, "EDGEKD_CACHE": str(cache), "PYTHONPATH": str(ROOT / "examples")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*/*.json"))


def test_a_fresh_process_reads_what_another_stored_and_a_damaged_entry_is_recomputed(tmp_path, monkeypatch):
    first = _features_in_fresh_process(tmp_path)
    [entry] = _entries(tmp_path)
    stored = json.loads(entry.read_text())
    assert stored["key"] == [SPEC, [1, 8, 8], 10] and stored["features"] == first
    # the next process takes the stored figures as they are, without building the model: a marked
    # value it could only have read from the store comes back
    entry.write_text(json.dumps({"key": stored["key"], "features": {**first, "macs": 123456789}}))
    assert _features_in_fresh_process(tmp_path)["macs"] == 123456789
    # a damaged entry (not JSON, another key, a non-number) is a miss: recomputed and rewritten
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    from edgekd.latency.features import _spec_features_cached

    for damaged in ("{not json", json.dumps({"key": ["other"], "features": first}),
                    json.dumps({"key": stored["key"], "features": {**first, "macs": [1]}})):
        entry.write_text(damaged)
        assert features_store.load(SPEC, (1, 8, 8), 10) is None
        assert dict(_spec_features_cached.__wrapped__(SPEC, (1, 8, 8), 10)) == first  # past the in-process cache
        assert json.loads(entry.read_text())["features"] == first


def test_a_users_family_is_never_stored(tmp_path):
    code = ("from edgekd.models.user_family import join_user_family; "
            "join_user_family('my_models:build', {'name': 'mixer', 'grid': {'width': [8]}}, (1, 8, 8), 10); "
            "from edgekd.latency.features import spec_features; "
            "print(spec_features('mixer:width=8', (1, 8, 8), 10)['macs'])")
    env = {**os.environ, "EDGEKD_CACHE": str(tmp_path), "PYTHONPATH": str(ROOT / "examples")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.strip().splitlines()[-1]) > 0 and not _entries(tmp_path)
    assert features_store.storable(SPEC) and not features_store.storable("no_such_family:width=8")


def test_changed_code_gives_another_digest(tmp_path):
    (tmp_path / "models").mkdir()
    a, b = tmp_path / "models" / "a.py", tmp_path / "features.py"
    a.write_text("x = 1\n")
    b.write_text("y = 2\n")
    before = features_store.digest_of([a, b], tmp_path, "2.13.0")
    assert features_store.digest_of([b, a], tmp_path, "2.13.0") == before  # order-free
    a.write_text("x = 2\n")
    assert features_store.digest_of([a, b], tmp_path, "2.13.0") != before
    a.write_text("x = 1\n")
    assert features_store.digest_of([a, b], tmp_path, "2.14.0") != before
