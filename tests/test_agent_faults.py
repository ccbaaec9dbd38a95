"""Faults between host and agent: damaged bytes (CRC + NAK + resend), a link dropped mid-upload and
resumed, a wrong key, and malformed / truncated / oversized frames answered with errors while the
agent keeps serving."""
from __future__ import annotations

import os
import socket
import struct
import time
import zlib

import pytest

from edgekd.agent.client import AgentClient
from edgekd.agent.protocol import (
    MAGIC, PROTOCOL_VERSION, AgentRequestError, BadFrame, Frame, FrameDecoder, FrameType, Garbage, LinkLost, encode_frame,
)
from edgekd.agent.server import TcpAgentServer

from agent_links import Relay, serial_agent

pytestmark = pytest.mark.timeout(90)
KEY = b"fault-injection-key-0123456789"


def test_upload_survives_one_percent_of_bytes_flipped_both_ways(tmp_path):
    data = os.urandom(48 * 1024)
    with serial_agent(tmp_path / "store", key=KEY, flip=0.01, seed=3) as (device, relay):
        with AgentClient.connect(device, key=KEY, timeout=20) as agent:
            sha = agent.put_bytes(data)
            assert agent.hello()["protocol"] == 2  # requests too get through the noise
            assert agent.stats["resends"] > 0
    assert (tmp_path / "store" / "blobs" / sha).read_bytes() == data
    assert relay.flipped > 100  # the line really was damaged


def test_requests_recover_from_damage_by_nak_and_resend(tmp_path):
    with serial_agent(tmp_path / "store", key=KEY, flip=0.003, seed=5) as (device, relay):
        with AgentClient.connect(device, key=KEY, timeout=20) as agent:
            for _ in range(30):
                assert agent.ping() < 5
            info = agent.hello()  # a ~1 KB reply: often damaged at this rate, NAKed and resent
            assert info["fingerprint"]["arch"]
        assert relay.flipped > 0


def _connect_via_relay(server_url: str, **relay_kw):
    host, port = server_url[len("tcp://"):].rsplit(":", 1)
    front = socket.socket()
    front.bind(("127.0.0.1", 0))
    front.listen(1)
    url = f"tcp://127.0.0.1:{front.getsockname()[1]}"
    return front, url, (host, int(port)), relay_kw


def test_dropped_link_mid_upload_resumes_where_the_agent_stopped(tmp_path):
    data = os.urandom(5 * (1 << 20) + 123)
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        front, url, back_addr, _ = _connect_via_relay(srv.url)
        import threading

        relays = []

        def accept():
            conn, _ = front.accept()
            back = socket.create_connection(back_addr)
            relay = Relay(conn, back, cut_after=int(2.5 * (1 << 20)))
            relays.append(relay)
            relay.__enter__()

        threading.Thread(target=accept, daemon=True).start()
        with pytest.raises(LinkLost):
            with AgentClient.connect(url, key=KEY, timeout=10) as agent:
                agent.put_file(path)
        assert relays[0].cut.is_set()
        front.close()
        partial = next((tmp_path / "store" / "partial").iterdir())
        kept = partial.stat().st_size
        assert 0 < kept < len(data)
        seen = []
        with AgentClient.connect(srv.url, key=KEY, timeout=10) as agent:
            sha = agent.put_file(path, progress=lambda done, total: seen.append(done))
        assert seen[0] == kept  # resumed from what the agent had, not from zero
        assert (tmp_path / "store" / "blobs" / sha).read_bytes() == data
        relays[0].__exit__()


def test_wrong_key_is_rejected_and_the_agent_keeps_serving(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        for _ in range(3):
            with pytest.raises(AgentRequestError) as err:
                AgentClient.connect(srv.url, key=b"not-the-right-key-at-all")
            assert err.value.code == "auth_failed" and "wrong key" in str(err.value)
        with AgentClient.connect(srv.url, key=KEY) as agent:
            assert agent.ping() < 1


class RawPeer:
    """A socket speaking raw bytes to the agent, reading back decoded frames."""

    def __init__(self, url: str) -> None:
        host, port = url[len("tcp://"):].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.dec = FrameDecoder()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            for ev in self.dec.feed(self.sock.recv(65536)):
                # "I saw line noise" NAKs may come at any time after garbage; they answer nothing
                if isinstance(ev, Frame) and not (ev.type == FrameType.NAK and "garbage" in ev.header):
                    return ev
        raise AssertionError("no frame from the agent")

    def ping(self, seq: int) -> None:
        self.send(encode_frame(FrameType.REQUEST, seq, {"cmd": "ping"}))
        reply = self.frame()
        assert (reply.type, reply.seq) == (FrameType.REPLY, seq)


def _raw_prefix(version=PROTOCOL_VERSION, ftype=1, seq=1, hlen=0, plen=0) -> bytes:
    p = struct.pack(">2sBBIII", MAGIC, version, ftype, seq, hlen, plen)
    return p + struct.pack(">I", zlib.crc32(p))


def _raw_frame(header: bytes, seq: int) -> bytes:
    raw = _raw_prefix(seq=seq, hlen=len(header)) + header
    return raw + struct.pack(">I", zlib.crc32(raw))


def test_malformed_truncated_and_oversized_frames_get_errors(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY, truncate_s=0.3) as srv:
        peer = RawPeer(srv.url)
        cases = [
            (_raw_prefix(version=9, seq=11), "bad_version"),
            (_raw_prefix(ftype=99, seq=12), "bad_type"),
            (_raw_prefix(seq=13, plen=1 << 30), "too_large"),
            (_raw_frame(b"{not json", 14), "bad_header"),
            (_raw_frame(b'["a list"]', 15), "bad_header"),
            (_raw_frame(b'{"cmd": 5}', 16), "unknown_command"),
            (_raw_frame(b'{"cmd": "hello"}', 17), "unauthorized"),
            (encode_frame(FrameType.DATA, 18, None, b"\x00" * 20), "unauthorized"),
            (encode_frame(FrameType.REPLY, 19, {"x": 1}), "bad_request"),
        ]
        for raw, code in cases:
            peer.send(raw)
            err = peer.frame()
            assert err.type == FrameType.ERROR and err.header["code"] == code, (code, err)
            peer.ping(100 + len(code))  # still serving
        # a damaged body gets a NAK for that seq
        bad = bytearray(encode_frame(FrameType.REQUEST, 30, {"cmd": "ping"}))
        bad[-6] ^= 0x40
        peer.send(bytes(bad))
        nak = peer.frame()
        assert (nak.type, nak.seq) == (FrameType.NAK, 30)
        # a frame that stops half way: answered `truncated` once the line is quiet
        peer.send(encode_frame(FrameType.REQUEST, 31, {"cmd": "ping", "pad": "x" * 100})[:40])
        err = peer.frame(timeout=5)
        assert err.type == FrameType.ERROR and err.header["code"] == "truncated" and err.seq == 31
        peer.ping(32)
        peer.sock.close()
        # a client that vanished mid-frame does not stop the agent serving others
        with AgentClient.connect(srv.url, key=KEY) as agent:
            assert agent.hello()["protocol"] == 2


def test_a_resent_request_is_answered_from_cache_not_run_twice(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=None) as srv:
        peer = RawPeer(srv.url)
        frame = encode_frame(FrameType.REQUEST, 77, {"cmd": "challenge"})
        peer.send(frame)
        first = peer.frame()
        peer.send(frame)  # same seq again: the very same answer (same nonce), not a new challenge
        assert peer.frame().header == first.header
        peer.send(encode_frame(FrameType.NAK, 77))  # a NAK for the last answer: sent again too
        assert peer.frame().header == first.header
