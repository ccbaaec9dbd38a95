"""An exclusive inter-process lock on a file, so read-modify-write of a profile is serialized.

`fcntl.flock` on a sibling `<name>.lock` file: the kernel releases it when the holder exits or
crashes, so a killed bench never leaves a stale lock behind. The lock file is never deleted (deleting
it while another process waits on it would let two writers in at once). Device-safe: stdlib only.
"""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Iterator

from edgekd.errors import ProfileError


def lock_path_for(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout_s: float = 120.0) -> Iterator[None]:
    """Hold an exclusive lock for `path` (on `<path>.lock`) for the duration of the block.

    Waits up to `timeout_s` for another holder, then raises ProfileError naming the lock file.
    """
    import fcntl  # POSIX only; imported here so the module can be read on any platform

    lock = lock_path_for(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ProfileError(
                        f"{lock} is held by another process for more than {timeout_s:.0f} s; "
                        "wait for the other bench to finish and retry"
                    ) from None
                time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
