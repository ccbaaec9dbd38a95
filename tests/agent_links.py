"""Real links for the agent tests: pseudo-terminal pairs opened through pyserial, and relays that
sit between host and agent and damage, count or cut the bytes passing through (no mocks: the
agent and client see real file descriptors and sockets)."""
from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import threading
import tty
from pathlib import Path
from typing import Iterator

import numpy as np

from edgekd.agent.server import AgentConfig, serve_serial
from edgekd.agent.storage import ContentStore


def open_pty() -> tuple[int, str]:
    """A pty pair in raw mode: (master fd, slave device path). The master is non-blocking."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)  # pyserial opens the slave by path, as it would a real /dev/ttyACM0
    os.set_blocking(master, False)
    return master, path


class Relay:
    """Copies bytes between two endpoints (fds or sockets) in a thread.

    `flip` = probability that each byte is damaged in transit (both directions); `cut_after` = close
    both ends once this many host->agent bytes have passed (a dropped link).
    """

    def __init__(self, a, b, *, flip: float = 0.0, cut_after: int | None = None, seed: int = 0) -> None:
        self.ends = [a, b]
        self.flip, self.cut_after = flip, cut_after
        self.rng = np.random.default_rng(seed)
        self.forwarded = [0, 0]
        self.flipped = 0
        self._stop = threading.Event()
        self._pending: list[bytearray] = [bytearray(), bytearray()]  # bytes waiting for end i
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.cut = threading.Event()

    def __enter__(self) -> "Relay":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    @staticmethod
    def _fileno(end) -> int:
        return end if isinstance(end, int) else end.fileno()

    def _read(self, end) -> bytes:
        try:
            return end.recv(65536) if isinstance(end, socket.socket) else os.read(end, 65536)
        except BlockingIOError:
            return b""
        except OSError as err:
            if err.errno == errno.EIO:  # the slave side was closed
                return b""
            raise

    def _write(self, end, data: bytearray) -> int:
        try:
            return end.send(data) if isinstance(end, socket.socket) else os.write(end, data)
        except BlockingIOError:
            return 0

    def _damage(self, data: bytes) -> bytes:
        if not self.flip:
            return data
        arr = np.frombuffer(data, dtype=np.uint8).copy()
        hit = self.rng.random(arr.size) < self.flip
        arr[hit] ^= self.rng.integers(1, 256, size=int(hit.sum()), dtype=np.uint8)
        self.flipped += int(hit.sum())
        return arr.tobytes()

    def _run(self) -> None:
        fds = [self._fileno(e) for e in self.ends]
        for e in self.ends:
            if isinstance(e, socket.socket):
                e.setblocking(False)
        while not self._stop.is_set():
            writers = [fds[i] for i in (0, 1) if self._pending[i]]
            try:
                readable, writable, _ = select.select(fds, writers, [], 0.05)
            except (OSError, ValueError):
                return
            for i in (0, 1):
                if fds[i] in readable:
                    data = self._read(self.ends[i])
                    if not data and isinstance(self.ends[i], socket.socket):
                        self._close()
                        return
                    self.forwarded[i] += len(data)
                    self._pending[1 - i] += self._damage(data)
                    if i == 0 and self.cut_after is not None and self.forwarded[0] >= self.cut_after:
                        self._close()
                        return
            for i in (0, 1):
                if fds[i] in writable and self._pending[i]:
                    n = self._write(self.ends[i], self._pending[i])
                    del self._pending[i][:n]

    def _close(self) -> None:
        self.cut.set()
        for e in self.ends:
            with contextlib.suppress(OSError):
                if isinstance(e, socket.socket):
                    e.shutdown(socket.SHUT_RDWR)
                    e.close()


@contextlib.contextmanager
def serial_agent(workdir: Path, *, key: bytes | None, flip: float = 0.0, seed: int = 0,
                 **config) -> Iterator[tuple[str, Relay]]:
    """An agent serving a pty through pyserial, reachable from a second pty (path yielded) through a
    relay that may damage bytes. Yields (host-side device path, relay)."""
    host_master, host_path = open_pty()
    agent_master, agent_path = open_pty()
    agent = AgentConfig(store=ContentStore(workdir, 1 << 30), key=key, **config)
    stop = threading.Event()
    server = threading.Thread(target=serve_serial, args=(agent, agent_path, 921600, stop), daemon=True)
    server.start()
    try:
        with Relay(host_master, agent_master, flip=flip, seed=seed) as relay:
            yield host_path, relay
    finally:
        stop.set()
        server.join(timeout=5)
        os.close(host_master)
        os.close(agent_master)
