"""Every path an artifact's manifest names must stay inside the artifact's own directory.

A manifest is data from outside (on the agent it arrives from the host): `model_file` and the keys
of `files` are resolved against the artifact directory, then checked to lie inside it, and no
symlink is followed on the way (resolve, then check; refuse links). Used by `read_manifest`, so
every runtime, the harness and the agent get confined paths by construction.

Device side: stdlib only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from edgekd.errors import ModelError


def confined(root: str | Path, name: object, what: str) -> Path:
    """`root / name`, resolved, when it stays inside `root` with no symlink on the way; else ModelError."""
    base = Path(root).resolve()
    if not isinstance(name, str) or not name or "\0" in name or "\\" in name:
        raise ModelError(f"{base}: {what} {str(name)[:80]!r} is not a relative file name; re-export the artifact")
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise ModelError(f"{base}: {what} {name[:80]!r} points outside the artifact directory; an artifact only "
                         "names files inside itself (re-export it)")
    current = base
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise ModelError(f"{base}: {what} {name[:80]!r} is a symbolic link; artifacts hold plain files only "
                             "(copy the file in instead of linking it)")
    resolved = (base / rel).resolve()
    if resolved != base and base not in resolved.parents:
        raise ModelError(f"{base}: {what} {name[:80]!r} resolves outside the artifact directory; re-export it")
    return resolved


def check_manifest_paths(root: str | Path, manifest: Mapping[str, Any]) -> None:
    """ModelError unless `model_file` and every `files` name are confined to `root`."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ModelError(f"{root}: manifest 'files' must map file names to sha256 strings; re-export the artifact")
    confined(root, manifest.get("model_file"), "model_file")
    for name in files:
        confined(root, name, "file")
