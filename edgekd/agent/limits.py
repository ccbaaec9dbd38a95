"""Resource limits of the agent: what one peer may hold, for how long, and how much of it.

Every limit here is a user setting (`edgekd agent --help`), reported to an authenticated host in
`hello` under "limits", and documented in docs/PROTOCOL.md §6. Together they bound what an outside
peer can make the agent spend, by construction rather than case by case:

- file descriptors: at most `max_connections` sessions at once (one socket each) and at most
  `max_uploads_per_session` open upload files per session;
- time: a connection that has not authenticated within `preauth_s` is closed; a session that has
  sent no complete frame for `idle_s` is closed (TCP) or loses its authentication (serial). Only
  complete frames count as activity, so a peer dripping a byte at a time does not keep it open;
- memory: before authentication a frame may carry at most `preauth_max_frame` bytes and a TCP peer
  may send at most `preauth_garbage` bytes of non-frames (TCP never damages bytes, so noise there is
  abuse); chunks held ahead of a gap in an upload take at most `max_held_bytes` for the whole agent;
  after authentication one partial frame per session is bounded by `max_payload`;
- CPU: the pre-auth garbage budget above also bounds the resynchronisation work a peer can cause.

Device side: stdlib only.
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

MB = 1 << 20


@dataclass(frozen=True)
class AgentLimits:
    """The limits of one agent process (shared by all its sessions)."""

    max_connections: int = 32
    preauth_s: float = 10.0
    idle_s: float = 600.0
    max_uploads_per_session: int = 8
    max_held_bytes: int = 16 * MB
    preauth_max_frame: int = 64 << 10
    preauth_garbage: int = 16 << 10

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_uploads_per_session", "max_held_bytes", "preauth_max_frame",
                     "preauth_garbage"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"agent limit {name}={value!r} must be a positive integer")
        for name in ("preauth_s", "idle_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise ValueError(f"agent limit {name}={value!r} must be a positive finite number of seconds")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ByteBudget:
    """A thread-safe count of bytes against a cap: `take(n)` succeeds only while the total stays
    within the cap; `give(n)` returns bytes. Used for memory held on behalf of peers."""

    def __init__(self, cap: int) -> None:
        self.cap = int(cap)
        self.used = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.used + n > self.cap:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.used = max(0, self.used - n)


class SlotCounter:
    """At most `cap` holders at once (live connections): `enter()` -> bool, `leave()`."""

    def __init__(self, cap: int) -> None:
        self.cap = int(cap)
        self.count = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.count >= self.cap:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count = max(0, self.count - 1)
