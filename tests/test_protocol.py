"""Frame encoding/decoding: layout, resync after garbage, damage detection, limits, and
property-based fuzzing of the decoder (hypothesis)."""
from __future__ import annotations

import json
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekd.agent.protocol import (
    DATA_HEAD_SIZE, MAGIC, PREFIX_SIZE, PROTOCOL_VERSION, BadFrame, Corrupt, ErrorCode, Frame,
    FrameDecoder, FrameType, Garbage, ProtocolError, decode_data, encode_data, encode_frame,
)

pytestmark = pytest.mark.timeout(60)


def frames_of(events):
    return [e for e in events if isinstance(e, Frame)]


def test_layout_byte_by_byte():
    raw = encode_frame(FrameType.REQUEST, 0x01020304, {"cmd": "ping"}, b"\x00\xff")
    hdr = b'{"cmd":"ping"}'
    assert raw[:2] == MAGIC == b"EK"
    assert raw[2] == PROTOCOL_VERSION and raw[3] == FrameType.REQUEST
    assert raw[4:8] == b"\x01\x02\x03\x04"
    assert struct.unpack(">II", raw[8:16]) == (len(hdr), 2)
    assert struct.unpack(">I", raw[16:20])[0] == zlib.crc32(raw[:16])
    assert raw[20:20 + len(hdr)] == hdr and raw[20 + len(hdr):-4] == b"\x00\xff"
    assert struct.unpack(">I", raw[-4:])[0] == zlib.crc32(raw[:-4])
    assert len(raw) == PREFIX_SIZE + len(hdr) + 2 + 4


@pytest.mark.parametrize("ftype", list(FrameType))
def test_roundtrip_every_type(ftype):
    raw = encode_frame(ftype, 7, {"a": [1, 2.5, "x", None]}, b"payload")
    (frame,) = FrameDecoder().feed(raw)
    assert frame == Frame(ftype, 7, {"a": [1, 2.5, "x", None]}, b"payload")


def test_empty_header_and_big_zero_copy_payload():
    payload = bytes(range(256)) * 4096  # 1 MiB: handed over without a copy
    raw = encode_frame(FrameType.DATA, 1, None, payload)
    dec = FrameDecoder()
    events = []
    for i in range(0, len(raw), 65536):
        events += dec.feed(raw[i:i + 65536])
    (frame,) = events
    assert frame.header == {} and bytes(frame.payload) == payload
    assert dec.buffered == 0


def test_split_at_every_boundary():
    stream = b"".join(encode_frame(FrameType.REPLY, s, {"n": s}, b"x" * s) for s in range(4))
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got = frames_of(dec.feed(stream[:cut]) + dec.feed(stream[cut:]))
        assert [f.seq for f in got] == [0, 1, 2, 3]


def test_resync_after_garbage_and_damaged_prefix():
    a = encode_frame(FrameType.REQUEST, 1, {"cmd": "a"})
    b = encode_frame(FrameType.REQUEST, 2, {"cmd": "b"})
    damaged = bytearray(a)
    damaged[9] ^= 0xFF  # header length: the prefix CRC catches it, so the reader never stalls
    events = FrameDecoder().feed(b"noise EK EKxx" + bytes(damaged) + b"\x00" * 7 + b)
    assert [f.header["cmd"] for f in frames_of(events)] == ["b"]
    assert sum(e.nbytes for e in events if isinstance(e, Garbage)) > 0


def test_damaged_body_is_reported_with_its_seq():
    raw = bytearray(encode_frame(FrameType.REQUEST, 42, {"cmd": "x"}, b"abc"))
    raw[-6] ^= 1
    assert FrameDecoder().feed(bytes(raw)) == [Corrupt(42, FrameType.REQUEST)]


def _prefix(version=PROTOCOL_VERSION, ftype=1, seq=9, hlen=0, plen=0):
    p = struct.pack(">2sBBIII", MAGIC, version, ftype, seq, hlen, plen)
    return p + struct.pack(">I", zlib.crc32(p))


@pytest.mark.parametrize("prefix,code", [
    (_prefix(version=99), ErrorCode.BAD_VERSION),
    (_prefix(ftype=77), ErrorCode.BAD_TYPE),
    (_prefix(plen=1 << 30), ErrorCode.TOO_LARGE),
    (_prefix(hlen=1 << 30), ErrorCode.TOO_LARGE),
])
def test_invalid_prefix_is_a_bad_frame_then_decoding_goes_on(prefix, code):
    good = encode_frame(FrameType.REQUEST, 10, {"cmd": "ping"})
    events = FrameDecoder(max_payload=1 << 20).feed(prefix + good)
    assert events[0] == BadFrame(9, code.value, events[0].message)
    assert frames_of(events)[0].seq == 10


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b"\xff\xfe", b"[" * 100000])
def test_header_must_be_a_json_object(body):
    p = struct.pack(">2sBBIII", MAGIC, PROTOCOL_VERSION, 1, 5, len(body), 0)
    raw = p + struct.pack(">I", zlib.crc32(p)) + body
    raw += struct.pack(">I", zlib.crc32(raw))
    (event,) = FrameDecoder().feed(raw)
    assert isinstance(event, BadFrame) and event.code == ErrorCode.BAD_HEADER.value and event.seq == 5


def test_truncated_frame_is_dropped_and_reported():
    raw = encode_frame(FrameType.REQUEST, 3, {"cmd": "x"}, b"y" * 100)
    dec = FrameDecoder()
    assert dec.feed(raw[:50]) == [] and dec.partial_seq() == 3
    event, *rest = dec.drop_partial()
    assert isinstance(event, BadFrame) and event.code == "truncated" and event.seq == 3
    assert all(isinstance(e, Garbage) for e in rest) and dec.partial_seq() is None
    assert frames_of(dec.feed(encode_frame(FrameType.REQUEST, 4, {"cmd": "ok"})))[0].seq == 4


def test_encoder_limits():
    with pytest.raises(ProtocolError, match="payload"):
        encode_frame(FrameType.DATA, 1, None, b"x" * 11, max_payload=10)
    with pytest.raises(ProtocolError, match="header"):
        encode_frame(FrameType.REQUEST, 1, {"big": "x" * (2 << 20)})
    with pytest.raises(ProtocolError, match="JSON"):
        encode_frame(FrameType.REQUEST, 1, {"x": object()})
    with pytest.raises(ProtocolError, match="JSON"):
        encode_frame(FrameType.REQUEST, 1, {"x": float("nan")})


def test_data_payload_roundtrip():
    handle, offset, chunk = decode_data(encode_data(7, 1 << 40, b"abc"))
    assert (handle, offset, bytes(chunk)) == (7, 1 << 40, b"abc")
    with pytest.raises(ValueError):
        decode_data(b"x" * (DATA_HEAD_SIZE - 1))


# ---- property-based fuzzing -----------------------------------------------------------------------
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_value = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                          max_leaves=8)
frames_st = st.lists(
    st.tuples(st.sampled_from(list(FrameType)), st.integers(0, 2**32 - 1),
              st.dictionaries(st.text(max_size=5), json_value, max_size=3), st.binary(max_size=300)),
    min_size=1, max_size=5,
)


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_fuzz_arbitrary_bytes_never_crash_and_stay_bounded(chunks):
    dec = FrameDecoder(max_payload=4096)
    for chunk in chunks:
        for ev in dec.feed(chunk):
            assert isinstance(ev, (Frame, Corrupt, BadFrame, Garbage))
        assert dec.buffered <= PREFIX_SIZE + (1 << 20) + 4096 + 4
    dec.drop_partial()


@FUZZ
@given(frames_st, st.lists(st.binary(max_size=40), min_size=6, max_size=6), st.lists(st.integers(0, 2000), max_size=6))
def test_fuzz_frames_between_garbage_split_anywhere(frames, garbage, cuts):
    # garbage that could be taken for a frame start is not garbage any more; keep the magic out
    garbage = [g.replace(b"E", b"e") for g in garbage]
    stream = garbage[0] + b"".join(encode_frame(t, s, h, p) + garbage[i + 1] for i, (t, s, h, p) in enumerate(frames))
    dec = FrameDecoder(max_payload=4096)
    events, last = [], 0
    for cut in sorted(c for c in cuts if c < len(stream)) + [len(stream)]:
        events += dec.feed(stream[last:cut])
        last = cut
    got = [(f.type, f.seq, f.header, bytes(f.payload)) for f in frames_of(events)]
    assert got == [(int(t), s, json.loads(json.dumps(h)), p) for t, s, h, p in frames]


@FUZZ
@given(frames_st, st.data())
def test_fuzz_one_flipped_byte_never_yields_a_wrong_frame(frames, data):
    raws = [encode_frame(t, s, h, p) for t, s, h, p in frames]
    victim = data.draw(st.integers(0, len(raws) - 1))
    pos = data.draw(st.integers(0, len(raws[victim]) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(raws[victim])
    damaged[pos] ^= 1 << bit
    stream = b"".join(bytes(damaged) if i == victim else r for i, r in enumerate(raws))
    dec = FrameDecoder(max_payload=4096)
    got = frames_of(dec.feed(stream) + dec.drop_partial())
    expected = [(s, p) for i, (t, s, h, p) in enumerate(frames) if i != victim]
    assert [(f.seq, bytes(f.payload)) for f in got] == expected
