"""The agent over real TCP on 127.0.0.1: handshake, fingerprint, uploads, artifacts, quota, bench/eval,
the `edgekd agent` command and the `local` transport (a real agent subprocess)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.agent import auth
from edgekd.agent.client import AgentClient
from edgekd.agent.protocol import AgentRequestError, FrameType, encode_frame
from edgekd.agent.server import TcpAgentServer
from edgekd.agent.storage import bundle_id
from edgekd.agent.transports import available_transports, transport_class, transport_name
from edgekd.errors import AgentError, ConfigError

from bench_models import make_eval_npz, make_onnx_artifact

pytestmark = pytest.mark.timeout(60)
KEY = b"0123456789abcdef-test-key"
FAST = {"warmup_count": 2, "warmup_s": 0.0, "min_count": 20, "min_s": 0.05}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        yield srv


@pytest.fixture
def client(server):
    with AgentClient.connect(server.url, key=KEY, timeout=20) as c:
        yield c


def test_hello_reports_versions_fingerprint_and_limits(client):
    info = client.hello()
    assert info["protocol"] == 2 and info["agent"]
    fp = info["fingerprint"]
    for field in ("arch", "cpu_model", "cores_logical", "ram_bytes", "os", "python", "runtimes",
                  "nvidia", "jetson_power_mode", "rpi_throttled", "cpu_governor", "temperatures_c"):
        assert field in fp
    assert fp["ram_bytes"] > 0 and fp["cores_logical"] >= 1
    assert "onnxruntime" in fp["runtimes"]  # installed in this venv
    assert info["limits"]["max_payload"] >= 1 << 20
    assert client.ping() < 1.0


def test_upload_is_content_addressed_and_not_repeated(client, server, tmp_path):
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    seen = []
    sha = client.put_file(path, progress=lambda done, total: seen.append((done, total)))
    stored = server.agent.store.blobs / sha
    assert stored.read_bytes() == data and seen[-1] == (len(data), len(data))
    seen.clear()
    assert client.put_file(path, progress=lambda d, t: seen.append(d)) == sha
    assert seen == [len(data)]  # already there: nothing sent
    assert client.put_bytes(b"") == client.put_bytes(b"")  # empty files are files too


def test_artifact_bundle_materialises_a_flat_directory(client, server, tmp_path):
    art = make_onnx_artifact(tmp_path / "art")
    aid = client.put_artifact(art)
    adir = server.agent.store.artifact_dir(aid)
    assert sorted(p.name for p in adir.iterdir()) == ["manifest.json", "model.onnx"]
    assert (adir / "model.onnx").read_bytes() == (art / "model.onnx").read_bytes()
    assert client.put_artifact(art) == aid  # idempotent
    assert client.delete(aid) == "artifact" and not adir.exists()
    with pytest.raises(AgentRequestError) as err:
        client.delete(aid)
    assert err.value.code == "not_found"


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "..", "x" * 200, ""])
def test_bundle_names_cannot_escape_the_store(client, name):
    sha = client.put_bytes(b"payload")
    with pytest.raises(AgentRequestError) as err:
        client.request("bundle", {"files": {name: sha}})
    assert err.value.code == "bad_name"
    assert client.ping() >= 0  # and the agent keeps serving


def test_bad_requests_get_errors_and_the_agent_keeps_serving(client):
    for cmd, header, code in [
        ("nope", {}, "unknown_command"),
        ("put", {"sha256": "../../etc/passwd", "size": 1}, "bad_request"),
        ("put", {"sha256": "a" * 64}, "bad_request"),
        ("bench", {"artifact": "b" * 64}, "not_found"),
        ("bench", {"artifact": "b" * 64, "request": {"data": "/etc/passwd"}}, "bad_request"),
        ("eval", {"artifact": "b" * 64, "data": "c" * 64}, "not_found"),
        ("bundle", {"files": "x"}, "bad_request"),
    ]:
        with pytest.raises(AgentRequestError) as err:
            client.request(cmd, header)
        assert err.value.code == code, (cmd, err.value)
    assert client.hello()["protocol"] == 2


def test_quota_is_enforced_with_a_clear_error(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY, quota_bytes=10_000) as srv:
        with AgentClient.connect(srv.url, key=KEY) as c:
            c.put_bytes(os.urandom(6000))
            with pytest.raises(AgentRequestError, match="--quota-mb") as err:
                c.put_bytes(os.urandom(6000))
            assert err.value.code == "quota_exceeded"
            sha = c.put_bytes(os.urandom(3000))  # what fits still goes in
            assert c.delete(sha) == "file"


def test_wrong_key_missing_key_and_keyless_loopback_agent(server, tmp_path, monkeypatch):
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    with pytest.raises(AgentRequestError) as err:
        AgentClient.connect(server.url, key=b"W" * 32)
    assert err.value.code == "auth_failed"
    with pytest.raises(AgentError, match="requires a key"):
        AgentClient.connect(server.url, key=None, timeout=5)
    # without auth, only challenge/auth/ping/bye are served
    with AgentClient(transport_class("tcp").open(server.url, 5)) as raw:
        with pytest.raises(AgentRequestError) as err:
            raw.request("hello")
        assert err.value.code == "unauthorized"
    with TcpAgentServer(tmp_path / "open", key=None) as open_srv:
        with AgentClient.connect(open_srv.url) as c:
            assert c.hello()["protocol"] == 2


def test_key_loading_rules(tmp_path, monkeypatch):
    keyfile = tmp_path / "agent.key"
    keyfile.write_text("k" * 32 + "\n")
    assert auth.load_key(key_file=keyfile) == b"k" * 32
    monkeypatch.setenv(auth.KEY_ENV, "e" * 20)
    assert auth.load_key() == b"e" * 20
    with pytest.raises(ConfigError, match="at least 16"):
        auth.load_key(key="short")
    with pytest.raises(ConfigError, match="cannot read"):
        auth.load_key(key_file=tmp_path / "missing.key")


def test_transport_urls():
    assert transport_name("tcp://127.0.0.1:7000") == "tcp"
    assert transport_name("serial:///dev/ttyACM0?baud=921600") == "serial"
    assert transport_name("/dev/ttyUSB0") == "serial" and transport_name("loop://") == "serial"
    assert transport_name("local") == "local"
    with pytest.raises(ConfigError, match="Did you mean"):
        transport_name("tpc://host:1")
    with pytest.raises(ConfigError):
        transport_name("rpi.local:7000")
    assert set(available_transports()) == {"local", "serial", "tcp"}


def test_bench_and_eval_run_on_the_agent(client, tmp_path):
    from edgekd.bench.measure import measure_artifact

    art = make_onnx_artifact(tmp_path / "art")
    data = make_eval_npz(tmp_path / "eval.npz", n=23)
    aid, did = client.put_artifact(art), client.put_file(data)
    bench = client.bench(aid, {**FAST, "threads": 1})
    assert bench["latency"]["count"] >= 20 and bench["latency"]["p50_ms"] > 0
    assert bench["memory"]["peak_rss_bytes"] > 0
    scored = client.eval(aid, did, {**FAST, "threads": 1, "latency": False})
    local = measure_artifact(art, {**FAST, "threads": 1, "latency": False, "data": str(data)})
    assert scored["accuracy"] == local["accuracy"] and scored["accuracy"]["count"] == 23


def _run_agent_cli(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != auth.KEY_ENV}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "edgekd", "agent", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


def test_cli_refuses_a_public_address_without_a_key(tmp_path):
    out = _run_agent_cli("--listen", "0.0.0.0:0", "--workdir", str(tmp_path))
    assert out.returncode == 2 and "refusing to listen on 0.0.0.0 without a key" in out.stderr
    out = _run_agent_cli("--workdir", str(tmp_path))
    assert out.returncode == 2 and "exactly one of" in out.stderr


def test_local_transport_runs_a_real_agent_subprocess():
    with AgentClient.connect("local", timeout=20) as c:
        assert c.transport.key is not None and c.transport.proc.poll() is None
        proc, info = c.transport.proc, c.hello()
        assert info["store"]["used_bytes"] == 0
        sha = c.put_bytes(b"hello agent")
        assert len(sha) == 64
    assert proc.wait(timeout=10) is not None  # closing stopped it


def test_raw_socket_garbage_and_oversized_frames_get_answers(server):
    host, port = server.url[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not our protocol: a NAK once the line is quiet
        from edgekd.agent.protocol import FrameDecoder

        dec = FrameDecoder()
        events = []
        while not events:
            events = [e for e in dec.feed(s.recv(4096)) if not hasattr(e, "nbytes")]
        assert events[0].type == FrameType.NAK and events[0].header.get("garbage")
        s.sendall(encode_frame(FrameType.REQUEST, 5, {"cmd": "ping"}))
        events = []
        while not events:
            events = [e for e in dec.feed(s.recv(4096))]
        assert events[0].type == FrameType.REPLY and events[0].seq == 5


def test_bundle_id_is_canonical():
    assert bundle_id({"b": "1" * 64, "a": "2" * 64}) == bundle_id({"a": "2" * 64, "b": "1" * 64})
