"""The `Transport` interface every transport implements, and the registry transports register in
when their module is imported (`edgekd.agent.transports` imports a module only when a URL names it).
Device side: stdlib only."""
from __future__ import annotations

import abc

from edgekd.registry import Registry


class Transport(abc.ABC):
    """A bidirectional byte stream to one peer.

    Link hints (the protocol uses them to pick chunk sizes and retransmit timers, never to branch on
    the transport kind): `lossy` means bytes may arrive damaged (serial lines); `bytes_per_s` is the
    line speed when it is the bottleneck (None = fast); `key` is a shared key the transport itself
    made (the local agent), used when the caller gives none.
    """

    description: str = "?"
    lossy: bool = False
    bytes_per_s: float | None = None
    default_chunk: int = 1 << 20
    key: bytes | None = None

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of `data`; raises LinkLost when the peer is gone."""

    def write_parts(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """Send several buffers back to back (transports that can avoid joining them override this)."""
        self.write(b"".join(parts))

    @abc.abstractmethod
    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Bytes available now (at most max_bytes), waiting up to `timeout` s for the first one.

        Returns b"" when nothing arrived in time; raises LinkLost when the peer closed the link.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link (idempotent)."""

    def peer_closed(self) -> bool:
        """True when the peer has visibly gone (checked while a long command runs, from another
        thread than the reader). Transports that cannot tell say False."""
        return False

    def carrier(self) -> bool | None:
        """Carrier detect of a serial line: True/False, or None when the link cannot tell."""
        return None

    @classmethod
    def open(cls, url: str, timeout: float) -> "Transport":  # pragma: no cover - overridden
        raise NotImplementedError


TRANSPORTS: Registry[type[Transport]] = Registry("transport")
