"""A man in the middle for the agent tests: a relay between host and agent (real sockets or pty fds)
that forwards whole frames and lets a test record, rewrite, drop, replay or inject them - what
someone who can write into a TCP stream or sit on a serial line can do. No mocks: the host and the
agent on either side are the real client and server."""
from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import threading
import zlib
from typing import Callable

from edgekd.agent.protocol import MAC_FLAG, MAC_TRAILER_SIZE, MAGIC, PREFIX_SIZE

TO_AGENT, TO_HOST = 0, 1  # direction index: bytes read from end 0 (host) go to end 1 (agent)
_PREFIX = struct.Struct(">2sBBIII")
Rewrite = Callable[[bytes], "bytes | list[bytes] | None"]  # -> replacement frame(s); None drops it


def frame_info(raw: bytes) -> dict:
    """Type (without the MAC flag), seq, MAC flag, and where the header and payload lie in `raw`."""
    _, version, tbyte, seq, hlen, plen = _PREFIX.unpack_from(raw)
    return {"type": tbyte & ~MAC_FLAG, "mac": bool(tbyte & MAC_FLAG), "seq": seq, "version": version,
            "header": (PREFIX_SIZE, PREFIX_SIZE + hlen), "payload": (PREFIX_SIZE + hlen, PREFIX_SIZE + hlen + plen)}


def with_crc(raw: bytes | bytearray) -> bytes:
    """`raw` with its frame CRC recomputed: line-noise checks pass, whatever was changed."""
    raw = bytearray(raw)
    raw[-4:] = struct.pack(">I", zlib.crc32(bytes(raw[:-4])))
    return bytes(raw)


def flip_payload_byte(raw: bytes, index: int = 0) -> bytes:
    """One payload byte changed, CRC recomputed (a deliberate edit, not noise)."""
    start, end = frame_info(raw)["payload"]
    assert end > start + index, "frame has no payload byte to flip"
    out = bytearray(raw)
    out[start + index] ^= 0x01
    return with_crc(out)


class FrameRelay:
    """Forwards frames between `host_end` and `agent_end` in a thread, one whole frame at a time.

    `frames[d]` records every frame that arrived in direction d; `rewrite[d]` (if set) decides what
    is forwarded instead of each one; `inject(d, raw)` puts bytes on the wire in direction d.
    """

    def __init__(self, host_end, agent_end) -> None:
        self.ends = [host_end, agent_end]
        self.frames: tuple[list[bytes], list[bytes]] = ([], [])
        self.rewrite: list[Rewrite | None] = [None, None]
        self._inbuf = [bytearray(), bytearray()]
        self._out = [bytearray(), bytearray()]  # bytes waiting to go out of end (1 - d)... by direction
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "FrameRelay":
        for e in self.ends:
            if isinstance(e, socket.socket):
                e.setblocking(False)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    def inject(self, direction: int, raw: bytes) -> None:
        with self._lock:
            self._out[direction] += raw

    def frames_of(self, direction: int, ftype: int | None = None, mac: bool | None = None) -> list[bytes]:
        with self._lock:
            got = list(self.frames[direction])
        return [f for f in got if (ftype is None or frame_info(f)["type"] == ftype) and (mac is None or frame_info(f)["mac"] == mac)]

    @staticmethod
    def _fd(end) -> int:
        return end if isinstance(end, int) else end.fileno()

    def _read(self, end) -> bytes | None:
        try:
            data = end.recv(65536) if isinstance(end, socket.socket) else os.read(end, 65536)
        except BlockingIOError:
            return b""
        except OSError as err:
            if err.errno == errno.EIO:  # pty: the other side is not open (yet / any more)
                return b""
            return None
        if not data and isinstance(end, socket.socket):
            return None  # the peer closed
        return data

    def _split(self, direction: int) -> None:
        buf = self._inbuf[direction]
        while len(buf) >= PREFIX_SIZE:
            if buf[:2] != MAGIC:  # not a frame start (never seen between honest peers): pass it on
                cut = buf.find(MAGIC, 1)
                cut = len(buf) if cut < 0 else cut
                self._out[direction] += buf[:cut]
                del buf[:cut]
                continue
            _, _, tbyte, _, hlen, plen = _PREFIX.unpack_from(buf)
            total = PREFIX_SIZE + hlen + plen + (MAC_TRAILER_SIZE if tbyte & MAC_FLAG else 0) + 4
            if len(buf) < total:
                return
            raw = bytes(buf[:total])
            del buf[:total]
            self.frames[direction].append(raw)
            rewrite = self.rewrite[direction]
            out = raw if rewrite is None else rewrite(raw)
            for piece in ([] if out is None else [out] if isinstance(out, bytes) else out):
                self._out[direction] += piece

    def _run(self) -> None:
        fds = [self._fd(e) for e in self.ends]
        while not self._stop.is_set():
            with self._lock:
                want = [fds[1 - d] for d in (TO_AGENT, TO_HOST) if self._out[d]]
            try:
                readable, writable, _ = select.select(fds, want, [], 0.02)
            except (OSError, ValueError):
                break
            for i, fd in enumerate(fds):
                if fd in readable:
                    data = self._read(self.ends[i])
                    if data is None:
                        self._close()
                        return
                    with self._lock:
                        self._inbuf[i] += data
                        self._split(i)
            for d in (TO_AGENT, TO_HOST):
                if fds[1 - d] in writable:
                    with self._lock:
                        try:
                            n = (self.ends[1 - d].send(self._out[d]) if isinstance(self.ends[1 - d], socket.socket)
                                 else os.write(fds[1 - d], self._out[d]))
                        except BlockingIOError:
                            n = 0
                        except OSError:
                            self._close()
                            return
                        del self._out[d][:n]

    def _close(self) -> None:
        self.closed.set()
        for e in self.ends:
            if isinstance(e, socket.socket):
                with contextlib.suppress(OSError):
                    e.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    e.close()


@contextlib.contextmanager
def tcp_relay(agent_url: str):
    """A listening socket in front of the agent at `agent_url`; yields (url for the host, relays).

    Each connection the host makes gets its own FrameRelay (appended to `relays` when it starts).
    """
    host, port = agent_url[len("tcp://"):].rsplit(":", 1)
    front = socket.socket()
    front.bind(("127.0.0.1", 0))
    front.listen(4)
    front.settimeout(0.1)
    relays: list[FrameRelay] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = front.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            back = socket.create_connection((host, int(port)))
            relay = FrameRelay(conn, back)
            relays.append(relay)  # listed before it forwards a byte: the host's handshake needs it running
            relay.__enter__()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield f"tcp://127.0.0.1:{front.getsockname()[1]}", relays
    finally:
        stop.set()
        t.join(timeout=5)
        front.close()
        for r in relays:
            r.__exit__()
            r._close()
