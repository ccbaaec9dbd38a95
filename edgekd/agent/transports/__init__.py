"""Transports: how bytes reach the agent. Chosen by URL, one small module each (the pyserial habit).

    tcp://HOST:PORT                       plain TCP socket (TCP_NODELAY)                -> tcp.py
    serial:///dev/ttyACM0?baud=921600     a serial line through pyserial                -> serial.py
    /dev/ttyACM0, COM3, loop://, rfc2217://...   anything else pyserial's serial_for_url opens
    local                                 an agent subprocess on this machine, over real TCP -> local.py

The protocol code (channel, client, server) sees only the `Transport` interface (`base.py`) and never
knows which transport it runs on. A transport is one module here named after its URL scheme, registering its class in
`TRANSPORTS` (`base.py`); it is found by that name and imported only when a URL asks for it (no central
list, as pyserial's `urlhandler/protocol_<scheme>.py`). `available_transports()` imports them all
(for `--help` and the tests).
"""
from __future__ import annotations

import importlib
import pkgutil

from edgekd.agent.transports.base import TRANSPORTS, Transport
from edgekd.errors import ConfigError

NOT_TRANSPORTS = {"base"}


def transport_modules() -> list[str]:
    """Names of the transport modules in this package (each one registers the transport of that name)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in NOT_TRANSPORTS)


def transport_class(name: str) -> type[Transport]:
    """The transport registered as `name`, importing its module first (an unknown name: ConfigError
    with the valid names and the closest one)."""
    if name in transport_modules():
        importlib.import_module(f"{__name__}.{name}")
    else:
        available_transports()  # so the registry's message lists every valid name
    return TRANSPORTS.get(name)


def available_transports() -> list[str]:
    """Import every transport module; the registered names."""
    for name in transport_modules():
        importlib.import_module(f"{__name__}.{name}")
    return TRANSPORTS.names()


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
    if scheme in transport_modules():
        return scheme
    # the registry's message lists valid names and suggests the closest one
    return transport_class(scheme) and scheme  # type: ignore[return-value]


def open_transport(url: str, timeout: float = 10.0) -> Transport:
    """Open the transport that `url` names (connect timeout `timeout` seconds)."""
    return transport_class(transport_name(url)).open(url, timeout)


__all__ = ["PYSERIAL_SCHEMES", "TRANSPORTS", "Transport", "available_transports", "open_transport",
           "transport_class", "transport_name"]
