"""Wire framing of the agent protocol: encode frames, decode a byte stream back into events.

Pure functions and one incremental decoder; no I/O, no clocks, no threads, so the same code runs on
every transport and is fuzzed directly (tests/test_protocol.py). The byte layout is documented in
docs/PROTOCOL.md; the summary:

    offset   size  field
    0        2     magic b"EK"
    2        1     protocol version (2)
    3        1     frame type (FrameType) in bits 0-6; bit 7 (MAC_FLAG) = a MAC trailer follows the payload
    4        4     sequence number, u32 big-endian
    8        4     JSON header length H, u32 BE   (<= MAX_HEADER)
    12       4     payload length P, u32 BE       (<= max_payload)
    16       4     CRC32 of bytes 0..15 (the "prefix CRC": a damaged length can never stall the reader)
    20       H     JSON header, UTF-8, an object; H == 0 means {}
    20+H     P     binary payload
    20+H+P   M     MAC trailer, only with MAC_FLAG (M = 24): counter u64 BE + 16-byte tag (frame_auth.py)
    20+H+P+M 4     CRC32 of everything before it

The 20-byte prefix is the same in every protocol version, so a peer of another version can always
read a refusal (`bad_version`, answered in the sender's own version byte). The CRCs catch line
noise; the MAC (every frame after `auth` in a keyed session) catches intent. Nothing is ever
unpickled: the header is JSON, the payload is opaque bytes.
"""
from __future__ import annotations

import enum
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Union

from edgekd.errors import AgentError

MAGIC = b"EK"
PROTOCOL_VERSION = 2  # 2: MAC trailer on every frame after `auth` (1: the session start only)
MAC_FLAG = 0x80  # type-byte bit: this frame carries a MAC trailer
MAC_TRAILER_SIZE = 8 + 16  # send counter u64 + HMAC-SHA256 truncated to 128 bits
_PREFIX = struct.Struct(">2sBBIII")
_U32 = struct.Struct(">I")
PREFIX_SIZE = _PREFIX.size + 4  # 20
TRAILER_SIZE = 4
MAX_HEADER = 1 << 20  # 1 MiB of JSON is far more than any request or result needs
DEFAULT_MAX_PAYLOAD = 16 << 20  # 16 MiB; chunked uploads keep frames well below this
# DATA frames carry an upload chunk: u32 upload handle + u64 offset, then the bytes
_DATA_HEAD = struct.Struct(">IQ")
DATA_HEAD_SIZE = _DATA_HEAD.size


class FrameType(enum.IntEnum):
    """What a frame is. REQUEST/DATA go host -> agent and get exactly one REPLY or ERROR back."""

    REQUEST = 1  # header {"cmd": ..., ...}
    REPLY = 2  # success answer to the request with the same seq
    ERROR = 3  # failure answer: header {"code", "message", ...}
    NAK = 4  # "the frame with this seq arrived damaged (or I saw garbage): send it again"
    BUSY = 5  # keep-alive while a long request (bench/eval) runs: "seq is being worked on"
    DATA = 6  # upload chunk: header {}, payload = handle u32 + offset u64 + bytes


class ErrorCode(str, enum.Enum):
    """Error codes carried in ERROR frames (header "code"). Documented in docs/PROTOCOL.md."""

    BAD_VERSION = "bad_version"
    BAD_TYPE = "bad_type"
    BAD_HEADER = "bad_header"
    TOO_LARGE = "too_large"
    TRUNCATED = "truncated"
    BAD_REQUEST = "bad_request"
    UNKNOWN_COMMAND = "unknown_command"
    UNAUTHORIZED = "unauthorized"
    AUTH_FAILED = "auth_failed"
    NOT_FOUND = "not_found"
    BAD_NAME = "bad_name"
    QUOTA_EXCEEDED = "quota_exceeded"
    OFFSET_MISMATCH = "offset_mismatch"
    HASH_MISMATCH = "hash_mismatch"
    IN_USE = "in_use"
    FAILED = "failed"  # the command ran and failed for a user-visible reason (e.g. missing runtime)
    INTERNAL = "internal"  # a bug in the agent; it keeps serving


class ProtocolError(AgentError):
    """A frame that cannot be built (too large, not JSON-serializable)."""


class AgentRequestError(AgentError):
    """The agent answered a request with an ERROR frame."""

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail or {}


class LinkLost(AgentError):
    """The link to the agent closed or went silent."""


@dataclass(frozen=True)
class Frame:
    """A complete, CRC-checked frame."""

    type: int
    seq: int
    header: dict[str, Any] = field(default_factory=dict)
    payload: bytes | memoryview = b""  # a read-only memoryview for large payloads (no copy)
    # authenticated frames only: the MAC trailer (counter + tag) and the bytes before the payload
    # (prefix + raw JSON header), so frame_auth can check the MAC over exactly what was sent
    mac: bytes = field(default=b"", repr=False, compare=False)
    mac_head: bytes = field(default=b"", repr=False, compare=False)


@dataclass(frozen=True)
class Corrupt:
    """A frame whose prefix was intact (so its seq is trustworthy) but whose body CRC failed."""

    seq: int
    type: int


@dataclass(frozen=True)
class BadFrame:
    """A frame with an intact prefix that is invalid in a way a resend cannot fix."""

    seq: int
    code: str
    message: str
    version: int = field(default=PROTOCOL_VERSION, compare=False)  # the offending frame's version byte (a refusal is answered in it)


@dataclass(frozen=True)
class Garbage:
    """Bytes skipped while searching for the next frame (line noise or a damaged prefix)."""

    nbytes: int


Event = Union[Frame, Corrupt, BadFrame, Garbage]


def encode_header(header: dict[str, Any] | None) -> bytes:
    if not header:
        return b""
    try:
        data = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise ProtocolError(f"frame header is not plain JSON ({err}); send numbers, strings, lists and dicts only") from None
    if len(data) > MAX_HEADER:
        raise ProtocolError(f"frame header is {len(data)} bytes, above the {MAX_HEADER}-byte limit")
    return data


@dataclass
class OutFrame:
    """A frame ready to go out, except for its MAC trailer and final CRC (added per transmission).

    An authenticated frame gets a fresh counter each time it is sent (a resend is a new transmission,
    never a replay), so it is kept in this form, not as bytes. `mac_state` is the MAC over the frame's
    bytes so far (frame_auth.py fills it in); sealing one transmission costs a copy of it plus 9 bytes.
    """

    type: int
    seq: int
    header: dict[str, Any]
    head: bytes  # prefix + prefix CRC + JSON header
    payload: tuple[bytes | bytearray | memoryview, ...]
    crc: int  # CRC-32 of head + payload; the trailer's bytes are folded in when sent
    authenticated: bool = False
    mac_state: Any = None  # (FrameAuth, HMAC state over head + payload), set by FrameAuth.digest_body

    def wire(self, trailer: bytes = b"") -> list[bytes | bytearray | memoryview]:
        """The buffers of one transmission (`trailer`: the MAC trailer of an authenticated frame)."""
        return [self.head, *self.payload, trailer + _U32.pack(zlib.crc32(trailer, self.crc))]

    @property
    def size(self) -> int:
        return len(self.head) + sum(len(p) for p in self.payload) + (MAC_TRAILER_SIZE if self.authenticated else 0) + 4


def prepare_frame(
    ftype: int,
    seq: int,
    header: dict[str, Any] | None = None,
    payload: tuple[bytes | bytearray | memoryview, ...] | list[Any] = (),
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    authenticated: bool = False,
    version: int = PROTOCOL_VERSION,
) -> OutFrame:
    """Encode one frame (payload pieces are not copied: big uploads send them as they are).

    `authenticated` sets MAC_FLAG: the frame must then be sealed (frame_auth.FrameAuth) before it is
    sent. `version` other than ours is only for refusing a peer of that version in its own terms.
    Raises ProtocolError when the header or payload exceeds the limits.
    """
    hbytes = encode_header(header)
    payload = tuple(p for p in payload if len(p))
    plen = sum(len(p) for p in payload)
    if plen > max_payload:
        raise ProtocolError(f"frame payload is {plen} bytes, above the {max_payload}-byte limit")
    tbyte = int(ftype) | (MAC_FLAG if authenticated else 0)
    prefix = _PREFIX.pack(MAGIC, version, tbyte, seq & 0xFFFFFFFF, len(hbytes), plen)
    head = prefix + _U32.pack(zlib.crc32(prefix)) + hbytes
    crc = zlib.crc32(head)
    for part in payload:
        crc = zlib.crc32(part, crc)
    return OutFrame(int(ftype), seq & 0xFFFFFFFF, dict(header or {}), head, payload, crc, authenticated)


def encode_frame(
    ftype: int,
    seq: int,
    header: dict[str, Any] | None = None,
    payload: bytes | bytearray | memoryview = b"",
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    version: int = PROTOCOL_VERSION,
) -> bytes:
    """One unauthenticated frame as bytes. Raises ProtocolError when the header or payload exceeds the limits."""
    return b"".join(prepare_frame(ftype, seq, header, (payload,) if payload else (), max_payload=max_payload,
                                  version=version).wire())


def data_head(handle: int, offset: int) -> bytes:
    """Fixed start of a DATA payload: upload handle u32, offset u64; the chunk bytes follow."""
    return _DATA_HEAD.pack(handle, offset)


def encode_data(handle: int, offset: int, chunk: bytes | memoryview) -> bytes:
    """Payload of a DATA frame: upload handle, offset in the file, then the chunk bytes."""
    return _DATA_HEAD.pack(handle, offset) + bytes(chunk)


def decode_data(payload: bytes | memoryview) -> tuple[int, int, memoryview]:
    """Inverse of encode_data; raises ValueError on a payload too short to hold the fixed part."""
    if len(payload) < DATA_HEAD_SIZE:
        raise ValueError(f"DATA payload is {len(payload)} bytes, shorter than its {DATA_HEAD_SIZE}-byte head")
    handle, offset = _DATA_HEAD.unpack_from(payload)
    return handle, offset, memoryview(payload)[DATA_HEAD_SIZE:]


def _reject_constant(name: str) -> Any:
    # strict JSON: NaN, Infinity and -Infinity are not JSON (RFC 8259); a header holding them is bad
    raise ValueError(f"{name} is not a JSON number")


def _tail_to_keep(buf: bytearray) -> int:
    """After a scan found no frame: keep a trailing first magic byte (its partner may come next)."""
    return 1 if buf and buf[-1] == MAGIC[0] else 0


_SCALAR_CANDIDATES = 32


def _crc_tables() -> tuple[Any, int]:
    """CRC-32 is affine over GF(2): for 16-byte messages, crc(m) = crc(0) ^ XOR_j T[j][m_j] with
    T[j][v] = crc(v at position j, zeros elsewhere) ^ crc(0). -> (T as a 16x256 uint32 array, crc(0))."""
    import numpy as np

    n = PREFIX_SIZE - 4
    zero = zlib.crc32(bytes(n))
    table = np.zeros((n, 256), dtype=np.uint32)
    for j in range(n):
        msg = bytearray(n)
        for v in range(256):
            msg[j] = v
            table[j, v] = zlib.crc32(msg) ^ zero
    return table, zero


_TABLES: tuple[Any, int] | None = None


def _scan_bulk(buf: bytearray, start: int) -> int:
    """Like `_next_prefix` from `start`, with every candidate's prefix CRC computed at once (numpy)."""
    import numpy as np

    global _TABLES
    if _TABLES is None:
        _TABLES = _crc_tables()
    table, zero = _TABLES
    a = np.frombuffer(buf, dtype=np.uint8)[start:]
    if a.size < 2:
        return start if a.size and a[0] == MAGIC[0] else -1
    idx = np.flatnonzero((a[:-1] == MAGIC[0]) & (a[1:] == MAGIC[1]))
    if idx.size == 0:
        return -1
    whole = idx[idx + PREFIX_SIZE <= a.size]
    if whole.size:
        n = PREFIX_SIZE - 4
        crc = np.full(whole.size, zero, dtype=np.uint32)
        for j in range(n):
            crc ^= table[j, a[whole + j]]
        stored = np.zeros(whole.size, dtype=np.uint32)
        for j in range(4):
            stored = (stored << np.uint32(8)) | a[whole + n + j].astype(np.uint32)
        hit = np.flatnonzero(crc == stored)
        if hit.size:
            return start + int(whole[hit[0]])
    if whole.size < idx.size:  # a magic too close to the end to check yet
        return start + int(idx[whole.size])
    return -1


_ZERO_COPY_MIN = 64 << 10
_VALID_TYPES = frozenset(int(t) for t in FrameType)


class FrameDecoder:
    """Incremental decoder: `feed(bytes) -> [events]`, in stream order.

    Resynchronises on the magic after garbage: a prefix whose CRC fails is skipped one byte at a time,
    so a frame that follows line noise is still found. Memory is bounded by one maximal frame.
    Headers are strict JSON objects: NaN / Infinity are refused (`bad_header`).
    """

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self.max_frame: int | None = None  # header + payload bound (the agent's pre-auth limit); None: none
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def partial_seq(self) -> int | None:
        """The seq of a frame whose intact prefix has arrived but whose body has not (yet)."""
        if len(self._buf) >= PREFIX_SIZE and self._prefix_ok():
            return _PREFIX.unpack_from(self._buf)[3]
        return None

    def drop_partial(self) -> list[Event]:
        """The line went quiet mid-frame: give up on the buffered bytes and report what they were."""
        seq = self.partial_seq()
        if seq is not None:
            del self._buf[:PREFIX_SIZE]  # resync after the prefix: later bytes may hold a new frame
            return [BadFrame(seq, ErrorCode.TRUNCATED.value, "frame truncated: the line went quiet before its end"), *self.feed(b"")]
        n = len(self._buf)
        self._buf.clear()
        return [Garbage(n)] if n else []

    def _prefix_ok(self) -> bool:
        (crc,) = _U32.unpack_from(self._buf, PREFIX_SIZE - 4)
        with memoryview(self._buf) as mv:
            return zlib.crc32(mv[: PREFIX_SIZE - 4]) == crc

    @staticmethod
    def _next_prefix(buf: bytearray) -> int:
        """Offset of the first magic that starts an intact prefix, or of a magic too close to the end
        to check yet; -1 when there is none. One pass with a cursor (no per-byte deletes); after a
        few damaged candidates the rest of the buffer is checked in bulk (`_scan_bulk`), so noise
        full of magic bytes costs about as little as random noise."""
        pos = 0
        end = len(buf)
        with memoryview(buf) as mv:
            for _ in range(_SCALAR_CANDIDATES):
                idx = buf.find(MAGIC, pos)
                if idx < 0:
                    return -1
                if end - idx < PREFIX_SIZE:
                    return idx
                if zlib.crc32(mv[idx : idx + PREFIX_SIZE - 4]) == _U32.unpack_from(buf, idx + PREFIX_SIZE - 4)[0]:
                    return idx
                pos = idx + 1
        return _scan_bulk(buf, pos)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        buf = self._buf
        buf += data
        events: list[Event] = []
        garbage = 0
        while buf:
            idx = self._next_prefix(buf)
            if idx < 0:
                # keep a tail that may be the start of a prefix completed by the next read
                keep = _tail_to_keep(buf)
                garbage += len(buf) - keep
                del buf[: len(buf) - keep]
                break
            if idx:
                garbage += idx
                del buf[:idx]
            if len(buf) < PREFIX_SIZE:
                break
            _, version, tbyte, seq, hlen, plen = _PREFIX.unpack_from(buf)
            ftype = tbyte & ~MAC_FLAG
            bad = None
            if version != PROTOCOL_VERSION:
                bad = (ErrorCode.BAD_VERSION, f"protocol version {version} is not {PROTOCOL_VERSION}; install the same edgekd version on host and device")
            elif ftype not in _VALID_TYPES:
                bad = (ErrorCode.BAD_TYPE, f"unknown frame type {ftype}")
            elif hlen > MAX_HEADER or plen > self.max_payload or (self.max_frame is not None and hlen + plen > self.max_frame):
                frame_limit = "" if self.max_frame is None else f", {self.max_frame} together"
                bad = (ErrorCode.TOO_LARGE, f"frame declares header {hlen} + payload {plen} bytes, above the limits ({MAX_HEADER} / {self.max_payload}{frame_limit})")
            if bad is not None:
                if garbage:
                    events.append(Garbage(garbage))
                    garbage = 0
                events.append(BadFrame(seq, bad[0].value, bad[1], version))
                # resync after the prefix: never wait for (or buffer) a body we will not accept
                del buf[:PREFIX_SIZE]
                continue
            mlen = MAC_TRAILER_SIZE if tbyte & MAC_FLAG else 0
            body_end = PREFIX_SIZE + hlen + plen  # payload end; the MAC trailer (if any) follows
            total = body_end + mlen + TRAILER_SIZE
            if len(buf) < total:
                break
            if garbage:
                events.append(Garbage(garbage))
                garbage = 0
            (crc,) = _U32.unpack_from(buf, total - TRAILER_SIZE)
            payload: bytes | memoryview = b""
            mac = mac_head = b""
            with memoryview(buf) as mv:
                crc_ok = zlib.crc32(mv[: total - TRAILER_SIZE]) == crc
                if crc_ok:
                    raw_header = bytes(mv[PREFIX_SIZE : PREFIX_SIZE + hlen])
                    if mlen:
                        mac, mac_head = bytes(mv[body_end : body_end + mlen]), bytes(mv[:PREFIX_SIZE]) + raw_header
                    if len(buf) > total or plen < _ZERO_COPY_MIN:
                        payload = bytes(mv[PREFIX_SIZE + hlen : body_end])
            if crc_ok and plen >= _ZERO_COPY_MIN and len(buf) == total:
                # a big frame that fills the buffer (an upload chunk): hand the buffer itself over
                payload = memoryview(buf)[PREFIX_SIZE + hlen : body_end].toreadonly()
                self._buf = buf = bytearray()
            else:
                del buf[:total]
            if not crc_ok:
                events.append(Corrupt(seq, ftype))
                continue
            try:
                header = json.loads(raw_header, parse_constant=_reject_constant) if hlen else {}
            except (UnicodeDecodeError, ValueError, RecursionError):
                header = None
            if not isinstance(header, dict):
                events.append(BadFrame(seq, ErrorCode.BAD_HEADER.value, "frame header is not a JSON object"))
                continue
            events.append(Frame(ftype, seq, header, payload, mac, mac_head))
        if garbage:
            events.append(Garbage(garbage))
        return events
