"""`local`: start an agent subprocess on this machine and talk to it over real TCP on loopback.

The agent gets a free port (it binds port 0 and prints the address), a random key through
$EDGEKD_AGENT_KEY and a temporary work directory (or `local?workdir=PATH` to keep its store). Closing
the transport stops the agent. Measurements through `local` therefore cross the same protocol,
transport and runner process as a remote device does.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from edgekd.agent.transports.base import TRANSPORTS
from edgekd.agent.transports.tcp import TcpTransport
from edgekd.errors import AgentError

_READY = re.compile(r"listening on (tcp://[^\s]+)")


@TRANSPORTS.register("local")
class LocalTransport(TcpTransport):
    def __init__(self, sock: socket.socket, description: str, proc: subprocess.Popen[bytes],
                 tmpdir: str | None, log_path: Path, key: bytes) -> None:
        super().__init__(sock, description)
        self.proc, self._tmpdir, self.log_path, self.key = proc, tmpdir, log_path, key

    @classmethod
    def open(cls, url: str, timeout: float) -> "LocalTransport":
        query = parse_qs(urlsplit(url).query)
        tmpdir = None
        if "workdir" in query:
            workdir = Path(query["workdir"][-1]).expanduser()
        else:
            tmpdir = tempfile.mkdtemp(prefix="edgekd-local-agent-")
            workdir = Path(tmpdir) / "store"
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir.parent / f"{workdir.name}-agent.log"
        key = secrets.token_hex(32).encode()
        env = dict(os.environ, EDGEKD_AGENT_KEY=key.decode(), PYTHONUNBUFFERED="1")
        pkg_root = str(Path(__file__).resolve().parents[3])
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "edgekd", "agent", "--listen", "127.0.0.1:0", "--workdir", str(workdir),
                 # its only peer is this host, which may distill for longer than the default idle limit
                 "--idle-seconds", "86400"],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=env,
            )
        address = _wait_ready(proc, timeout=max(timeout, 30.0))
        if address is None:
            proc.kill()
            proc.wait()
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
            raise AgentError(f"the local agent did not start (exit code {proc.returncode}); its log ends with:\n{tail}")
        host, port = address.split("://", 1)[1].rsplit(":", 1)
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
        except OSError as err:
            proc.kill()
            raise AgentError(f"cannot connect to the local agent at {address} ({err})") from None
        return cls(sock, f"local ({address}, pid {proc.pid})", proc, tmpdir, log_path, key)

    def close(self) -> None:
        super().close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> str | None:
    """Read the agent's stdout until it prints its address (in a thread: readline cannot time out)."""
    found: list[str] = []

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            m = _READY.search(raw.decode(errors="replace"))
            if m:
                found.append(m.group(1))
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return found[0] if found else None
