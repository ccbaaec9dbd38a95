"""The per-frame MAC of an authenticated session (protocol version 2; docs/PROTOCOL.md §3).

After a successful `auth`, every frame in both directions carries a 24-byte trailer between its
payload and its CRC:

    counter u64 BE | tag = HMAC-SHA256(K_dir, frame bytes 0 .. end of payload | direction | counter)[:16]

K_dir is the session key of the sending direction (auth.session_keys: HKDF of the shared key and both
handshake nonces), `direction` is 0x01 host->agent, 0x02 agent->host, and `counter` counts the
sender's transmissions in this session from 0 (a resend is a new transmission with a new counter).
So a frame that is altered (even with its CRC recomputed), replayed, reordered, reflected back to its
sender or spliced in from another session under the same key fails here.

A receiver accepts a frame only if the tag verifies and its counter is above every counter accepted
before (lossy links may lose frames, so counters may skip; they never go back). Anything else raises
`FrameRejected`: the frame is dropped, the caller logs it and ends the session. Line noise (garbage,
a frame whose CRC fails, a frame cut short) is still line noise: it is NAKed or answered `truncated`
as before, and never runs anything. The CRC is for noise; the MAC is for intent.

The switch: the `auth` exchange itself is plain. The agent turns the MAC on right after sending its
`auth` answer, the host right after checking it. Until the first authenticated frame arrives from
the peer, a plain frame carrying the `auth` exchange's own seq is a copy of that exchange still
crossing the line (a resend or NAK on a lossy link): the agent answers it from its cache (the plain
`auth` answer), the host drops it. Such a frame can never run a command.
"""
from __future__ import annotations

import hashlib
import hmac
import struct

from edgekd.agent.auth import SessionKeys
from edgekd.agent.protocol import (
    MAC_TRAILER_SIZE, BadFrame, Corrupt, ErrorCode, Event, Frame, FrameType, Garbage, LinkLost, OutFrame,
)

TAG_SIZE = 16
_COUNTER = struct.Struct(">Q")
_HOST_TO_AGENT, _AGENT_TO_HOST = b"\x01", b"\x02"
ROLES = ("host", "agent")


class FrameRejected(LinkLost):
    """A frame failed authentication in an authenticated session; the session is over."""


def _type_name(ftype: int) -> str:
    try:
        return FrameType(ftype).name
    except ValueError:
        return f"type {ftype}"


class FrameAuth:
    """MAC state of one authenticated session, seen from one side (`role` "host" or "agent").

    Not thread-safe by itself: `seal` runs under the channel's write lock (so counters go on the
    wire in order), `admit` on the single reading thread.
    """

    def __init__(self, keys: SessionKeys, role: str, *, grace_seq: int | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, not {role!r}")
        host = role == "host"
        send_key, recv_key = (keys.host_to_agent, keys.agent_to_host) if host else (keys.agent_to_host, keys.host_to_agent)
        self._send = hmac.new(send_key, digestmod=hashlib.sha256)  # keyed once; copied per frame
        self._recv = hmac.new(recv_key, digestmod=hashlib.sha256)
        self._send_dir, self._recv_dir = (_HOST_TO_AGENT, _AGENT_TO_HOST) if host else (_AGENT_TO_HOST, _HOST_TO_AGENT)
        self.peer = "agent" if host else "host"
        self.sent = 0  # next counter to send
        self.next_rx = 0  # the lowest counter an incoming frame may carry
        self.grace_seq = grace_seq  # seq of the plain `auth` exchange, until the peer's first MAC
        self.rejected = 0

    # ---- sending -------------------------------------------------------------------------------
    def digest_body(self, out: OutFrame) -> None:
        """MAC state over the frame's bytes up to the end of its payload (done once per frame)."""
        state = self._send.copy()
        state.update(out.head)
        for part in out.payload:
            state.update(part)
        out.mac_state = (self, state)

    def seal(self, out: OutFrame) -> bytes:
        """The MAC trailer of one transmission of `out` (the caller holds the channel's write lock)."""
        if out.mac_state is None or out.mac_state[0] is not self:
            self.digest_body(out)  # prepared before this session started: its MAC is this session's
        counter = _COUNTER.pack(self.sent)
        self.sent += 1
        state = out.mac_state[1].copy()
        state.update(self._send_dir + counter)
        return counter + state.digest()[:TAG_SIZE]

    # ---- receiving -----------------------------------------------------------------------------
    def admit(self, ev: Event) -> Event:
        """`ev` if it may be acted on in this session; raises FrameRejected otherwise."""
        if isinstance(ev, (Garbage, Corrupt)):
            return ev  # line noise: answered by NAK/resend as on every link; never runs anything
        if isinstance(ev, BadFrame):
            if ev.code == ErrorCode.TRUNCATED.value:
                return ev
            raise self._reject(f"a frame no {self.peer} of this session sends (seq {ev.seq}, {ev.code}: {ev.message})")
        if not ev.mac:
            if self.grace_seq is not None and ev.seq == self.grace_seq:
                return ev  # a copy of the auth exchange crossing the switch; see the module doc
            raise self._reject(f"an unauthenticated {_type_name(ev.type)} frame (seq {ev.seq}) in an authenticated session")
        if len(ev.mac) != MAC_TRAILER_SIZE:
            raise self._reject(f"a MAC trailer of {len(ev.mac)} bytes (seq {ev.seq})")
        counter_bytes, tag = ev.mac[:8], ev.mac[8:]
        state = self._recv.copy()
        state.update(ev.mac_head)
        state.update(ev.payload)
        state.update(self._recv_dir + counter_bytes)
        if not hmac.compare_digest(state.digest()[:TAG_SIZE], tag):
            raise self._reject(f"a {_type_name(ev.type)} frame (seq {ev.seq}) whose MAC does not verify: "
                               "altered, forged, reflected or from another session")
        (counter,) = _COUNTER.unpack(counter_bytes)
        if counter < self.next_rx:
            raise self._reject(f"a replayed or reordered {_type_name(ev.type)} frame (seq {ev.seq}, counter {counter}, "
                               f"expected {self.next_rx} or above)")
        self.next_rx = counter + 1
        self.grace_seq = None
        return ev

    def _reject(self, what: str) -> FrameRejected:
        self.rejected += 1
        return FrameRejected(f"refused {what} from the {self.peer}; the session is closed "
                             "(someone on the link altered or injected frames, or the two sides disagree on the key)")
