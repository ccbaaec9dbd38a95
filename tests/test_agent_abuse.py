"""Attacks from issue 11, each reproduced against a real agent (real sockets, real ptys, real files):
resource exhaustion, files outside the store, a bench that holds the slot, authentication that
outlives a serial host, unbounded memory, resync CPU burn, trailing newlines in names, symlinks."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgekd.agent.client import AgentClient
from edgekd.agent.limits import AgentLimits
from edgekd.agent.protocol import (
    MAGIC, PROTOCOL_VERSION, AgentRequestError, Frame, FrameDecoder, FrameType, LinkLost, data_head, encode_frame,
)
from edgekd.agent.server import TcpAgentServer
from edgekd.agent.storage import MAX_HELD_CHUNKS, ContentStore
from edgekd.agent.transports import transport_class
from edgekd.bench.measure import timing_loop
from edgekd.agent import auth
from edgekd.errors import AgentError, ConfigError
from edgekd.fileio import atomic_write_json, sha256_file

from agent_links import serial_agent
from bench_models import make_onnx_artifact

pytestmark = pytest.mark.timeout(90)
KEY = b"abuse-test-key-0123456789abcdef"
FAST = {"warmup_count": 1, "warmup_s": 0.0, "min_count": 5, "min_s": 0.0}
REPO = Path(__file__).resolve().parents[1]


def _addr(url: str) -> tuple[str, int]:
    host, port = url[len("tcp://"):].rsplit(":", 1)
    return host, int(port)


def _answer(sock: socket.socket, timeout: float = 5.0):
    """The first frame the agent sends back on a raw socket (None if it closed the connection)."""
    dec = FrameDecoder()
    sock.settimeout(timeout)
    while True:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return None
        if not data:
            return None
        frames = [e for e in dec.feed(data) if hasattr(e, "header")]
        if frames:
            return frames[0]


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


# ---- 1. file descriptors, connections, idle and pre-auth time ----------------------------------

def test_agent_out_of_file_descriptors_keeps_serving(tmp_path):
    """`ulimit -n 64` + 70 idle connections used to end the accept loop (exit 0, port gone)."""
    env = dict(os.environ, EDGEKD_AGENT_KEY=KEY.decode(), PYTHONPATH=str(REPO))

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "agent", "--listen", "127.0.0.1:0", "--workdir", str(tmp_path / "store"),
         "--preauth-seconds", "1.5", "--max-connections", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, preexec_fn=low_fd_limit)
    try:
        line = proc.stdout.readline().decode()
        url = line.split("listening on ", 1)[1].strip()
        idle = []
        for _ in range(70):  # more than the process has descriptors for
            try:
                idle.append(socket.create_connection(_addr(url), timeout=5))
            except OSError:
                break
        time.sleep(0.5)
        assert proc.poll() is None, "the agent died when it ran out of file descriptors"
        time.sleep(1.5)  # the idle connections pass --preauth-seconds and are closed
        for s in idle:
            s.close()
        with AgentClient.connect(url, key=KEY, timeout=20) as c:
            assert c.hello()["limits"]["preauth_s"] == 1.5
        assert proc.poll() is None
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"cannot accept" in err or b"not authenticated" in err  # it said what happened


def test_connection_cap_and_a_drip_does_not_keep_a_session(tmp_path):
    limits = AgentLimits(max_connections=3, preauth_s=1.0)
    with TcpAgentServer(tmp_path / "store", key=KEY, limits=limits) as srv:
        held = [socket.create_connection(_addr(srv.url)) for _ in range(3)]
        time.sleep(0.3)
        extra = socket.create_connection(_addr(srv.url))
        assert _closed_by_peer(extra, 2.0), "a connection over --max-connections was served"
        # a peer dripping one byte at a time is still closed at the pre-auth deadline
        t0 = time.monotonic()
        dripper = held[0]
        closed = False
        while time.monotonic() - t0 < 4:
            try:
                dripper.sendall(b"E")
            except OSError:
                closed = True
                break
            if _closed_by_peer(dripper, 0.2):
                closed = True
                break
        assert closed and time.monotonic() - t0 < 3.0
        for s in held:
            s.close()
        time.sleep(0.3)
        with AgentClient.connect(srv.url, key=KEY) as c:  # slots are free again
            limits_seen = c.hello()["limits"]
    assert limits_seen["max_connections"] == 3 and limits_seen["idle_s"] == 600.0


def test_idle_timeout_counts_frames_not_bytes(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=None, limits=AgentLimits(idle_s=1.0)) as srv:
        s = socket.create_connection(_addr(srv.url))
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 4:  # a byte every 0.2 s (a partial frame that never ends)
            try:
                s.sendall(MAGIC[:1])
            except OSError:
                closed = True
                break
            if _closed_by_peer(s, 0.2):
                closed = True
                break
        assert closed and time.monotonic() - t0 < 3.0


def test_open_uploads_per_session_are_limited(tmp_path):
    limits = AgentLimits(max_uploads_per_session=4)
    with TcpAgentServer(tmp_path / "store", key=KEY, limits=limits) as srv:
        with AgentClient.connect(srv.url, key=KEY) as c:
            for i in range(4):
                assert "upload" in c.request("put", {"sha256": f"{i:064x}", "size": 10})
            with pytest.raises(AgentRequestError, match="uploads open") as err:
                c.request("put", {"sha256": f"{9:064x}", "size": 10})
            assert err.value.code == "quota_exceeded"
            assert c.ping() >= 0
        with AgentClient.connect(srv.url, key=KEY) as c:  # the session ended: its uploads were closed
            assert "upload" in c.request("put", {"sha256": f"{9:064x}", "size": 10})


# ---- 2. every path a manifest names stays inside the artifact ----------------------------------

def _planted_manifest(art: Path, **changes) -> None:
    manifest = json.loads((art / "manifest.json").read_text())
    manifest.update(changes)
    atomic_write_json(art / "manifest.json", manifest)


@pytest.fixture
def client(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        with AgentClient.connect(srv.url, key=KEY, timeout=30) as c:
            yield c


def test_manifest_paths_outside_the_artifact_are_refused(client, tmp_path):
    outside = make_onnx_artifact(tmp_path / "outside")  # a real model the agent must not open
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the host")
    cases = [
        {"model_file": str(outside / "model.onnx")},  # absolute path
        {"model_file": "../../../../" + str(outside / "model.onnx").lstrip("/")},  # climbing out
        {"files": {"model.onnx": None, str(secret): sha256_file(secret)}},  # existence / content oracle
        {"files": {"model.onnx": None, "../blobs/x": "0" * 64}},
    ]
    for i, changes in enumerate(cases):
        art = make_onnx_artifact(tmp_path / f"art{i}", seed=i)
        if "files" in changes:
            changes["files"]["model.onnx"] = sha256_file(art / "model.onnx")
        _planted_manifest(art, **changes)
        aid = client.put_artifact(art)
        with pytest.raises(AgentRequestError) as err:
            client.bench(aid, FAST)
        text = str(err.value)
        assert "outside" in text, text
        assert "missing" not in text and "differs" not in text  # no oracle on the outside file
    assert client.ping() >= 0


# ---- 3. strict JSON, range checks, the measurement slot ----------------------------------------

def test_nan_and_infinity_in_a_header_are_bad_headers(client, tmp_path):
    url = client.url
    with socket.create_connection(_addr(url), timeout=5) as s:
        body = b'{"cmd":"ping","x":NaN}'
        import struct
        import zlib

        prefix = struct.pack(">2sBBIII", MAGIC, PROTOCOL_VERSION, 1, 7, len(body), 0)
        raw = prefix + struct.pack(">I", zlib.crc32(prefix)) + body
        raw += struct.pack(">I", zlib.crc32(raw))
        s.sendall(raw)
        answer = _answer(s)
    assert answer is not None and answer.type == FrameType.ERROR and answer.header["code"] == "bad_header"


@pytest.mark.parametrize("request_", [
    {"min_s": 1e300}, {"timeout_s": 1e300}, {"warmup_count": 10**12}, {"max_s": -1}, {"batch": 0},
    {"threads": 10**6}, {"seed": -1},
])
def test_out_of_range_bench_fields_are_refused(client, tmp_path, request_):
    aid = client.put_artifact(make_onnx_artifact(tmp_path / "a"))
    with pytest.raises(AgentRequestError, match="must be"):
        client.bench(aid, request_)


def test_warmup_is_bounded_by_max_s():
    t0 = time.monotonic()
    info, times = timing_loop(lambda: None, warmup_count=10**9, warmup_s=0.0, min_count=1, min_s=0.0, max_s=0.2)
    assert time.monotonic() - t0 < 2.0 and info["warmup_s"] < 0.5 and len(times) >= 1


def test_a_client_that_leaves_frees_the_measurement_slot(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        with AgentClient.connect(srv.url, key=KEY, timeout=30) as c:
            aid = c.put_artifact(make_onnx_artifact(tmp_path / "a"))
        quitter = AgentClient.connect(srv.url, key=KEY, timeout=30)
        def long_bench():
            try:
                quitter.bench(aid, {"min_s": 20.0, "max_s": 30.0, "warmup_s": 0.0})
            except Exception:
                pass  # its link is closed under it

        t = threading.Thread(target=long_bench)
        t.start()
        time.sleep(1.5)
        quitter.transport.close()  # leaves without bye, mid-measurement
        left = time.monotonic()
        with AgentClient.connect(srv.url, key=KEY, timeout=30) as c:
            result = c.bench(aid, FAST)
        waited = time.monotonic() - left
        t.join(5)
    assert result["latency"]["count"] >= 5
    assert waited < 10.0, f"the next bench waited {waited:.1f} s for a client that had left"


def test_waiting_for_the_slot_behind_another_host_is_not_a_wedged_agent(tmp_path):
    """The host bounds how long a running request may answer BUSY (`max_busy_s`). Waiting in line for
    the measurement slot while another host measures is not running: the agent marks those BUSY
    frames `queued` and the wait does not count (it did: a healthy bench queued behind a 900 s
    measurement was declared lost). Here the slot is held 4 s against a 2 s bound."""
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        with AgentClient.connect(srv.url, key=KEY, timeout=30) as c:
            aid = c.put_artifact(make_onnx_artifact(tmp_path / "a"))
            c.max_busy_s = 2.0
            srv.agent.measure_lock.acquire()  # another host's measurement holds the slot
            threading.Timer(4.0, srv.agent.measure_lock.release).start()
            start = time.monotonic()
            result = c.bench(aid, FAST)
    assert time.monotonic() - start >= 4.0 and result["latency"]["count"] >= 5


# ---- 4. a serial host's session ends with the host ---------------------------------------------

def test_serial_authentication_ends_when_the_host_goes_quiet_and_bye_clears_the_stash(tmp_path):
    with serial_agent(tmp_path / "store", key=KEY, limits=AgentLimits(idle_s=1.0)) as (device, _relay):
        host = AgentClient.connect(device, key=KEY, timeout=20)
        assert host.hello()["protocol"] == PROTOCOL_VERSION
        host.close(say_bye=False)  # the line drops: no bye
        time.sleep(1.8)
        with AgentClient(transport_class("serial").open(device, 5), timeout=20) as intruder:
            with pytest.raises(AgentRequestError) as err:
                intruder.request("hello")
            assert err.value.code == "unauthorized"
            with pytest.raises(AgentRequestError) as err:
                intruder.request("delete", {"id": "a" * 64})
            assert err.value.code == "unauthorized"
        # a proper bye: the stashed answer (the fingerprint) is gone with the host
        with AgentClient.connect(device, key=KEY, timeout=20) as host:
            assert host.hello()["fingerprint"]
        with AgentClient(transport_class("serial").open(device, 5), timeout=20) as intruder:
            piece = intruder._exchange(FrameType.REQUEST, {"cmd": "fetch", "off": 0, "n": 4096}, [], None)
            assert bytes(piece.payload) == b""


def test_a_new_handshake_on_the_line_ends_the_old_host_session(tmp_path):
    with serial_agent(tmp_path / "store", key=KEY) as (device, _relay):
        host = AgentClient.connect(device, key=KEY, timeout=20)
        host.close(say_bye=False)
        with AgentClient(transport_class("serial").open(device, 5), timeout=20) as intruder:
            intruder.request("challenge")
            with pytest.raises(AgentRequestError) as err:
                intruder.request("hello")
            assert err.value.code == "unauthorized"


# ---- 5. memory held for peers is bounded -------------------------------------------------------

def test_held_ahead_chunks_are_bounded_across_uploads_and_freed_with_the_session(tmp_path):
    store = ContentStore(tmp_path / "store", 1 << 30, max_held_bytes=1 << 20, max_uploads_per_owner=64)
    owner = object()
    refused = 0
    for i in range(8):
        handle = store.begin(f"{i:064x}", 9 << 20, owner=owner)["upload"]
        for off in range(1, 9 << 20, 256 << 10):
            try:
                store.append(handle, off, b"x" * (64 << 10))
            except AgentRequestError as err:
                assert err.code == "offset_mismatch"
                refused += 1
    assert store.held_bytes() <= 1 << 20 and refused > 0
    assert store.release(owner) == 8 and store.held_bytes() == 0


def test_tiny_chunks_held_ahead_are_bounded_in_number(tmp_path):
    """One-byte DATA chunks ahead of a gap: each held one cost a scan of all the others (and the
    fill a scan per chunk, under the store's lock), so 20 000 of them froze the store for seconds
    while the byte budget counted only 20 KB. Past MAX_HELD_CHUNKS they are refused."""
    n = MAX_HELD_CHUNKS + 2000
    data = os.urandom(n + 1)
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        with AgentClient.connect(srv.url, key=KEY, timeout=20) as c:
            import hashlib

            handle = c.request("put", {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})["upload"]
            ch, codes = c.channel, []
            for first in range(1, n + 1, 500):  # pipelined, 500 frames at a time
                batch = range(first, min(first + 500, n + 1))
                for off in batch:
                    c._seq = (c._seq + 1) & 0xFFFFFFFF
                    ch.send_out(ch.prepare(FrameType.DATA, c._seq, None, [data_head(handle, off), data[off:off + 1]]))
                while len(codes) < batch[-1]:
                    ev = ch.poll(30.0)
                    assert isinstance(ev, Frame), ev
                    codes.append(ev.header.get("code", "held"))
            assert codes.count("held") <= MAX_HELD_CHUNKS
            assert codes.count("offset_mismatch") >= n - MAX_HELD_CHUNKS
            state = c._exchange(FrameType.DATA, {}, [data_head(handle, 0), data[:1]], None).header
            assert state["have"] == 1 + codes.count("held")  # the gap filled: the held chunks drained
            assert c.ping() >= 0


def test_before_auth_big_frames_are_refused_without_buffering(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        s = socket.create_connection(_addr(srv.url), timeout=5)
        header = encode_frame(FrameType.REQUEST, 3, {"cmd": "ping"}, b"p" * (1 << 20))[:40]  # announces 1 MiB
        s.sendall(header)
        answer = _answer(s)
        assert answer is not None and answer.header["code"] == "too_large"
        try:  # the body that follows is noise on a clean link: the connection is closed
            s.sendall(b"p" * (1 << 20))
        except OSError:
            pass
        assert _closed_by_peer(s, 3.0)
        with AgentClient.connect(srv.url, key=KEY) as c:
            assert c.ping() >= 0


def test_before_auth_a_big_header_is_refused_too(tmp_path):
    """preauth_max_frame bounds the whole frame: a 200 KiB header used to be buffered and parsed."""
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        s = socket.create_connection(_addr(srv.url), timeout=5)
        try:
            s.sendall(encode_frame(FrameType.REQUEST, 4, {"cmd": "ping", "pad": "x" * (200 << 10)}))
        except OSError:
            pass
        answer = _answer(s)
        assert answer is not None and answer.type == FrameType.ERROR and answer.header["code"] == "too_large", answer
        s.close()
        with AgentClient.connect(srv.url, key=KEY) as c:  # after auth the full limits apply
            assert "time" in c.request("ping", {"pad": "x" * (200 << 10)})


def test_artifact_metadata_counts_against_the_quota(tmp_path):
    """Bundles of one 4-byte blob under 256 long names: 40 of them wrote ~4 MB (each bundle's JSON
    and directory) past a 1 MiB quota while used_bytes stayed at 4."""
    with TcpAgentServer(tmp_path / "store", key=KEY, quota_bytes=1 << 20) as srv:
        with AgentClient.connect(srv.url, key=KEY) as c:
            sha = c.put_bytes(b"tiny")
            made = []
            with pytest.raises(AgentRequestError) as err:
                for i in range(40):
                    made.append(c.request("bundle", {"files": {f"{i:04d}-{j:03d}-" + "n" * 110: sha for j in range(256)}})["artifact"])
            assert err.value.code == "quota_exceeded" and 0 < len(made) < 40
            used = c.hello()["store"]["used_bytes"]
            assert used <= 1 << 20
            c.delete(made[0])  # deleting an artifact gives its bytes back
            assert c.hello()["store"]["used_bytes"] < used
            used = c.hello()["store"]["used_bytes"]
    assert ContentStore(tmp_path / "store", 1 << 20).used == used  # and a restarted agent counts the same


def test_eval_data_that_unpacks_past_the_memory_limit_is_refused(client, tmp_path, monkeypatch):
    """An .npz is a zip: 33 MiB of zeros upload as ~40 KB, and the device used to unpack all of it into
    memory (a few more MB of upload: gigabytes, the device killed). The agent refuses an evaluation set
    that declares more than its limit (half its available memory; here EDGEKD_MAX_EVAL_BYTES, which
    the measurement process inherits) before unpacking a byte, in one line, and serves on."""
    import numpy as np

    from bench_models import make_eval_npz

    monkeypatch.setenv("EDGEKD_MAX_EVAL_BYTES", str(8 << 20))
    aid = client.put_artifact(make_onnx_artifact(tmp_path / "art"))
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x=np.zeros((1 << 17, 1, 8, 8), np.float32), y=np.zeros(1 << 17, np.int64))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(AgentRequestError, match=r"unpacks to 33 MiB, more than this machine allows \(8 MiB"):
        client.eval(aid, client.put_file(bomb), {**FAST, "latency": False})
    ok = client.put_file(make_eval_npz(tmp_path / "ok.npz", n=19))
    assert client.eval(aid, ok, {**FAST, "latency": False})["accuracy"]["count"] == 19
    monkeypatch.setenv("EDGEKD_MAX_EVAL_BYTES", "lots")
    with pytest.raises(AgentRequestError, match="EDGEKD_MAX_EVAL_BYTES='lots' is not a byte count"):
        client.eval(aid, ok, {**FAST, "latency": False})


def test_without_hard_links_the_copies_count_against_the_quota(tmp_path, monkeypatch):
    """On a file system without hard links a bundle copies its files: the copies were counted only
    after they were written (no quota check first), not at all once the agent restarted, and never
    given back on delete. `os.link` failing stands in for such a file system."""
    import hashlib

    from edgekd.agent import storage

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(storage.os, "link", no_links)
    data = os.urandom(6000)
    sha = hashlib.sha256(data).hexdigest()
    store = ContentStore(tmp_path / "store", 10000)
    up = store.begin(sha, len(data))
    assert store.append(up["upload"], 0, data)["complete"]
    with pytest.raises(AgentRequestError) as err:  # the blob (6000) and its copy would pass 10000
        store.bundle({"model.onnx": sha})
    assert err.value.code == "quota_exceeded" and "no hard links" in str(err.value) and "\n" not in str(err.value)
    assert store.used == 6000 and not list((tmp_path / "store" / "artifacts").iterdir())  # nothing half-made
    store.quota = 20000
    aid = store.bundle({"model.onnx": sha})
    assert 12000 < store.used < 12500  # the blob, its copy and the bundle's list of files
    assert ContentStore(tmp_path / "store", 20000).used == store.used  # a restarted agent counts the same
    store.delete(aid)
    assert store.used == 0


# ---- 6. resync floods ----------------------------------------------------------------------------

def test_a_magic_flood_before_auth_closes_the_connection_and_others_are_served(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        with AgentClient.connect(srv.url, key=KEY) as c:
            s = socket.create_connection(_addr(srv.url), timeout=5)
            try:
                s.sendall(b"EK" * (1 << 20))
            except OSError:
                pass
            assert _closed_by_peer(s, 5.0)
            assert c.ping() < 1.0


def test_decoder_finds_a_frame_after_a_long_magic_flood():
    good = encode_frame(FrameType.REQUEST, 11, {"cmd": "ping"})
    for noise in (b"EK" * 5000, b"EK\x01\x01" * 3000, (b"EK" * 100 + good[:-1] + b"\x00") * 20):
        dec = FrameDecoder()
        events = dec.feed(noise + good)
        frames = [e for e in events if hasattr(e, "header")]
        assert [f.seq for f in frames if f.header] == [11], noise[:20]
        # and split at an odd boundary
        dec = FrameDecoder()
        events = dec.feed(noise[:777]) + dec.feed(noise[777:] + good[:9]) + dec.feed(good[9:])
        assert [e.seq for e in events if hasattr(e, "header") and e.header] == [11]


# ---- 7. names and hashes with a trailing newline -----------------------------------------------

def test_trailing_newline_passes_no_name_or_hash_check(client):
    with pytest.raises(AgentRequestError) as err:
        client.request("put", {"sha256": "0" * 64 + "\n", "size": 1})
    assert err.value.code == "bad_request"
    sha = client.put_bytes(b"payload")
    with pytest.raises(AgentRequestError) as err:
        client.request("bundle", {"files": {"ok\n": sha}})
    assert err.value.code == "bad_name"


# ---- 8. the host never uploads what a symlink points to ----------------------------------------

def test_host_refuses_symlinks_in_artifacts_and_uploads(client, tmp_path):
    secret = tmp_path / "host-secret.bin"
    secret.write_bytes(b"host private data")
    art = make_onnx_artifact(tmp_path / "art")
    (art / "model.bin").symlink_to(secret)
    with pytest.raises(ConfigError, match="symbolic link"):
        client.put_artifact(art)
    link = tmp_path / "link.bin"
    link.symlink_to(secret)
    with pytest.raises(ConfigError, match="symbolic link"):
        client.put_file(link)
    assert client.hello()["store"]["used_bytes"] == 0  # nothing of the secret reached the device


# ---- 9. a hostile agent cannot make the host hang or grow without bound --------------------------

@contextlib.contextmanager
def hostile_agent(answer):
    """A fake agent on a real socket: `answer(frame)` -> (type, header[, payload]) for each REQUEST /
    DATA, None to close the connection, or a function (conn, frame) that sends frames of its own
    until the host hangs up. Yields (url, frames it was sent)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen: list = []

    def run():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        dec = FrameDecoder()
        with conn:
            conn.settimeout(10)
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                for ev in dec.feed(data):
                    if isinstance(ev, Frame) and ev.type in (FrameType.REQUEST, FrameType.DATA):
                        seen.append(ev)
                        out = answer(ev)
                        if out is None:
                            return
                        if callable(out):  # a stream of frames of its own, until the host hangs up
                            out(conn, ev)
                            return
                        conn.sendall(encode_frame(out[0], ev.seq, *out[1:]))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield f"tcp://127.0.0.1:{listener.getsockname()[1]}", seen
    finally:
        listener.close()
        t.join(5)


@pytest.mark.parametrize("stashed", [10**12, "lots"])
def test_host_refuses_a_stashed_answer_no_agent_could_send(stashed, monkeypatch):
    """Before auth anyone on the link can answer: a stash of 10**12 bytes, fetched in 256 KiB
    pieces, grew the host's memory until the fake agent stopped; a non-number raised ValueError."""
    monkeypatch.delenv(auth.KEY_ENV, raising=False)

    def answer(frame):
        if frame.header.get("cmd") == "challenge":
            return FrameType.REPLY, {"stashed": stashed}
        if len(seen) > 40:
            return None
        return FrameType.REPLY, {}, b"x" * (256 << 10)

    with hostile_agent(answer) as (url, seen):
        with pytest.raises(AgentError, match="stashed"):
            AgentClient.connect(url, timeout=5)
    assert len([f for f in seen if f.header.get("cmd") == "fetch"]) <= 1


def _keyless_agent(on_data, max_payload=1 << 20):
    """Answers for a key-less hostile agent: handshake, hello with `max_payload`, put; DATA -> on_data."""
    def answer(frame):
        if frame.type == FrameType.DATA:
            return on_data(frame)
        cmd = frame.header.get("cmd")
        if cmd == "challenge":
            return FrameType.REPLY, {"nonce": auth.new_nonce(), "auth_required": False}
        if cmd == "hello":
            return FrameType.REPLY, {"limits": {"max_payload": max_payload}}
        if cmd == "put":
            return FrameType.REPLY, {"upload": 1, "have": 0}
        return FrameType.REPLY, {}
    return answer


@pytest.mark.parametrize("on_data", [
    lambda f: (FrameType.REPLY, {"have": 0}),  # acknowledges, never moves
    lambda f: (FrameType.ERROR, {"code": "offset_mismatch", "message": "x", "have": 0}),
    lambda f: (FrameType.REPLY, {"have": -5}),
    lambda f: (FrameType.REPLY, {"have": "lots"}),
], ids=["no-progress", "mismatch-forever", "negative", "not-a-number"])
def test_host_upload_gives_up_on_an_agent_that_never_takes_the_bytes(on_data, monkeypatch):
    """The host sent the same chunk for ever to an agent answering DATA without progress (the fake
    agent stopped it after 2000), and crashed with TypeError / ValueError on a nonsense offset."""
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    limit = 2000

    def on_data_counted(frame):
        return None if len(seen) > limit else on_data(frame)

    with hostile_agent(_keyless_agent(on_data_counted)) as (url, seen):
        with AgentClient.connect(url, timeout=5) as c:
            with pytest.raises(AgentError):
                c.put_bytes(os.urandom(5000))
    assert len(seen) < limit


@pytest.mark.parametrize("max_payload", [12, -1, "big", [1 << 20]])
def test_host_refuses_an_agent_payload_limit_no_upload_fits(max_payload, monkeypatch):
    """max_payload 12 left 0-byte chunks: an upload that never advanced; "big" raised ValueError."""
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    ok = lambda f: (FrameType.REPLY, {})  # noqa: E731
    with hostile_agent(_keyless_agent(ok, max_payload=max_payload)) as (url, seen):
        with pytest.raises(AgentError, match="max_payload"):
            AgentClient.connect(url, timeout=5)


def _stream(kind: str):
    """Frames sent every 50 ms for ever (until the host hangs up): BUSY for the request's seq, or
    REPLYs to a seq the host never sent."""
    def run(conn, ev):
        seq = (ev.seq - 7) & 0xFFFFFFFF if kind == "stale" else ev.seq
        ftype = FrameType.REPLY if kind == "stale" else FrameType.BUSY
        try:
            for _ in range(2000):
                conn.sendall(encode_frame(ftype, seq, {"queued": 1} if kind == "queued" else {}))
                time.sleep(0.05)
        except OSError:
            return
    return run


@pytest.mark.parametrize("kind", ["busy", "queued", "stale"])
def test_host_gives_up_on_an_agent_that_answers_for_ever_without_answering(kind, monkeypatch):
    """Any frame reset the host's silence timer: an agent sending BUSY for ever, or answers to a seq
    the host never sent, held a request (a deploy) for ever. Now only this request's frames count as
    hearing from the agent, and BUSY for longer than a run may take (`max_busy_s`), or queued for
    longer than `max_queued_s`, ends it."""
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    base = _keyless_agent(lambda f: (FrameType.REPLY, {}))

    def answer(frame):
        return _stream(kind) if frame.header.get("cmd") == "ping" else base(frame)

    with hostile_agent(answer) as (url, seen):
        with AgentClient.connect(url, timeout=5) as c:
            c.max_busy_s = c.max_queued_s = 1.0
            start = time.monotonic()
            match = {"busy": "kept answering 'busy'", "queued": "waiting for its measurement slot",
                     "stale": "did not answer within 2 s"}[kind]
            with pytest.raises(LinkLost, match=match):
                c.request("ping", timeout=2)
            assert time.monotonic() - start < 10
