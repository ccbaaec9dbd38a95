"""TCP transport: `tcp://HOST:PORT`. Plain sockets with TCP_NODELAY (small replies must not wait for
Nagle's algorithm: that alone would cost tens of milliseconds per request)."""
from __future__ import annotations

import ipaddress
import select
import socket
from urllib.parse import urlsplit

from edgekd.agent.protocol import LinkLost
from edgekd.agent.transports.base import TRANSPORTS, Transport
from edgekd.errors import AgentError, ConfigError

# a send that cannot complete for this long means the peer stopped reading
WRITE_TIMEOUT_S = 60.0


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ConfigError naming `what` when malformed."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{what} {text!r} is not HOST:PORT (for example 127.0.0.1:7000)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def tune_socket(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # large socket buffers keep 1 MiB upload chunks flowing without extra round trips
    for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        except OSError:
            pass
    sock.settimeout(WRITE_TIMEOUT_S)  # reads wait in select(); this bounds sendall only


@TRANSPORTS.register("tcp")
class TcpTransport(Transport):
    """One connected TCP socket (host side after connect, agent side after accept)."""

    lossy = False
    default_chunk = 1 << 20

    def __init__(self, sock: socket.socket, description: str) -> None:
        tune_socket(sock)
        self.sock = sock
        self.description = description
        self._closed = False

    @classmethod
    def open(cls, url: str, timeout: float) -> "TcpTransport":
        parts = urlsplit(url)
        host, port = parse_host_port(parts.netloc, "device URL")
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as err:
            raise AgentError(
                f"cannot connect to the agent at {url} ({err.strerror or err}); start it on the device with "
                f"`edgekd agent --listen {host}:{port}` and check the address"
            ) from None
        return cls(sock, url)

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise LinkLost(f"link to {self.description} lost while sending ({err})") from None

    def write_parts(self, parts: list[bytes | bytearray | memoryview]) -> None:
        # small pieces are joined (one segment); a big payload is sent from its own buffer, uncopied
        try:
            if sum(len(p) for p in parts) <= 65536:
                self.sock.sendall(b"".join(parts))
            else:
                for part in parts:
                    self.sock.sendall(part)
        except OSError as err:
            raise LinkLost(f"link to {self.description} lost while sending ({err})") from None

    def read(self, max_bytes: int, timeout: float) -> bytes:
        try:
            ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
            if not ready:
                return b""
            data = self.sock.recv(max_bytes)
        except (OSError, ValueError) as err:
            raise LinkLost(f"link to {self.description} lost while reading ({err})") from None
        if not data:
            raise LinkLost(f"{self.description} closed the connection")
        return data

    def peer_closed(self) -> bool:
        """A readable socket whose peek returns nothing: the peer closed (or reset) the connection."""
        if self._closed:
            return True
        try:
            ready, _, _ = select.select([self.sock], [], [], 0)
            if not ready:
                return False
            return self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def listen_tcp(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = a free port; read it back with getsockname())."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); pick another address or port") from None
    sock.listen(8)
    return sock
