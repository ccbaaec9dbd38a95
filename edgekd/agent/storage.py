"""The agent's content-addressed store: every uploaded file is named by its sha256, never by a path
the host chose.

    WORKDIR/blobs/<sha256>          complete, verified files (read-only)
    WORKDIR/partial/<sha256>.part   uploads in progress; kept when a link drops so the host can resume
    WORKDIR/artifacts/<id>/<name>   an artifact directory materialised from a bundle (hard links to
                                    blobs); <id> = sha256 of the bundle's canonical JSON
    WORKDIR/artifacts/<id>.json     the bundle {name: sha256}

Bytes in blobs/ and partial/ and the bundles' JSON count against the quota; artifact directories
share the blobs' inodes.
Errors are AgentRequestError with a protocol error code; the session turns them into ERROR frames.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgekd.agent.limits import ByteBudget
from edgekd.agent.protocol import AgentRequestError, ErrorCode

# matched with fullmatch: `$` would also match before a final "\n" ("0"*64 + "\n" would pass)
_SHA_RE = re.compile(r"[0-9a-f]{64}")
# one flat directory level, no hidden files, no "..": the name can never leave the artifact dir
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
MAX_BUNDLE_FILES = 256
MAX_HELD_BYTES = 8 << 20  # chunks held in memory ahead of a gap, per upload
# and their number: each one costs a dict entry and a scan when held or drained (a windowed client
# holds at most a few hundred; a flood of one-byte chunks would cost far more than its bytes)
MAX_HELD_CHUNKS = 1024


def check_sha(value: object, what: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA_RE.fullmatch(value):
        raise AgentRequestError(ErrorCode.BAD_REQUEST.value, f"{what} {str(value)[:80]!r} is not 64 lowercase hex digits")
    return value


def check_name(value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or ".." in value:
        raise AgentRequestError(
            ErrorCode.BAD_NAME.value,
            f"file name {str(value)[:80]!r} is not allowed: use letters, digits, '.', '_', '-', '+' "
            "(no slashes, no '..', no leading dot, at most 128 characters)",
        )
    return value


def bundle_id(files: dict[str, str]) -> str:
    """Artifact id: sha256 of the canonical JSON of the name -> sha256 map."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Upload:
    handle: int
    sha: str
    size: int
    have: int
    fh: BinaryIO
    hasher: Any = field(repr=False)
    ahead: dict[int, bytes] = field(default_factory=dict, repr=False)  # chunks past a gap
    owner: object = None  # the session that opened it (its limits apply; closed when it ends)

    @property
    def held(self) -> int:
        return sum(len(b) for b in self.ahead.values())


class ContentStore:
    """Thread-safe store with a byte quota. One instance per agent, shared by its sessions."""

    def __init__(self, root: str | os.PathLike[str], quota_bytes: int, *, max_held_bytes: int = 16 << 20,
                 max_uploads_per_owner: int = 8) -> None:
        self.root = Path(root).expanduser().resolve()
        self.held_budget = ByteBudget(max_held_bytes)  # chunks ahead of a gap, all uploads together
        self.max_uploads_per_owner = int(max_uploads_per_owner)
        self.quota = int(quota_bytes)
        self.blobs = self.root / "blobs"
        self.partial = self.root / "partial"
        self.artifacts = self.root / "artifacts"
        for d in (self.blobs, self.partial, self.artifacts):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._uploads: dict[str, Upload] = {}  # sha -> the live upload (newest session wins)
        self._handles: dict[int, Upload] = {}
        self._next_handle = 1
        self._finished: dict[int, int] = {}  # recently finished handles -> size
        self.used = sum(p.stat().st_size for d in (self.blobs, self.partial) for p in d.iterdir() if p.is_file())
        self.used += sum(p.stat().st_size for p in self.artifacts.glob("*.json") if p.is_file())
        self.used += sum(_copied_bytes(d) for d in self.artifacts.iterdir() if d.is_dir() and not d.name.startswith("."))

    # ---- uploads -------------------------------------------------------------------------------
    def begin(self, sha: str, size: int, owner: object = None) -> dict[str, Any]:
        """Start or resume an upload. -> {"complete": True} or {"upload": handle, "have": offset}.

        An `owner` (a session) holds at most `max_uploads_per_owner` open uploads (each keeps a file
        open); `release(owner)` closes them when the session ends (the partial files stay for resume).
        """
        check_sha(sha)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise AgentRequestError(ErrorCode.BAD_REQUEST.value, f"size {size!r} must be a non-negative integer")
        with self._lock:
            if (self.blobs / sha).is_file():
                return {"complete": True, "have": size}
            old = self._uploads.get(sha)
            open_here = sum(1 for u in self._uploads.values() if owner is not None and u.owner is owner and u is not old)
            if owner is not None and open_here >= self.max_uploads_per_owner:
                raise AgentRequestError(
                    ErrorCode.QUOTA_EXCEEDED.value,
                    f"this session already has {open_here} uploads open (limit {self.max_uploads_per_owner}, "
                    "--max-uploads); finish or abandon one first",
                    {"open_uploads": open_here, "limit": self.max_uploads_per_owner},
                )
            if old is not None:  # a dropped session's upload: this session takes it over
                self._close_upload(old)
            part = self.partial / f"{sha}.part"
            have = part.stat().st_size if part.is_file() else 0
            if have > size:  # not a prefix of this file: start again
                self.used -= have
                part.unlink()
                have = 0
            self._check_quota(size - have, "this file")
            hasher = hashlib.sha256()
            fh = open(part, "ab")
            if have:  # resuming: the hash state is rebuilt from the bytes already on disk
                with open(part, "rb") as rf:
                    for block in iter(lambda: rf.read(1 << 20), b""):
                        hasher.update(block)
            up = Upload(self._next_handle, sha, size, have, fh, hasher, owner=owner)
            self._next_handle += 1
            self._uploads[sha] = up
            self._handles[up.handle] = up
            if have == size:
                return self._finish(up)
            return {"upload": up.handle, "have": have}

    def append(self, handle: int, offset: int, data: memoryview | bytes) -> dict[str, Any]:
        """Store a chunk. -> {"have": n[, "complete": True]}; "have" = contiguous bytes stored.

        A chunk at `have` is written (and any held chunks it makes contiguous after it); a chunk
        ahead of a gap is held in memory (bounded) until the gap is filled; a chunk already stored
        is acknowledged again. Only contiguous bytes ever reach the disk, so after a dropped link
        the partial file is exactly the prefix the agent reports.
        """
        with self._lock:
            up = self._handles.get(handle)
            if up is None and handle in self._finished:
                # a chunk resent after the answer "complete" was lost on the line: say it again
                return {"have": self._finished[handle], "complete": True}
            if up is None:
                raise AgentRequestError(ErrorCode.NOT_FOUND.value, f"upload handle {handle} is not open (finished, or taken over by a newer session); send put again")
            n = len(data)
            if offset < 0 or offset + n > up.size:
                raise AgentRequestError(ErrorCode.BAD_REQUEST.value, f"chunk at {offset}+{n} runs past the declared size {up.size}")
            if offset > up.have:
                if offset in up.ahead:  # the same chunk again (a resend): already held
                    return {"have": up.have, "held": True}
                if up.held + n > MAX_HELD_BYTES or len(up.ahead) >= MAX_HELD_CHUNKS or not self.held_budget.take(n):
                    raise AgentRequestError(ErrorCode.OFFSET_MISMATCH.value, f"chunk offset {offset} is too far ahead: the agent has {up.have} bytes; continue from there", {"have": up.have})
                up.ahead[offset] = bytes(data)
                return {"have": up.have, "held": True}
            if offset + n > up.have:
                self._write(up, memoryview(data)[up.have - offset:])
                while up.ahead:
                    first = min(up.ahead)
                    if first > up.have:
                        break
                    block = up.ahead.pop(first)
                    self.held_budget.give(len(block))
                    if first + len(block) > up.have:
                        self._write(up, memoryview(block)[up.have - first:])
            if up.have == up.size:
                return self._finish(up)
            return {"have": up.have}

    def _write(self, up: Upload, data: memoryview) -> None:
        # no fsync per chunk: the final sha256 check catches anything a crash tore
        up.fh.write(data)
        up.hasher.update(data)
        up.have += len(data)
        self.used += len(data)

    def _close_upload(self, up: Upload) -> None:
        """Forget an open upload: close its file, free its held chunks (its .part file stays)."""
        if self._uploads.get(up.sha) is up:
            del self._uploads[up.sha]
        self._handles.pop(up.handle, None)
        self.held_budget.give(up.held)
        up.ahead.clear()
        up.fh.close()

    def release(self, owner: object) -> int:
        """Close every upload `owner` has open (its session ended); returns how many."""
        with self._lock:
            mine = [u for u in self._uploads.values() if u.owner is owner]
            for up in mine:
                self._close_upload(up)
            return len(mine)

    def held_bytes(self) -> int:
        return self.held_budget.used

    def _finish(self, up: Upload) -> dict[str, Any]:
        self._close_upload(up)
        part = self.partial / f"{up.sha}.part"
        if up.hasher.hexdigest() != up.sha:
            self.used -= up.have
            part.unlink(missing_ok=True)
            raise AgentRequestError(ErrorCode.HASH_MISMATCH.value, f"uploaded bytes do not hash to {up.sha}; the partial file was discarded, upload it again")
        os.chmod(part, 0o444)
        os.replace(part, self.blobs / up.sha)
        self._finished[up.handle] = up.size
        while len(self._finished) > 256:
            self._finished.pop(next(iter(self._finished)))
        return {"have": up.size, "complete": True}

    # ---- lookups and artifacts ----------------------------------------------------------------
    def blob_path(self, sha: object) -> Path:
        path = self.blobs / check_sha(sha)
        if not path.is_file():
            raise AgentRequestError(ErrorCode.NOT_FOUND.value, f"no file {sha} on the agent; upload it first (put)")
        return path

    def bundle(self, files: object) -> str:
        """Materialise an artifact directory from {name: sha256}; idempotent. -> artifact id."""
        if not isinstance(files, dict) or not files or len(files) > MAX_BUNDLE_FILES:
            raise AgentRequestError(ErrorCode.BAD_REQUEST.value, f"bundle needs 'files': a map of 1..{MAX_BUNDLE_FILES} names to sha256")
        clean = {check_name(name): check_sha(sha, f"sha256 of {name!r}") for name, sha in files.items()}
        aid = bundle_id(clean)
        with self._lock:
            target = self.artifacts / aid
            if target.is_dir():
                return aid
            sources = {name: self.blob_path(sha) for name, sha in clean.items()}
            # the bundle's JSON counts against the quota (its directory grows with it): otherwise
            # bundles of one blob under many names would fill the disk at no cost
            meta = json.dumps({"files": clean}, sort_keys=True)
            self._check_quota(len(meta), "this artifact's list of files")
            tmp = self.artifacts / f".tmp-{aid}-{threading.get_ident()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            copied = 0
            for name, src in sources.items():
                try:
                    os.link(src, tmp / name)
                except OSError:  # a file system without hard links: a copy, which the quota must allow
                    size = src.stat().st_size
                    try:
                        self._check_quota(size, f"this file system has no hard links, so the artifact's file {name}, "
                                                "a copy,", also=len(meta) + copied)
                    except AgentRequestError:
                        shutil.rmtree(tmp, ignore_errors=True)
                        raise
                    shutil.copyfile(src, tmp / name)
                    copied += size
            self.used += copied
            (self.artifacts / f"{aid}.json").write_text(meta)
            self.used += len(meta)
            os.replace(tmp, target)
        return aid

    def artifact_dir(self, aid: object) -> Path:
        path = self.artifacts / check_sha(aid, "artifact id")
        if not path.is_dir():
            raise AgentRequestError(ErrorCode.NOT_FOUND.value, f"no artifact {aid} on the agent; upload it first (put_artifact)")
        return path

    def _bundles(self) -> dict[str, dict[str, str]]:
        out = {}
        for meta in self.artifacts.glob("*.json"):
            try:
                out[meta.stem] = json.loads(meta.read_text())["files"]
            except (OSError, ValueError, KeyError):
                continue
        return out

    def delete(self, ident: object) -> str:
        """Delete an artifact (and its blobs no other artifact uses) or one blob. -> what was deleted."""
        check_sha(ident, "id")
        with self._lock:
            bundles = self._bundles()
            if ident in bundles:
                self.used -= _copied_bytes(self.artifacts / str(ident))
                shutil.rmtree(self.artifacts / str(ident), ignore_errors=True)
                meta = self.artifacts / f"{ident}.json"
                if meta.is_file():
                    self.used -= meta.stat().st_size
                    meta.unlink()
                still_used = {sha for aid, files in bundles.items() if aid != ident for sha in files.values()}
                for sha in set(bundles[str(ident)].values()) - still_used:
                    self._remove_blob(sha)
                return "artifact"
            users = [aid for aid, files in bundles.items() if ident in files.values()]
            if users:
                raise AgentRequestError(ErrorCode.IN_USE.value, f"file {ident} is part of artifact {users[0]}; delete the artifact instead")
            if self._remove_blob(str(ident)):
                return "file"
            raise AgentRequestError(ErrorCode.NOT_FOUND.value, f"nothing named {ident} on the agent")

    def _remove_blob(self, sha: str) -> bool:
        removed = False
        for path in (self.blobs / sha, self.partial / f"{sha}.part"):
            if path.is_file():
                self.used -= path.stat().st_size
                path.unlink()
                removed = True
        up = self._uploads.get(sha)
        if up is not None:
            self._close_upload(up)
        return removed

    def _check_quota(self, need: int, what: str, also: int = 0) -> None:
        """QUOTA_EXCEEDED unless `need` more bytes fit: the store's bytes, the rest of every open upload
        and `also` (bytes this operation already counts) come first. `what` names the bytes needed."""
        used = self.used + sum(u.size - u.have for u in self._uploads.values()) + also
        if used + need > self.quota:
            mb = 1 << 20
            raise AgentRequestError(
                ErrorCode.QUOTA_EXCEEDED.value,
                f"agent disk quota exceeded: {what} needs {need / mb:.3g} MB more but {used / mb:.3g} of "
                f"{self.quota / mb:.3g} MB are in use; delete artifacts (AgentClient.delete) or restart the agent "
                "with a larger --quota-mb",
                {"need": need, "used": used, "quota": self.quota},
            )

    def stats(self) -> dict[str, Any]:
        return {"used_bytes": self.used, "quota_bytes": self.quota, "artifacts": len(self._bundles())}


def _copied_bytes(directory: Path) -> int:
    """Bytes of an artifact directory's files that are copies, not hard links of a blob (one link:
    a file system without hard links); they count against the quota on their own."""
    if not directory.is_dir():
        return 0
    return sum(st.st_size for p in directory.iterdir() if p.is_file() and (st := p.stat()).st_nlink == 1)
