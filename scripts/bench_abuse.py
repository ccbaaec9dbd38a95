#!/usr/bin/env python
"""Issue 11: a fixed set of attacks against a real agent, then proof that it still serves correctly.

    .venv/bin/python scripts/bench_abuse.py [--flood-seconds 3]

A real `edgekd agent` subprocess listens on 127.0.0.1 with a key (and a file-descriptor limit of
128, so the descriptor attack really exhausts it); a second one serves a pty pair as its serial
line. Every attack loop is bounded in count and time. After each attack the agent must still be
running; at the end it must answer an authenticated `hello` and measure a model correctly.

Figures:
- outside_reads: files outside the store the agent opened or reported on (a bench that ran a
  planted outside model, or an answer "missing" / "sha256 differs" about an outside path);
- peak_rss_mb_under_flood: the agent's VmHWM after 20 pre-auth connections each announcing
  16 MiB (and sending 15 MiB) plus 30 uploads of 9 MiB sent ahead of a gap;
- ping_ms_during_resync_flood: median authenticated ping while another process floods
  pre-auth connections with b"EK" repeated (8 MiB each, reconnecting), beside the idle median;
- bench_slot_freed_after_disconnect_s: a client starts a min_s=20 bench and leaves at 1.5 s; the
  next client's bench time minus the same bench on an idle agent;
- serial_session_after_drop_authenticated: whether a keyless peer could use the agent after an
  authenticated host dropped the line without `bye` (and the idle time passed).

Prints a table, then ONE JSON line (the last line).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import resource
import secrets
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tty
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench_models import make_onnx_artifact  # noqa: E402  (tiny real ONNX artifacts, no torch)

from edgekd.agent.client import AgentClient  # noqa: E402
from edgekd.agent.protocol import (  # noqa: E402
    MAGIC, PROTOCOL_VERSION, AgentRequestError, FrameDecoder, FrameType, data_head, encode_frame,
)
from edgekd.agent.transports import transport_class  # noqa: E402
from edgekd.errors import ConfigError, EdgeKDError  # noqa: E402
from edgekd.fileio import atomic_write_json, sha256_file  # noqa: E402

FAST = {"warmup_count": 1, "warmup_s": 0.0, "min_count": 20, "min_s": 0.05}
MB = 1 << 20


def log(msg: str) -> None:
    print(f"[bench_abuse] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the agents under attack

class Agent:
    """`edgekd agent --listen 127.0.0.1:0` in a subprocess, with RLIMIT_NOFILE = `nofile`."""

    def __init__(self, work: Path, key: str, nofile: int, extra: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_AGENT_KEY": key}
        self.log_path = work / "agent.log"

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgekd", "agent", "--listen", "127.0.0.1:0", "--workdir", str(work / "store"),
             "-v", *extra], env=env, stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), preexec_fn=limit)
        line = self.proc.stdout.readline().decode()
        self.url = line.split("listening on ", 1)[1].strip()
        host, port = self.url[len("tcp://"):].rsplit(":", 1)
        self.addr = (host, int(port))
        self.key = key.encode()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self, field: str) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def client(self, timeout: float = 60.0) -> AgentClient:
        return AgentClient.connect(self.url, key=self.key, timeout=timeout)

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, OSError):
        return False


def first_answer(sock: socket.socket, timeout: float = 5.0):
    dec = FrameDecoder()
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (OSError, socket.timeout):
            return None
        if not data:
            return None
        frames = [e for e in dec.feed(data) if hasattr(e, "header")]
        if frames:
            return frames[0]
    return None


# ---------------------------------------------------------------- the attacks

def attack_descriptors(agent: Agent) -> dict[str, Any]:
    """300 idle connections against a process allowed 128 descriptors (EMFILE in accept)."""
    socks = []
    refused_locally = 0
    for _ in range(300):
        try:
            socks.append(socket.create_connection(agent.addr, timeout=2))
        except OSError:
            refused_locally += 1
    time.sleep(1.0)
    alive_during = agent.alive()
    with agent.client() as c:  # served once the idle peers pass the pre-auth limit
        served = c.ping() >= 0
    for s in socks:
        s.close()
    return {"ok": alive_during and served and agent.alive(),
            "detail": f"{len(socks)} opened, agent alive, authenticated ping served"}


def attack_drip(agent: Agent, preauth_s: float) -> dict[str, Any]:
    s = socket.create_connection(agent.addr, timeout=5)
    t0 = time.monotonic()
    closed = False
    while time.monotonic() - t0 < preauth_s + 5:
        try:
            s.sendall(b"E")
        except OSError:
            closed = True
            break
        if closed_by_peer(s, 0.1):
            closed = True
            break
    took = time.monotonic() - t0
    s.close()
    return {"ok": closed and took < preauth_s + 2, "detail": f"1 byte / 0.1 s drip closed after {took:.1f} s"}


def attack_outside_reads(agent: Agent, work: Path) -> dict[str, Any]:
    """Manifests naming files outside the artifact: absolute, climbing out, an oracle on /etc/passwd."""
    outside = make_onnx_artifact(work / "outside-model", hidden=4)
    planted = work / "planted.bin"
    planted.write_bytes(os.urandom(4096))
    cases = {
        "absolute model_file": {"model_file": str(outside / "model.onnx")},
        "../ model_file": {"model_file": "../../../../../../" + str(outside / "model.onnx").lstrip("/")},
        "files: /etc/passwd (oracle)": {"files": {"/etc/passwd": "0" * 64}},
        "files: outside file, right hash": {"files": {str(planted): sha256_file(planted)}},
        "files: ../blobs": {"files": {"../../blobs/" + "0" * 64: "0" * 64}},
    }
    reads = 0
    notes = []
    with agent.client() as c:
        for i, (name, changes) in enumerate(cases.items()):
            art = make_onnx_artifact(work / f"planted{i}", hidden=4, seed=i)
            manifest = json.loads((art / "manifest.json").read_text())
            if "files" in changes:
                changes = {"files": {**manifest["files"], **changes["files"]}}
            manifest.update(changes)
            atomic_write_json(art / "manifest.json", manifest)
            aid = c.put_artifact(art)
            try:
                c.bench(aid, FAST)
                reads += 1  # it ran: the outside file was opened
                notes.append(f"{name}: BENCHED")
            except AgentRequestError as err:
                text = str(err)
                if "missing" in text or "differs" in text or "outside" not in text:
                    reads += 1  # an answer about the outside file
                    notes.append(f"{name}: {text[:60]}")
    return {"ok": reads == 0 and agent.alive(), "outside_reads": reads,
            "detail": f"{len(cases)} planted manifests, {reads} outside reads" + (f" ({'; '.join(notes)})" if notes else "")}


def attack_numbers(agent: Agent, aid: str) -> dict[str, Any]:
    """NaN in a header; out-of-range bench fields; a warm-up count of 1e9 with max_s=1."""
    with socket.create_connection(agent.addr, timeout=5) as s:
        body = b'{"cmd":"bench","request":{"min_s":NaN,"max_s":NaN,"timeout_s":Infinity}}'
        prefix = struct.pack(">2sBBIII", MAGIC, PROTOCOL_VERSION, FrameType.REQUEST, 5, len(body), 0)
        raw = prefix + struct.pack(">I", zlib.crc32(prefix)) + body
        s.sendall(raw + struct.pack(">I", zlib.crc32(raw)))
        answer = first_answer(s)
    nan_refused = answer is not None and answer.header.get("code") == "bad_header"
    refused = 0
    bad = [{"min_s": 1e308}, {"timeout_s": 1e308}, {"warmup_count": 10**12}, {"max_s": -1.0}, {"threads": 10**7}]
    with agent.client() as c:
        for req in bad:
            try:
                c.bench(aid, req)
            except AgentRequestError:
                refused += 1
        t0 = time.monotonic()
        result = c.bench(aid, {"warmup_count": 10**9, "warmup_s": 0.0, "max_s": 1.0, "min_count": 1, "min_s": 0.0})
        warm_s = time.monotonic() - t0
    ok = nan_refused and refused == len(bad) and result["loop"]["warmup_s"] <= 1.5
    return {"ok": ok and agent.alive(), "warmup_request_s": warm_s,
            "detail": f"NaN header -> {answer.header.get('code') if answer else None}; {refused}/{len(bad)} out-of-range "
                      f"requests refused; warmup_count=1e9, max_s=1: warm-up {result['loop']['warmup_s']:.2f} s, "
                      f"request {warm_s:.1f} s"}


def attack_slot(agent: Agent, aid: str) -> dict[str, Any]:
    """A min_s=20 bench whose client leaves at 1.5 s must not hold the next one."""
    with agent.client() as c:
        t0 = time.monotonic()
        c.bench(aid, FAST)
        alone = time.monotonic() - t0
    quitter = agent.client()

    def long_bench() -> None:
        with contextlib.suppress(EdgeKDError, OSError):
            quitter.bench(aid, {"min_s": 20.0, "max_s": 30.0, "warmup_s": 0.0})

    t = threading.Thread(target=long_bench, daemon=True)
    t.start()
    time.sleep(1.5)
    quitter.transport.close()  # gone, without bye, mid-measurement
    left = time.monotonic()
    with agent.client() as c:
        c.bench(aid, FAST)
        after = time.monotonic() - left
    t.join(5)
    freed = max(0.0, after - alone)
    return {"ok": freed <= 2.0 and agent.alive(), "freed_s": freed,
            "detail": f"next bench took {after:.2f} s after the leaver, {alone:.2f} s on an idle agent"}


def attack_memory(agent: Agent) -> dict[str, Any]:
    """20 pre-auth connections announcing 16 MiB and sending 15 MiB; 30 uploads of 9 MiB ahead of a gap."""
    rss0 = agent.status("VmRSS")
    chunk15 = b"\0" * (15 * MB)

    def announcer() -> None:
        with contextlib.suppress(OSError):
            s = socket.create_connection(agent.addr, timeout=10)
            prefix = struct.pack(">2sBBIII", MAGIC, PROTOCOL_VERSION, FrameType.REQUEST, 2, 0, 16 * MB)
            s.sendall(prefix + struct.pack(">I", zlib.crc32(prefix)))
            s.sendall(chunk15)
            s.close()

    threads = [threading.Thread(target=announcer, daemon=True) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    held = refused = 0
    chunk = os.urandom(MB)
    for session in range(4):  # 30 puts: the per-session limit (8) spreads them over sessions
        with agent.client() as c:
            for i in range(8 if session < 3 else 6):
                sha = secrets.token_hex(32)
                try:
                    handle = c.request("put", {"sha256": sha, "size": 9 * MB})["upload"]
                except AgentRequestError:
                    refused += 1
                    continue
                for off in range(1, 9 * MB - MB, MB):
                    try:
                        c._exchange(FrameType.DATA, {}, [data_head(handle, off), chunk], None)
                        held += 1
                    except AgentRequestError:
                        refused += 1
    peak = agent.status("VmHWM")
    return {"ok": agent.alive(), "peak_rss_mb": peak / MB,
            "detail": f"RSS {rss0 / MB:.0f} -> peak {peak / MB:.0f} MB; {held} chunks held, {refused} refused"}


FLOOD = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
blob = b"EK" * (4 << 20)
end = time.monotonic() + seconds
sent = conns = 0
while time.monotonic() < end:
    try:
        s = socket.create_connection((host, port), timeout=2)
        conns += 1
        view = memoryview(blob)
        while view and time.monotonic() < end:
            n = s.send(view[:1 << 20])
            sent += n
            view = view[n:]
        s.close()
    except OSError:
        time.sleep(0.01)
print(sent, conns)
"""


def attack_resync_flood(agent: Agent, seconds: float, pings: int) -> dict[str, Any]:
    """Median ping, idle and while 2 processes flood pre-auth connections with b"EK" repeated."""
    with agent.client() as c:
        idle = [c.ping() * 1e3 for _ in range(pings)]
        cpu0 = _cpu_s(agent.proc.pid)
        floods = [subprocess.Popen([sys.executable, "-c", FLOOD, agent.addr[0], str(agent.addr[1]), str(seconds)],
                                   stdout=subprocess.PIPE) for _ in range(2)]
        time.sleep(0.3)
        during = []
        while any(f.poll() is None for f in floods):
            during.append(c.ping() * 1e3)
            time.sleep(0.01)
        outs = [f.communicate()[0].decode().split() for f in floods]
        cpu = _cpu_s(agent.proc.pid) - cpu0
    sent = sum(int(o[0]) for o in outs if o)
    conns = sum(int(o[1]) for o in outs if o)
    med = statistics.median(during) if during else float("inf")
    return {"ok": agent.alive() and med <= 5.0, "ping_ms": med, "idle_ms": statistics.median(idle),
            "detail": f"{sent / MB:.0f} MiB of EK over {conns} connections in {seconds:.0f} s; agent CPU {cpu:.2f} s; "
                      f"ping median {med:.2f} ms ({len(during)} pings) vs idle {statistics.median(idle):.2f} ms"}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def attack_names(agent: Agent, work: Path) -> dict[str, Any]:
    """Trailing newlines in a hash and a bundle name; a symlinked model file on the host."""
    refused = 0
    with agent.client() as c:
        try:
            c.request("put", {"sha256": "0" * 64 + "\n", "size": 1})
        except AgentRequestError:
            refused += 1
        sha = c.put_bytes(b"payload")
        try:
            c.request("bundle", {"files": {"ok\n": sha}})
        except AgentRequestError:
            refused += 1
        secret = work / "host-secret"
        secret.write_bytes(b"host private")
        art = make_onnx_artifact(work / "linked", hidden=4)
        (art / "model.bin").symlink_to(secret)
        try:
            c.put_artifact(art)
        except ConfigError:
            refused += 1
    return {"ok": refused == 3 and agent.alive(), "detail": f"{refused}/3 refused (hash\\n, name\\n, symlink upload)"}


# ---------------------------------------------------------------- serial

def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    os.close(slave)
    os.set_blocking(master, False)
    return master, path


def _wire(a: int, b: int, stop: threading.Event) -> None:
    """Copy bytes between two pty masters (a clean cable)."""
    queues = {a: bytearray(), b: bytearray()}
    while not stop.is_set():
        want = [fd for fd in (a, b) if queues[fd]]
        readable, writable, _ = select.select([a, b], want, [], 0.05)
        for src, dst in ((a, b), (b, a)):
            if src in readable:
                try:
                    queues[dst] += os.read(src, 65536)
                except OSError as err:
                    if err.errno not in (errno.EIO, errno.EAGAIN):
                        raise
            if dst in writable and queues[dst]:
                with contextlib.suppress(BlockingIOError):
                    del queues[dst][:os.write(dst, queues[dst])]
        if not readable:
            time.sleep(0.001)


@contextlib.contextmanager
def serial_agent(work: Path, key: str, idle_s: float) -> Iterator[tuple[str, subprocess.Popen]]:
    host_master, host_path = _pty()
    agent_master, agent_path = _pty()
    stop = threading.Event()
    wire = threading.Thread(target=_wire, args=(host_master, agent_master, stop), daemon=True)
    wire.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_AGENT_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "agent", "--serial", agent_path, "--idle-seconds", str(idle_s),
                             "--workdir", str(work / "serial-store"), "-v"], env=env, stdout=subprocess.PIPE,
                            stderr=open(work / "serial-agent.log", "wb"))
    try:
        proc.stdout.readline()  # "listening on serial://..."
        yield host_path, proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
        stop.set()
        wire.join(5)
        os.close(host_master)
        os.close(agent_master)


def attack_serial(work: Path, key: str, idle_s: float = 1.0) -> dict[str, Any]:
    """An authenticated host drops the line (no bye); after the idle time a keyless peer tries; then a
    proper bye and a keyless `fetch` of the stashed reply."""
    with serial_agent(work, key, idle_s) as (device, proc):
        host = AgentClient.connect(device, key=key.encode(), timeout=30)
        host.hello()
        host.close(say_bye=False)
        time.sleep(idle_s + 0.8)
        used = []
        with AgentClient(transport_class("serial").open(device, 5), timeout=30) as intruder:
            for cmd, header in (("hello", {}), ("delete", {"id": "a" * 64})):
                try:
                    intruder.request(cmd, header)
                    used.append(cmd)
                except AgentRequestError as err:
                    if err.code != "unauthorized":
                        used.append(cmd)  # it got past the key check to a real answer
        with AgentClient.connect(device, key=key.encode(), timeout=30) as host:
            host.hello()  # long answer: stashed and fetched in pieces
        with AgentClient(transport_class("serial").open(device, 5), timeout=30) as intruder:
            piece = intruder._exchange(FrameType.REQUEST, {"cmd": "fetch", "off": 0, "n": 4096}, [], None)
            leaked = len(bytes(piece.payload))
        alive = proc.poll() is None
    return {"ok": not used and leaked == 0 and alive, "authenticated_after_drop": bool(used), "stash_leak": leaked,
            "detail": f"keyless after drop: {used or 'all unauthorized'}; keyless fetch after bye: {leaked} bytes"}


# ---------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flood-seconds", type=float, default=3.0)
    ap.add_argument("--pings", type=int, default=50)
    args = ap.parse_args()
    preauth_s = 2.0
    key = secrets.token_hex(32)
    rows: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="edgekd-abuse-") as tmp:
        work = Path(tmp)
        # more sessions allowed than descriptors: the descriptor attack really runs the process out
        agent = Agent(work, key, nofile=128, extra=["--preauth-seconds", str(preauth_s), "--max-connections", "200"])
        try:
            with agent.client() as c:
                aid = c.put_artifact(make_onnx_artifact(work / "good", hidden=8))
            steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("1 descriptor / connection flood", lambda: attack_descriptors(agent)),
                ("1 pre-auth drip", lambda: attack_drip(agent, preauth_s)),
                ("2 manifest paths outside the store", lambda: attack_outside_reads(agent, work)),
                ("3 NaN / out-of-range / huge warm-up", lambda: attack_numbers(agent, aid)),
                ("3 bench slot after a client leaves", lambda: attack_slot(agent, aid)),
                ("5 memory: pre-auth 16 MiB + held chunks", lambda: attack_memory(agent)),
                ("6 resync flood (EK) vs ping", lambda: attack_resync_flood(agent, args.flood_seconds, args.pings)),
                ("7/8 trailing newline, symlink upload", lambda: attack_names(agent, work)),
                ("4 serial: drop without bye, stash", lambda: attack_serial(work, key)),
            ]
            for name, step in steps:
                log(name)
                try:
                    rows.append((name, step()))
                except Exception as err:  # an attack that broke the harness itself is a failure, shown
                    rows.append((name, {"ok": False, "detail": f"{type(err).__name__}: {err}"}))
                if not agent.alive():
                    rows[-1][1]["ok"] = False
                    rows[-1][1]["detail"] += " - AGENT DIED"
                    break
            final_ok = False
            if agent.alive():
                with agent.client() as c:
                    info = c.hello()
                    result = c.bench(aid, FAST)
                final_ok = info["protocol"] == PROTOCOL_VERSION and result["latency"]["count"] >= FAST["min_count"] \
                    and result["latency"]["p50_ms"] > 0
                rows.append(("final: authenticated hello + bench", {
                    "ok": final_ok, "detail": f"p50 {result['latency']['p50_ms']:.3f} ms over {result['latency']['count']} runs"}))
            alive = agent.alive()
        finally:
            agent.stop()
        log_tail = agent.log_path.read_text(errors="replace").count("WARNING")
    by = dict(rows)
    print(f"{'attack':44} {'ok':4} detail")
    for name, r in rows:
        print(f"{name:44} {'yes' if r.get('ok') else 'NO':4} {r.get('detail', '')}")
    load = os.getloadavg()
    print(f"(agent logged {log_tail} warnings; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    figures = {
        "attacks_tried": len(rows) - 1,
        "agent_survived_all": bool(alive and final_ok),
        "outside_reads": by.get("2 manifest paths outside the store", {}).get("outside_reads"),
        "peak_rss_mb_under_flood": round(by.get("5 memory: pre-auth 16 MiB + held chunks", {}).get("peak_rss_mb", -1), 1),
        "ping_ms_during_resync_flood": round(by.get("6 resync flood (EK) vs ping", {}).get("ping_ms", -1), 3),
        "ping_ms_idle": round(by.get("6 resync flood (EK) vs ping", {}).get("idle_ms", -1), 3),
        "serial_session_after_drop_authenticated": by.get("4 serial: drop without bye, stash", {}).get("authenticated_after_drop"),
        "bench_slot_freed_after_disconnect_s": round(by.get("3 bench slot after a client leaves", {}).get("freed_s", -1), 2),
        "all_attacks_refused": all(r.get("ok") for _, r in rows),
        "load_avg_1m": round(load[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
