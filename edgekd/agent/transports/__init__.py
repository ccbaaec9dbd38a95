"""Transports: how bytes reach the agent. Chosen by URL, one small module each (the pyserial habit).

    tcp://HOST:PORT                       plain TCP socket (TCP_NODELAY)                -> tcp.py
    serial:///dev/ttyACM0?baud=921600     a serial line through pyserial                -> serial.py
    /dev/ttyACM0, COM3, loop://, rfc2217://...   anything else pyserial's serial_for_url opens
    local                                 an agent subprocess on this machine, over real TCP -> local.py

The protocol code (channel, client, server) sees only the `Transport` interface below and never
knows which transport it runs on. New transports register in TRANSPORTS; the tests parametrize over it.
"""
from __future__ import annotations

import abc

from edgekd.errors import ConfigError
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

# URL schemes pyserial's serial_for_url understands itself; they all go through the serial transport
PYSERIAL_SCHEMES = ("serial", "loop", "rfc2217", "spy", "hwgrep", "alt", "cp2110")


def transport_name(url: str) -> str:
    """Which registered transport handles `url`."""
    if url == "local" or url.startswith("local?"):
        return "local"
    if "://" not in url:
        if url.startswith(("/", "COM", "com", "\\\\.\\")):
            return "serial"
        raise ConfigError(
            f"device URL {url!r} is not understood: use tcp://HOST:PORT, serial:///dev/ttyX?baud=921600, "
            "a serial device path such as /dev/ttyACM0, or local"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme in PYSERIAL_SCHEMES:
        return "serial"
    if scheme in TRANSPORTS:
        return scheme
    # the registry's message lists valid names and suggests the closest one
    return TRANSPORTS.get(scheme) and scheme  # type: ignore[return-value]


def open_transport(url: str, timeout: float = 10.0) -> Transport:
    """Open the transport that `url` names (connect timeout `timeout` seconds)."""
    return TRANSPORTS.get(transport_name(url)).open(url, timeout)


# registering is a side effect of importing the modules; each imports only stdlib + pyserial
from edgekd.agent.transports import local, serial, tcp  # noqa: E402,F401

__all__ = ["PYSERIAL_SCHEMES", "TRANSPORTS", "Transport", "open_transport", "transport_name"]
