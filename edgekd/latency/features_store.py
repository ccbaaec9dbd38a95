"""On-disk store of built-in students' architecture features (`edgekd.latency.features.spec_features`).

A student's features come from building it and running one forward pass (~50 ms at 8x8 on a 2-vCPU
x86 VM). Choosing a calibration sample sizes every variant of every family of the space, ~150
builds (~7 s), in every process that calibrates, selects or deploys. The features depend only on the
spec, the input shape, the class count and the code that builds and counts, so they are stored under
`<cache>/features/<digest>/` (`edgekd.fileio.cache_root`), where the digest covers the source of
`edgekd/models/` and `edgekd/latency/features.py` and the torch version: changed code reads a new
directory, never a stale figure. A user's family (`--family`: its builder is the user's code, which
the digest cannot see) is never stored. An entry that does not read back as what was written (its
key, a flat object of numbers and strings) is a miss: recomputed and rewritten. A store that cannot
be written only makes edgekd slower. Stdlib only (torch only for its version, lazily).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from edgekd.fileio import atomic_write_text, cache_root

_DIGEST: list[str] = []  # computed once per process


def digest_of(files: Iterable[Path], root: Path, torch_version: str) -> str:
    """sha256 (16 hex digits) of the torch version and every file's path under `root` and bytes."""
    h = hashlib.sha256(torch_version.encode())
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def code_digest() -> str:
    """The digest of the code features depend on (see module doc), once per process."""
    if not _DIGEST:
        import torch

        pkg = Path(__file__).resolve().parents[1]
        files = [*(pkg / "models").rglob("*.py"), pkg / "latency" / "features.py"]
        _DIGEST.append(digest_of(files, pkg, str(torch.__version__)))
    return _DIGEST[0]


def storable(spec: str) -> bool:
    """Whether `spec` is of a family built by edgekd's own code (a user's family is not)."""
    from edgekd.models.spec import MODELS, parse_spec

    try:
        family = MODELS.get(parse_spec(spec)[0])
    except Exception:  # an unknown or malformed spec: the build reports it, not the store
        return False
    module = str(getattr(family.builder, "__module__", "") or "")
    return module.startswith("edgekd.models.") and module != "edgekd.models.user_family"


def _key(spec: str, input_shape: Sequence[int], num_classes: int) -> list[Any]:
    return [str(spec), [int(d) for d in input_shape], int(num_classes)]


def _path(key: list[Any]) -> Path:
    name = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return cache_root() / "features" / code_digest() / f"{name}.json"


def load(spec: str, input_shape: Sequence[int], num_classes: int) -> dict[str, Any] | None:
    """The stored features, or None (not stored, not storable, unreadable, or not what was written)."""
    if not storable(spec):
        return None
    key = _key(spec, input_shape, num_classes)
    try:
        entry = json.loads(_path(key).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    feats = entry.get("features") if isinstance(entry, dict) and entry.get("key") == key else None
    if not isinstance(feats, dict) or not feats or not all(
            isinstance(k, str) and isinstance(v, (int, float, str)) and not isinstance(v, bool) for k, v in feats.items()):
        return None
    return feats


def save(spec: str, input_shape: Sequence[int], num_classes: int, features: dict[str, Any]) -> None:
    """Store `features` (a storable spec only); a store that cannot be written is skipped."""
    if not storable(spec):
        return
    key = _key(spec, input_shape, num_classes)
    try:
        atomic_write_text(_path(key), json.dumps({"key": key, "features": features}, sort_keys=True))
    except OSError:
        pass
