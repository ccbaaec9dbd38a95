"""A transport plus a frame decoder: send frames, receive decoded events with timeouts.

Shared by the host (client.py) and the agent (server.py). Writes are serialised by a lock so the
agent's keep-alive thread and its request loop never interleave bytes of two frames.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any

from edgekd.agent.protocol import DEFAULT_MAX_PAYLOAD, Event, FrameDecoder, encode_frame, encode_frame_parts
from edgekd.agent.transports import Transport

READ_SIZE = 1 << 20


class Channel:
    def __init__(self, transport: Transport, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.transport = transport
        self.max_payload = max_payload
        self.decoder = FrameDecoder(max_payload)
        self._events: collections.deque[Event] = collections.deque()
        self._wlock = threading.Lock()
        self.read_size: int | None = None  # smaller reads (pre-auth): bounds the work one read can cause
        self.last_rx = time.monotonic()
        # how long the line must stay silent before damage is answered with a NAK: long enough that
        # the rest of a damaged frame has arrived (so one damaged frame gets one NAK, not several)
        bps = transport.bytes_per_s
        self.quiet_s = (0.003 + 32 / bps) if transport.lossy and bps else 0.02

    def send(self, ftype: int, seq: int, header: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
        frame = encode_frame(ftype, seq, header, payload, max_payload=self.max_payload)
        self.send_raw(frame)
        return frame

    def send_raw(self, frame: bytes | list[Any]) -> None:
        """Send an encoded frame (bytes, or the list of buffers encode_frame_parts made)."""
        with self._wlock:
            if isinstance(frame, list):
                self.transport.write_parts(frame)
            else:
                self.transport.write(frame)

    def encode(self, ftype: int, seq: int, header: dict[str, Any] | None, payload_parts: list[Any]) -> list[Any]:
        return encode_frame_parts(ftype, seq, header, payload_parts, max_payload=self.max_payload)

    def poll(self, timeout: float) -> Event | None:
        """The next decoded event, waiting up to `timeout` s; None when the line stayed quiet.

        Raises LinkLost when the transport closed.
        """
        if self._events:
            return self._events.popleft()
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            data = self.transport.read(self.read_size or READ_SIZE, max(0.0, deadline - time.monotonic()))
            if not data:
                return None
            self.last_rx = time.monotonic()
            self._events.extend(self.decoder.feed(data))
            if self._events:
                return self._events.popleft()
            if time.monotonic() >= deadline:
                return None

    def close(self) -> None:
        self.transport.close()
