"""Serial transport through pyserial: `serial:///dev/ttyACM0?baud=921600`, a plain device path
(`/dev/ttyACM0`, `COM3`), or any URL pyserial's `serial_for_url` opens itself (`loop://`, `rfc2217://`).

Serial lines damage bytes, so this transport says `lossy = True`: the protocol then uses small
upload chunks and short retransmit timers (CRC + NAK + resend, see docs/PROTOCOL.md).
"""
from __future__ import annotations

import os
import select
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgekd.agent.protocol import LinkLost
from edgekd.agent.transports.base import TRANSPORTS, Transport
from edgekd.errors import AgentError, ConfigError

DEFAULT_BAUD = 921600
WRITE_TIMEOUT_S = 30.0


def parse_serial_url(url: str) -> tuple[str, int]:
    """-> (what to give serial_for_url, baud rate)."""
    baud = DEFAULT_BAUD
    if url.lower().startswith("serial://"):
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        if "baud" in query:
            text = query["baud"][-1]
            if not text.isdigit() or int(text) <= 0:
                raise ConfigError(f"baud rate {text!r} in {url!r} must be a positive integer, e.g. ?baud=921600")
            baud = int(text)
        port = parts.path or parts.netloc
        if not port:
            raise ConfigError(f"serial URL {url!r} names no device; use serial:///dev/ttyACM0?baud=921600")
        return port, baud
    return url, baud


def open_serial_port(port: str, baud: int) -> Any:
    """Open a device path or pyserial URL in raw 8N1 mode, non-blocking reads."""
    import serial  # pyserial: a base dependency

    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=0, write_timeout=WRITE_TIMEOUT_S, exclusive=None)
    except (serial.SerialException, ValueError, OSError) as err:
        raise AgentError(f"cannot open serial port {port!r} ({err}); check the device path and its permissions (dialout group)") from None


@TRANSPORTS.register("serial")
class SerialTransport(Transport):
    lossy = True
    default_chunk = 4096

    def __init__(self, ser: Any, description: str, baud: int) -> None:
        self.ser = ser
        self.description = description
        self.bytes_per_s = baud / 10.0  # 8N1: 10 bit times per byte
        self._fd = None
        if os.name == "posix" and hasattr(ser, "fileno"):
            try:
                self._fd = ser.fileno()
            except Exception:  # pyserial URL handlers (loop://) have no descriptor
                self._fd = None
        self._closed = False

    @classmethod
    def open(cls, url: str, timeout: float) -> "SerialTransport":
        port, baud = parse_serial_url(url)
        return cls(open_serial_port(port, baud), url, baud)

    def write(self, data: bytes) -> None:
        import serial

        try:
            self.ser.write(data)
        except (serial.SerialException, OSError) as err:
            raise LinkLost(f"serial link {self.description} lost while sending ({err})") from None

    def read(self, max_bytes: int, timeout: float) -> bytes:
        import serial

        try:
            if self._fd is not None:
                # select + os.read: no per-call termios reconfiguration (pyserial's timeout setter does one)
                ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
                if not ready:
                    return b""
                data = os.read(self._fd, max_bytes)
                if not data:
                    raise LinkLost(f"serial link {self.description} closed")
                return data
            self.ser.timeout = max(0.0, timeout)
            first = self.ser.read(1)
            if not first:
                return b""
            waiting = self.ser.in_waiting
            return first + (self.ser.read(min(waiting, max_bytes - 1)) if waiting else b"")
        except (serial.SerialException, OSError) as err:
            raise LinkLost(f"serial link {self.description} lost while reading ({err})") from None

    def carrier(self) -> bool | None:
        """DCD of the line when the port reports it (a pty or a URL handler cannot: None)."""
        try:
            return bool(self.ser.cd)
        except Exception:
            return None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.ser.close()
            except Exception:
                pass
