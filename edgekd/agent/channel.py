"""A transport plus a frame decoder: send frames, receive decoded events with timeouts.

Shared by the host (client.py) and the agent (server.py). Writes are serialised by a lock so the
agent's keep-alive thread and its request loop never interleave bytes of two frames.

Once a session is authenticated (`start_mac`), every frame prepared here carries a MAC and every
event read here passes `FrameAuth.admit` (frame_auth.py): a frame that fails raises FrameRejected
(a LinkLost) from `poll`, which ends the session. Without `start_mac` (a key-less loopback agent, or
before `auth`) frames are plain, exactly as in protocol version 1.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any

from edgekd.agent.auth import SessionKeys
from edgekd.agent.frame_auth import FrameAuth
from edgekd.agent.protocol import DEFAULT_MAX_PAYLOAD, BadFrame, ErrorCode, Event, Frame, FrameDecoder, OutFrame, prepare_frame
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
        self.mac: FrameAuth | None = None
        # how long the line must stay silent before damage is answered with a NAK: long enough that
        # the rest of a damaged frame has arrived (so one damaged frame gets one NAK, not several)
        bps = transport.bytes_per_s
        self.quiet_s = (0.003 + 32 / bps) if transport.lossy and bps else 0.02

    # ---- authentication ------------------------------------------------------------------------
    def start_mac(self, keys: SessionKeys, role: str, grace_seq: int | None) -> None:
        """From now on every frame sent is sealed and every frame received must carry a valid MAC.

        `grace_seq`: the seq of the plain `auth` exchange (see frame_auth's module doc).
        """
        with self._wlock:
            self.mac = FrameAuth(keys, role, grace_seq=grace_seq)

    def stop_mac(self) -> None:
        """The authenticated session is over (serial `bye`); the line is plain again."""
        with self._wlock:
            self.mac = None

    # ---- sending -------------------------------------------------------------------------------
    def prepare(self, ftype: int, seq: int, header: dict[str, Any] | None = None, payload: list[Any] | tuple[Any, ...] = (),
                **kw: Any) -> OutFrame:
        """Encode a frame (authenticated when the session is); send it, and resend it, with send_out."""
        mac = self.mac
        out = prepare_frame(ftype, seq, header, payload, max_payload=self.max_payload, authenticated=mac is not None, **kw)
        if mac is not None:
            mac.digest_body(out)  # the expensive pass, outside the write lock
        return out

    def send(self, ftype: int, seq: int, header: dict[str, Any] | None = None, payload: bytes = b"", **kw: Any) -> None:
        self.send_out(self.prepare(ftype, seq, header, (payload,) if payload else (), **kw))

    def send_out(self, out: OutFrame, *, joined: bool = False) -> None:
        """Send one transmission of `out`; an authenticated frame gets a fresh counter each time.

        `joined`: write it as one buffer (small frames resent often on lossy links).
        """
        with self._wlock:
            trailer = b""
            if out.authenticated:
                if self.mac is None:
                    return  # its session ended (serial `bye`): the peer could not check it any more
                trailer = self.mac.seal(out)
            parts = out.wire(trailer)
            if joined:
                self.transport.write(b"".join(parts))
            else:
                self.transport.write_parts(parts)

    # ---- receiving -----------------------------------------------------------------------------
    def poll(self, timeout: float) -> Event | None:
        """The next decoded event, waiting up to `timeout` s; None when the line stayed quiet.

        Raises LinkLost when the transport closed, FrameRejected when a frame fails authentication.
        """
        if self._events:
            return self._admit(self._events.popleft())
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            data = self.transport.read(self.read_size or READ_SIZE, max(0.0, deadline - time.monotonic()))
            if not data:
                return None
            self.last_rx = time.monotonic()
            self._events.extend(self.decoder.feed(data))
            if self._events:
                return self._admit(self._events.popleft())
            if time.monotonic() >= deadline:
                return None

    def _admit(self, ev: Event) -> Event:
        if self.mac is not None:
            return self.mac.admit(ev)
        if isinstance(ev, Frame) and ev.mac:
            # sealed for a session this side does not (or no longer) hold: nothing here can check it
            return BadFrame(ev.seq, ErrorCode.UNAUTHORIZED.value,
                            "an authenticated frame for a session that has ended; start a new one (challenge + auth)")
        return ev

    def close(self) -> None:
        self.transport.close()
