"""Every frame after `auth` is authenticated (protocol version 2): a man in the middle on real
sockets and a real pty who flips a payload byte and fixes the CRC, replays an earlier frame, splices
in a frame from another session under the same key, reflects a frame, forges a `delete` or alters a
figure on its way back gets the session closed with nothing changed on the agent, while an honest
session beside it keeps working. Plus the key schedule (RFC 5869 vectors), the frame layout, the
version refusal both ways, and the key-less loopback mode left as it was."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekd.agent import auth
from edgekd.agent.client import AgentClient
from edgekd.agent.frame_auth import FrameAuth, FrameRejected
from edgekd.agent.protocol import (
    MAC_FLAG, MAC_TRAILER_SIZE, PREFIX_SIZE, PROTOCOL_VERSION, Frame, FrameDecoder, FrameType, LinkLost,
    encode_frame, prepare_frame,
)
from edgekd.agent.server import AgentConfig, TcpAgentServer, serve_serial
from edgekd.agent.storage import ContentStore
from edgekd.agent.upload import upload_stop_and_wait
from edgekd.errors import AgentError

from agent_links import open_pty
from frame_relay import TO_AGENT, TO_HOST, FrameRelay, flip_payload_byte, frame_info, tcp_relay, with_crc

pytestmark = pytest.mark.timeout(90)
KEY = b"frame-auth-test-key-0123456789abcdef"
LOG = "edgekd.agent"


# ---------------------------------------------------------------- key schedule and framing

@pytest.mark.parametrize("ikm, salt, info, length, okm", [
    # RFC 5869 appendix A.1 and A.3 (HKDF-SHA256)
    (b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42,
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"),
    (b"\x0b" * 22, b"", b"", 42,
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
])
def test_hkdf_matches_rfc5869_test_vectors(ikm, salt, info, length, okm):
    assert auth.hkdf_sha256(ikm, salt, info, length).hex() == okm


def test_session_keys_differ_per_direction_session_and_key():
    na, nh = auth.new_nonce(), auth.new_nonce()
    keys = auth.session_keys(KEY, na, nh)
    assert keys.host_to_agent != keys.agent_to_host and len(keys.host_to_agent) == 32
    assert auth.session_keys(KEY, na, nh) == keys  # both sides derive the same
    assert auth.session_keys(KEY, auth.new_nonce(), nh) != keys
    assert auth.session_keys(KEY, na, auth.new_nonce()) != keys
    assert auth.session_keys(b"another-key-0123456789", na, nh) != keys


def _pair(grace_seq=None):
    keys = auth.session_keys(KEY, auth.new_nonce(), auth.new_nonce())
    return FrameAuth(keys, "host", grace_seq=grace_seq), FrameAuth(keys, "agent", grace_seq=grace_seq)


def _sealed(fa: FrameAuth, ftype, seq, header=None, payload=b"") -> bytes:
    out = prepare_frame(ftype, seq, header, (payload,) if payload else (), authenticated=True)
    return b"".join(bytes(p) for p in out.wire(fa.seal(out)))


def _decode(raw: bytes) -> Frame:
    (ev,) = FrameDecoder().feed(raw)
    assert isinstance(ev, Frame)
    return ev


def test_authenticated_frame_layout():
    host, agent = _pair()
    raw = _sealed(host, FrameType.REQUEST, 7, {"cmd": "ping"}, b"xyz")
    hdr = b'{"cmd":"ping"}'
    assert raw[2] == PROTOCOL_VERSION == 2 and raw[3] == FrameType.REQUEST | MAC_FLAG
    assert struct.unpack(">II", raw[8:16]) == (len(hdr), 3)  # lengths exclude the MAC trailer
    body_end = PREFIX_SIZE + len(hdr) + 3
    assert raw[body_end - 3:body_end] == b"xyz"
    trailer = raw[body_end:body_end + MAC_TRAILER_SIZE]
    assert struct.unpack(">Q", trailer[:8])[0] == 0  # the first counter of the session
    assert len(raw) == body_end + MAC_TRAILER_SIZE + 4
    assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(raw[:-4])  # the CRC covers the trailer too
    frame = agent.admit(_decode(raw))
    assert (frame.type, frame.seq, frame.header, bytes(frame.payload)) == (FrameType.REQUEST, 7, {"cmd": "ping"}, b"xyz")


def test_mac_refuses_edits_replays_reordering_reflection_and_other_sessions():
    host, agent = _pair()
    first = _sealed(host, FrameType.REQUEST, 1, {"cmd": "ping"})
    second = _sealed(host, FrameType.DATA, 2, None, b"chunk-bytes")
    agent.admit(_decode(first))
    with pytest.raises(FrameRejected, match="does not verify"):  # one payload byte edited, CRC fixed
        agent.admit(_decode(flip_payload_byte(second, 3)))
    agent.admit(_decode(second))  # the MAC check consumed nothing: the genuine frame still passes
    _sealed(host, FrameType.REQUEST, 3, {"cmd": "ping"})  # lost on the line
    agent.admit(_decode(_sealed(host, FrameType.REQUEST, 4, {"cmd": "ping"})))  # counters may skip ...
    with pytest.raises(FrameRejected, match="replayed or reordered"):  # ... but never go back
        agent.admit(_decode(second))
    with pytest.raises(FrameRejected, match="replayed or reordered"):
        agent.admit(_decode(first))
    # reflection: an agent frame sent back to the agent fails (each direction has its own key)
    reply = _sealed(agent, FrameType.REPLY, 9, {"x": 1})
    with pytest.raises(FrameRejected, match="does not verify"):
        agent.admit(_decode(reply))
    host.admit(_decode(reply))
    # another session under the same key
    other_host, _ = _pair()
    with pytest.raises(FrameRejected, match="does not verify"):
        agent.admit(_decode(_sealed(other_host, FrameType.REQUEST, 10, {"cmd": "delete", "id": "x"})))
    # a plain frame, and a MAC flag stripped (CRCs fixed), are refused outright
    with pytest.raises(FrameRejected, match="unauthenticated"):
        agent.admit(_decode(encode_frame(FrameType.REQUEST, 11, {"cmd": "delete", "id": "x"})))


def test_plain_copies_of_the_auth_exchange_pass_only_until_the_first_mac():
    host, agent = _pair(grace_seq=41)
    plain_auth_resend = _decode(encode_frame(FrameType.REQUEST, 41, {"cmd": "auth"}))
    assert agent.admit(plain_auth_resend) is plain_auth_resend
    with pytest.raises(FrameRejected, match="unauthenticated"):
        agent.admit(_decode(encode_frame(FrameType.REQUEST, 42, {"cmd": "delete", "id": "x"})))
    agent.admit(_decode(_sealed(host, FrameType.REQUEST, 42, {"cmd": "hello"})))
    with pytest.raises(FrameRejected, match="unauthenticated"):  # grace over
        agent.admit(plain_auth_resend)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from([FrameType.REQUEST, FrameType.DATA, FrameType.NAK]), st.integers(0, 2**32 - 1),
                          st.binary(max_size=200)), min_size=1, max_size=5),
       st.data())
def test_fuzz_sealed_frames_split_anywhere_and_one_flipped_bit(frames, data):
    """Sealed frames cut at arbitrary points all decode and pass in order; one flipped bit anywhere
    is caught as line noise (never admitted as a frame), and the frames around it still pass."""
    host, agent = _pair()
    raws = [_sealed(host, t, s, None, p) for t, s, p in frames]
    stream = b"".join(raws)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    dec, events, last = FrameDecoder(), [], 0
    for cut in cuts + [len(stream)]:
        events += dec.feed(stream[last:cut])
        last = cut
    got = [agent.admit(ev) for ev in events]
    assert [(f.seq, bytes(f.payload)) for f in got] == [(s, p) for _, s, p in frames]

    host, agent = _pair()
    raws = [bytearray(_sealed(host, t, s, None, p)) for t, s, p in frames]
    victim = data.draw(st.integers(0, len(raws) - 1))
    raws[victim][data.draw(st.integers(0, len(raws[victim]) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    dec = FrameDecoder()
    admitted = [agent.admit(ev) for ev in dec.feed(b"".join(bytes(r) for r in raws)) + dec.drop_partial()]
    assert [(f.seq, bytes(f.payload)) for f in admitted if isinstance(f, Frame)] == \
        [(s, p) for i, (_, s, p) in enumerate(frames) if i != victim]


# ---------------------------------------------------------------- a man in the middle on TCP

def snapshot(root: Path) -> dict[str, str]:
    """Every file under the agent's store with its content hash: 'nothing changed' made checkable."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def agent(tmp_path, caplog):
    """An agent with a key, a file on it to attack, and an honest session that stays open beside."""
    caplog.set_level(logging.INFO, logger=LOG)
    store = tmp_path / "store"
    with TcpAgentServer(store, key=KEY) as srv:
        with AgentClient.connect(srv.url, key=KEY, timeout=10) as honest:
            victim = honest.put_bytes(os.urandom(5000))
            yield srv, honest, store, victim
            # the honest session never noticed: it still uploads, lists and deletes
            assert honest.ping() < 1.0
            other = honest.put_bytes(os.urandom(3000))
            assert honest.delete(other) == "file"
            assert (store / "blobs" / victim).is_file()


def _wait_closed(relay: FrameRelay, timeout: float = 5.0) -> None:
    assert relay.closed.wait(timeout), "the agent did not end the attacked session"


def _assert_rejected(caplog, what: str) -> None:
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == LOG and r.levelno >= logging.WARNING)
    assert "the session is closed" in text and what in text, text


def test_relay_flips_a_payload_byte_and_fixes_the_crc(agent, caplog):
    srv, honest, store, victim = agent
    data = os.urandom(4096)
    sha = hashlib.sha256(data).hexdigest()
    with tcp_relay(srv.url) as (url, relays):
        with AgentClient.connect(url, key=KEY, timeout=5) as c:
            state = c.request("put", {"sha256": sha, "size": len(data)})
            before = snapshot(store)
            relay = relays[-1]
            relay.rewrite[TO_AGENT] = lambda raw: flip_payload_byte(raw, 100) if frame_info(raw)["type"] == FrameType.DATA else raw
            with pytest.raises(LinkLost):
                upload_stop_and_wait(c, state["upload"], len(data), 0, lambda off, n: data[off:off + n], None)
            _wait_closed(relay)
        assert snapshot(store) == before  # the altered chunk was never written
    assert (store / "partial" / f"{sha}.part").stat().st_size == 0
    _assert_rejected(caplog, "whose MAC does not verify")


def test_relay_replays_an_earlier_delete(agent, caplog):
    srv, honest, store, victim = agent
    data = os.urandom(3000)
    with tcp_relay(srv.url) as (url, relays):
        with AgentClient.connect(url, key=KEY, timeout=5) as c:
            relay = relays[-1]
            sha = c.put_bytes(data)
            assert c.delete(sha) == "file"
            assert c.put_bytes(data) == sha  # uploaded again: a replayed delete would remove it
            (delete,) = [f for f in relay.frames_of(TO_AGENT, FrameType.REQUEST, mac=True) if b'"delete"' in f]
            before = snapshot(store)
            relay.inject(TO_AGENT, delete)
            _wait_closed(relay)
            with pytest.raises(LinkLost):
                c.ping()
        assert snapshot(store) == before and (store / "blobs" / sha).is_file()
    _assert_rejected(caplog, "replayed or reordered REQUEST")


def test_relay_splices_a_frame_from_another_session_with_the_same_key(agent, caplog):
    srv, honest, store, victim = agent
    with tcp_relay(srv.url) as (url, relays):
        # session 1: its `delete` is captured and never delivered (the host gives up waiting)
        with AgentClient.connect(url, key=KEY, timeout=1.5) as s1:
            relays[-1].rewrite[TO_AGENT] = lambda raw: None if b'"delete"' in raw else raw
            with pytest.raises(LinkLost):
                s1.delete(victim)
        (captured,) = [f for f in relays[-1].frames_of(TO_AGENT, FrameType.REQUEST, mac=True) if b'"delete"' in f]
        # session 2 under the same key: the captured delete is spliced into its stream
        with AgentClient.connect(url, key=KEY, timeout=5) as s2:
            relay = relays[-1]
            s2.ping()
            before = snapshot(store)
            relay.inject(TO_AGENT, captured)
            _wait_closed(relay)
        assert snapshot(store) == before and (store / "blobs" / victim).is_file()
    _assert_rejected(caplog, "whose MAC does not verify")


def _nonces(relay: FrameRelay) -> tuple[str, str]:
    """What anyone on the link saw of the handshake: the agent's and the host's nonce."""
    def header(raw):
        start, end = frame_info(raw)["header"]
        return json.loads(raw[start:end])
    na = next(header(f)["nonce"] for f in relay.frames_of(TO_HOST, FrameType.REPLY) if b'"nonce"' in f)
    nh = next(header(f)["nonce"] for f in relay.frames_of(TO_AGENT, FrameType.REQUEST) if b'"auth"' in f)
    return na, nh


@pytest.mark.parametrize("forgery", ["plain", "wrong-key", "reflected"])
def test_relay_injects_a_forged_delete(agent, caplog, forgery):
    srv, honest, store, victim = agent
    with tcp_relay(srv.url) as (url, relays):
        with AgentClient.connect(url, key=KEY, timeout=5) as c:
            relay = relays[-1]
            c.ping()
            seq = (c._seq + 1) & 0xFFFFFFFF  # what the host would use next
            delete = {"cmd": "delete", "id": victim}
            if forgery == "plain":
                raw = encode_frame(FrameType.REQUEST, seq, delete)
            elif forgery == "wrong-key":
                # the nonces crossed the link in the clear; only the key is missing
                fake = FrameAuth(auth.session_keys(b"attacker-guess-0123456789", *_nonces(relay)), "host")
                fake.sent = 2  # a plausible counter: hello, ping went before
                raw = _sealed(fake, FrameType.REQUEST, seq, delete)
            else:  # an authenticated frame the agent itself sent, turned into a delete request
                reply = relay.frames_of(TO_HOST, FrameType.REPLY, mac=True)[-1]
                start, end = frame_info(reply)["header"]
                body = bytes([reply[0], reply[1], reply[2], FrameType.REQUEST | MAC_FLAG]) + reply[4:16]
                raw = with_crc(body + struct.pack(">I", zlib.crc32(body)) + reply[20:])
            before = snapshot(store)
            relay.inject(TO_AGENT, raw)
            _wait_closed(relay)
        assert snapshot(store) == before and (store / "blobs" / victim).is_file()
    _assert_rejected(caplog, "unauthenticated REQUEST" if forgery == "plain" else "whose MAC does not verify")


def test_relay_alters_a_figure_on_its_way_back_to_the_host(agent):
    srv, honest, store, victim = agent
    with tcp_relay(srv.url) as (url, relays):
        with AgentClient.connect(url, key=KEY, timeout=5) as c:
            relay = relays[-1]

            def tamper(raw: bytes) -> bytes:
                start, end = frame_info(raw)["header"]
                if b'"time"' not in raw[start:end]:
                    return raw
                edited = bytearray(raw)
                pos = raw.index(b'"time":', start) + 8  # a digit of the reported figure
                edited[pos] = ord("1") if raw[pos] != ord("1") else ord("2")
                return with_crc(edited)

            relay.rewrite[TO_HOST] = tamper
            with pytest.raises(FrameRejected, match="does not verify"):
                c.request("ping")
            assert c._closed  # the host does not go on talking over a link that lies
            with pytest.raises(AgentError, match="closed"):
                c.hello()


# ---------------------------------------------------------------- versions and the key-less mode

def test_an_old_host_is_refused_in_its_own_version(tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        host, port = srv.url[len("tcp://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(encode_frame(FrameType.REQUEST, 5, {"cmd": "challenge"}, version=1))
            raw = b""
            while len(raw) < PREFIX_SIZE or len(raw) < PREFIX_SIZE + sum(struct.unpack(">II", raw[8:16])) + 4:
                raw += s.recv(4096)
    info = frame_info(raw)
    assert info["version"] == 1 and info["type"] == FrameType.ERROR and info["seq"] == 5  # a v1 host reads this
    start, end = info["header"]
    header = json.loads(raw[start:end])
    assert header["code"] == "bad_version" and "install the same edgekd version" in header["message"]


def test_a_new_host_tells_an_old_agent_apart(tmp_path):
    """Against an agent of protocol 1 (which answers any version-2 frame with a version-1
    bad_version ERROR, as the v1 code does), the host says so instead of timing out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def old_agent():
        conn, _ = listener.accept()
        with conn:
            data = conn.recv(4096)
            seq = struct.unpack(">I", data[4:8])[0]
            conn.sendall(encode_frame(FrameType.ERROR, seq, {"code": "bad_version", "message": "protocol version 2 is not 1"},
                                      version=1))
            time.sleep(1)

    t = threading.Thread(target=old_agent, daemon=True)
    t.start()
    with pytest.raises(AgentError, match="speaks agent protocol version 1, this host speaks 2"):
        AgentClient.connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}", key=KEY, timeout=5)
    listener.close()


def test_keyless_loopback_mode_is_unchanged_and_a_keyed_host_refuses_it(tmp_path, monkeypatch):
    monkeypatch.delenv(auth.KEY_ENV, raising=False)
    with TcpAgentServer(tmp_path / "store", key=None) as srv, tcp_relay(srv.url) as (url, relays):
        with AgentClient.connect(url, timeout=5) as c:
            assert c.hello()["protocol"] == PROTOCOL_VERSION
            sha = c.put_bytes(os.urandom(2000))
            assert c.delete(sha) == "file"
        frames = relays[-1].frames_of(TO_AGENT) + relays[-1].frames_of(TO_HOST)
        assert len(frames) >= 8 and not any(frame_info(f)["mac"] for f in frames)  # plain, as in version 1
        with pytest.raises(AgentError, match="does not ask for a key, but this host has one"):
            AgentClient.connect(srv.url, key=KEY, timeout=5)


# ---------------------------------------------------------------- the same rule on a serial line

@contextlib.contextmanager
def serial_mitm(workdir: Path, key: bytes):
    """An agent on a pty (through pyserial), a FrameRelay between it and the host's pty."""
    host_master, host_path = open_pty()
    agent_master, agent_path = open_pty()
    config = AgentConfig(store=ContentStore(workdir, 1 << 30), key=key)
    stop = threading.Event()
    server = threading.Thread(target=serve_serial, args=(config, agent_path, 921600, stop), daemon=True)
    server.start()
    try:
        with FrameRelay(host_master, agent_master) as relay:
            yield host_path, relay
    finally:
        stop.set()
        server.join(timeout=5)
        os.close(host_master)
        os.close(agent_master)


def test_serial_line_refuses_an_edited_chunk_and_a_replayed_delete(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOG)
    store = tmp_path / "store"
    data = os.urandom(3000)
    sha = hashlib.sha256(data).hexdigest()
    with serial_mitm(store, KEY) as (device, relay):
        with AgentClient.connect(device, key=KEY, timeout=5) as c:
            assert any(frame_info(f)["mac"] for f in relay.frames_of(TO_HOST))  # hello came back sealed
            relay.rewrite[TO_AGENT] = lambda raw: flip_payload_byte(raw, 20) if frame_info(raw)["type"] == FrameType.DATA else raw
            with pytest.raises(LinkLost):
                c.put_bytes(data)
        assert not (store / "blobs" / sha).exists()
        assert (store / "partial" / f"{sha}.part").stat().st_size == 0  # no edited byte was written
        _assert_rejected(caplog, "whose MAC does not verify")
        relay.rewrite[TO_AGENT] = None
        caplog.clear()
        # the line serves the next host; a replayed delete is refused there too
        with AgentClient.connect(device, key=KEY, timeout=10) as c:
            assert c.put_bytes(data) == sha
            assert c.delete(sha) == "file"
            assert c.put_bytes(data) == sha
            delete = [f for f in relay.frames_of(TO_AGENT, FrameType.REQUEST, mac=True) if b'"delete"' in f][-1]
            before = snapshot(store)
            relay.inject(TO_AGENT, delete)
            deadline = time.monotonic() + 5
            while "the session is closed" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.05)
            with pytest.raises(LinkLost):  # the agent dropped the session: the host hears so
                c.ping()
        assert snapshot(store) == before and (store / "blobs" / sha).is_file()
        _assert_rejected(caplog, "replayed or reordered REQUEST")
        with AgentClient.connect(device, key=KEY, timeout=10) as c:  # and the line still serves
            assert c.ping() < 1.0


def test_serial_line_recovers_from_a_host_that_vanished_without_bye(tmp_path, caplog):
    """The agent still holds the old session's keys; the next host's plain `challenge` ends that
    session (logged) and, resent, starts a fresh one. Nothing is lost but a moment."""
    caplog.set_level(logging.INFO, logger=LOG)
    with serial_mitm(tmp_path / "store", KEY) as (device, relay):
        gone = AgentClient.connect(device, key=KEY, timeout=10)
        assert gone.ping() < 1.0
        gone.transport.close()  # killed: no bye
        with AgentClient.connect(device, key=KEY, timeout=10) as c:
            assert c.hello()["protocol"] == PROTOCOL_VERSION
            assert c.put_bytes(b"after a vanished host") == hashlib.sha256(b"after a vanished host").hexdigest()
    _assert_rejected(caplog, "unauthenticated REQUEST")
