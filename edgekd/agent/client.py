"""The host side: `AgentClient` talks to an agent over any transport (numpy-free, torch-free).

    with AgentClient.connect("tcp://rpi.local:7000", key_file="agent.key") as agent:
        info = agent.hello()
        aid = agent.put_artifact("runs/s1/export/onnxruntime-fp32")
        data = agent.put_file("eval.npz")
        result = agent.bench(aid, {"threads": 4})
        scored = agent.eval(aid, data, {"latency": False})

Reliability (docs/PROTOCOL.md): one request in flight; a damaged answer is NAKed; garbage on the
line is NAKed once the line goes quiet; on lossy links a request with no answer is resent after a
retransmit timeout; the agent answers a resent request from its cache, so nothing runs twice.

Authenticity: with a key, every frame after `auth` carries a MAC both ways (frame_auth.py); a frame
that fails it closes the session with FrameRejected. A host that holds a key refuses an agent that
does not ask for one (anyone on the link could otherwise pose as the agent and invent results).
"""
from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any, Callable

from edgekd.agent import auth
from edgekd.agent.channel import Channel
from edgekd.agent.frame_auth import FrameRejected
from edgekd.agent.protocol import (
    DATA_HEAD_SIZE, DEFAULT_MAX_PAYLOAD, MAX_HEADER, PROTOCOL_VERSION, AgentRequestError, BadFrame, Corrupt, ErrorCode,
    Frame, FrameType, Garbage, LinkLost, OutFrame,
)
from edgekd.agent.storage import check_name
from edgekd.agent.transports import Transport, open_transport
from edgekd.agent.upload import upload_stop_and_wait, upload_window
from edgekd.errors import AgentError, ConfigError, EdgeKDError
from edgekd.fileio import sha256_file

Progress = Callable[[int, int], None]



MAX_ATTEMPTS = 500  # resends of one request before the line is declared unusable
FETCH_PIECE = 96  # bytes of a stashed answer per fetch: most pieces cross even a 1 %-damaged line
# how long an agent may keep answering BUSY ("still working on it") to one request while it runs: at
# most the isolated runner's kill time (`bench.request` timeout_s, default 900 s; a bench / eval's
# own if longer) plus a margin. BUSY {"queued": 1} (waiting for the measurement slot while another
# host measures) does not count toward it, and has its own bound, MAX_QUEUED_S. Without bounds a
# hostile or wedged agent sending BUSY for ever held the host for ever.
BUSY_MARGIN_S = 120.0
DEFAULT_RUN_S = 900.0
MAX_BUSY_S = DEFAULT_RUN_S + BUSY_MARGIN_S
MAX_QUEUED_S = 4 * 3600.0


class AgentClient:
    """A session with one agent. Use `AgentClient.connect(url, ...)` as a context manager."""

    def __init__(self, transport: Transport, *, key: bytes | None = None, timeout: float = 30.0) -> None:
        self.transport = transport
        self.url = transport.description
        self.timeout = timeout  # the longest silence from the agent before the link counts as lost
        self.channel = Channel(transport, DEFAULT_MAX_PAYLOAD)
        self._key = key
        self._seq = secrets.randbits(32)  # a fresh base per session: never confused with an old one
        self._srtt: float | None = None
        self.max_payload = DEFAULT_MAX_PAYLOAD
        self.chunk = transport.default_chunk
        self.stats = {"requests": 0, "resends": 0, "naks_sent": 0}
        self.max_busy_s = MAX_BUSY_S  # the longest run of BUSY answers to one running request (see MAX_BUSY_S)
        self.max_queued_s = MAX_QUEUED_S  # and of BUSY {"queued": 1}, waiting for the measurement slot
        self._closed = False

    # ---- connection ----------------------------------------------------------------------------
    @classmethod
    def connect(cls, url: str, key: bytes | str | None = None, *, key_file: str | os.PathLike[str] | None = None,
                timeout: float = 30.0, connect_timeout: float = 10.0) -> "AgentClient":
        """Open `url` (tcp://, serial://, a device path, local), authenticate, return the client."""
        explicit = auth.load_key(key, key_file) if (key is not None or key_file is not None) else None
        transport = open_transport(url, timeout=connect_timeout)
        client = cls(transport, key=explicit or transport.key or auth.load_key(), timeout=timeout)
        try:
            client._handshake()
        except BaseException:
            client.close(say_bye=False)
            raise
        return client

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handshake(self) -> None:
        info = self.request("challenge")
        if info.get("auth_required"):
            if self._key is None:
                raise AgentError(f"the agent at {self.url} requires a key: pass --key-file FILE or set {auth.KEY_ENV}")
            agent_nonce = info.get("nonce")
            if not auth.is_nonce(agent_nonce):
                raise AgentError(f"the agent at {self.url} sent no valid challenge nonce; is it an edgekd agent of this version?")
            host_nonce = auth.new_nonce()
            proof = auth.host_proof(self._key, agent_nonce, host_nonce)
            answer = self.request("auth", {"nonce": host_nonce, "proof": proof})
            if not auth.verify(auth.agent_proof(self._key, agent_nonce, host_nonce), answer.get("proof")):
                raise AgentError(f"the agent at {self.url} could not prove it holds the key; check you reached the right device")
            # every frame from here on carries a MAC under this session's keys (both directions)
            self.channel.start_mac(auth.session_keys(self._key, agent_nonce, host_nonce), "host", grace_seq=self._seq)
        elif self._key is not None:
            raise AgentError(
                f"the agent at {self.url} does not ask for a key, but this host has one: an agent that cannot prove "
                "the key could be anyone on the link. Start the agent with the same key (--key-file or "
                f"{auth.KEY_ENV}), or connect without a key to a key-less loopback agent (unset {auth.KEY_ENV})"
            )
        hello = self.hello()
        limits = hello.get("limits")
        max_payload = limits.get("max_payload", DEFAULT_MAX_PAYLOAD) if isinstance(limits, dict) else DEFAULT_MAX_PAYLOAD
        if not isinstance(max_payload, int) or isinstance(max_payload, bool) or max_payload <= DATA_HEAD_SIZE:
            # an upload chunk must fit: a smaller limit would leave chunks of no bytes, sent for ever
            raise AgentError(f"the agent at {self.url} reports max_payload {str(max_payload)[:40]!r}; "
                             f"it must be an integer above {DATA_HEAD_SIZE}")
        self.max_payload = self.channel.max_payload = max_payload
        self.chunk = min(self.chunk, self.max_payload - DATA_HEAD_SIZE)

    def close(self, say_bye: bool = True) -> None:
        """Say bye (best effort) and release the link; the local transport stops its agent."""
        if self._closed:
            return
        self._closed = True
        if say_bye:
            try:
                self.request("bye", timeout=2.0)
            except AgentError:
                pass
        self.transport.close()

    # ---- requests ------------------------------------------------------------------------------
    def request(self, cmd: str, header: dict[str, Any] | None = None, *, timeout: float | None = None,
                busy_s: float | None = None) -> dict[str, Any]:
        """Send one command; return the reply header or raise AgentRequestError / LinkLost. `busy_s`:
        how long the agent may work on it, answering BUSY (default `max_busy_s`)."""
        return self._exchange(FrameType.REQUEST, {"cmd": cmd, **(header or {})}, [], timeout, busy_s=busy_s).header

    def _rto(self, frame_len: int) -> float:
        """Retransmit timeout. Only lossy links resend on a timer; TCP never loses bytes."""
        if not self.transport.lossy:
            return float("inf")
        base = max(0.05, 4 * self._srtt) if self._srtt is not None else 0.25
        bps = self.transport.bytes_per_s
        return base + (2 * frame_len / bps if bps else 0.0)

    def _exchange(self, ftype: int, header: dict[str, Any], payload: list[Any], timeout: float | None,
                  max_attempts: int = MAX_ATTEMPTS, *, prepared: OutFrame | None = None,
                  while_waiting: Callable[[], None] | None = None, busy_s: float | None = None) -> Frame:
        """One request/answer. `prepared`: the frame, already encoded with the next seq (else built
        from ftype/header/payload); `while_waiting`: work to do once it is sent, before the answer
        is awaited (an upload prepares its next chunk there while the agent stores this one)."""
        if self._closed and header.get("cmd") != "bye":
            raise AgentError(f"the connection to {self.url} is closed; connect again")
        try:
            return self._exchange_once(ftype, header, payload, timeout, max_attempts, prepared, while_waiting,
                                       self.max_busy_s if busy_s is None else busy_s)
        except FrameRejected:
            self._reject_link()
            raise

    def _reject_link(self) -> None:
        """A frame failed authentication: nothing more from this link can be trusted; close it."""
        self._closed = True
        self.transport.close()

    def next_seq(self) -> int:
        """The seq the next request will carry (one request is in flight at a time)."""
        return (self._seq + 1) & 0xFFFFFFFF

    def _exchange_once(self, ftype: int, header: dict[str, Any], payload: list[Any], timeout: float | None,
                       max_attempts: int, prepared: OutFrame | None, while_waiting: Callable[[], None] | None,
                       busy_s: float = MAX_BUSY_S) -> Frame:
        self._seq = seq = (self._seq + 1) & 0xFFFFFFFF
        ch, silence = self.channel, (timeout or self.timeout)
        if prepared is not None and prepared.seq != seq:
            raise ValueError(f"a frame prepared for seq {prepared.seq} cannot go out as seq {seq}")
        frame = prepared if prepared is not None else ch.prepare(ftype, seq, header, payload)
        frame_len = frame.size
        joined = self.transport.lossy  # resent often on a noisy line: one small buffer
        ch.send_out(frame, joined=joined)
        if while_waiting is not None:
            while_waiting()
        self.stats["requests"] += 1
        sent = last_heard = time.monotonic()
        rto = self._rto(frame_len)
        resend_at = sent + rto
        attempts, garbage, busy = 1, 0, False
        busy_since: float | None = None  # since when BUSY for a running request
        queued_since: float | None = None  # since when BUSY {"queued": 1}
        self.last_attempts = 1

        def resend(now: float) -> None:
            nonlocal attempts, resend_at
            attempts += 1
            self.last_attempts = attempts
            self.stats["resends"] += 1
            if attempts > max_attempts:
                raise LinkLost(f"gave up on {self.url} after {MAX_ATTEMPTS} resends; the line is too noisy")
            ch.send_out(frame, joined=joined)  # a new transmission: sealed with a new counter
            resend_at = now + rto

        while True:
            now = time.monotonic()
            if now - last_heard > silence:
                raise LinkLost(f"the agent at {self.url} did not answer within {silence:.0f} s")
            wait = min(resend_at, last_heard + silence) - now
            ev = ch.poll(min(wait, ch.quiet_s) if garbage else max(0.0, wait))
            now = time.monotonic()
            if ev is None:
                if ch.decoder.buffered and now - ch.last_rx > (ch.quiet_s * 4 if self.transport.lossy else 2.0):
                    # a damaged frame's bytes taken for the start of another: give them up
                    ch.decoder.drop_partial()
                    garbage += 1
                if garbage:  # damage, then quiet: ask for the answer again
                    garbage = 0
                    self.stats["naks_sent"] += 1
                    ch.send(FrameType.NAK, seq, {"garbage": 1})
                    resend_at = now + rto
                elif not busy and now >= resend_at:
                    resend(now)
                    rto = min(rto * 1.5, 5.0)  # back off when the line loses whole frames
                continue
            if isinstance(ev, Garbage):
                garbage += ev.nbytes
                continue
            # only what concerns this request counts as hearing from the agent: answers to other seqs
            # and bad frames, sent for ever, must not hold the host past the silence timeout
            if isinstance(ev, Corrupt):
                if ev.seq == seq:
                    last_heard = now
                    self.stats["naks_sent"] += 1
                    ch.send(FrameType.NAK, seq)
                continue
            if isinstance(ev, BadFrame):
                if ev.code == ErrorCode.BAD_VERSION.value and ev.seq == seq:
                    raise AgentError(
                        f"the agent at {self.url} speaks agent protocol version {ev.version}, this host speaks "
                        f"{PROTOCOL_VERSION}: install the same edgekd version on host and device"
                    )
                continue  # nothing the agent should send; its own resend will follow
            if ev.type == FrameType.NAK and (ev.seq == seq or "garbage" in ev.header):
                last_heard = now
                resend(now)
                continue
            if ev.seq != seq:
                continue  # an answer to an earlier, already answered, resend
            last_heard = now
            if ev.type == FrameType.BUSY:
                busy = True
                if ev.header.get("queued"):  # in line for the measurement slot: the run has not started
                    queued_since = now if queued_since is None else queued_since
                    if now - queued_since > self.max_queued_s:
                        raise LinkLost(f"the agent at {self.url} kept this request waiting for its measurement slot "
                                       f"for {now - queued_since:.0f} s; another host is measuring there, try later")
                    continue
                busy_since = now if busy_since is None else busy_since
                if now - busy_since > busy_s:
                    raise LinkLost(f"the agent at {self.url} kept answering 'busy' for {now - busy_since:.0f} s, longer "
                                   f"than any request may take ({busy_s:.0f} s); restart the agent")
                continue
            if ev.type == FrameType.REPLY:
                if attempts == 1:
                    rtt = now - sent
                    self._srtt = rtt if self._srtt is None else 0.8 * self._srtt + 0.2 * rtt
                if set(ev.header) != {"stashed"}:
                    return ev
                ev = self._fetch_stashed(ev.header["stashed"], seq, timeout)
                if ev.type == FrameType.REPLY:
                    return ev
            if ev.type == FrameType.ERROR:
                h = dict(ev.header)
                code, message = str(h.pop("code", "?")), str(h.pop("message", "agent error"))
                raise AgentRequestError(code, f"agent at {self.url}: {message}", h)

    def _fetch_stashed(self, total: Any, seq: int, timeout: float | None) -> Frame:
        """Reassemble a long answer the agent stashed (lossy links) from small pieces."""
        # a stash is a frame type byte + one JSON header: never more than MAX_HEADER + 1 bytes (before
        # auth anyone on the link may answer, so the size and every piece are checked, not trusted)
        if not isinstance(total, int) or isinstance(total, bool) or not 0 < total <= MAX_HEADER + 1:
            raise LinkLost(f"the agent at {self.url} stashed an answer of {str(total)[:40]!r} bytes; "
                           f"no answer is longer than {MAX_HEADER + 1}")
        buf = bytearray()
        while len(buf) < total:
            piece = self._exchange(FrameType.REQUEST, {"cmd": "fetch", "off": len(buf), "n": FETCH_PIECE}, [], timeout)
            if not piece.payload or len(piece.payload) > FETCH_PIECE:
                break
            buf += piece.payload
        try:
            ftype, header = buf[0], json.loads(bytes(buf[1:]))
        except (IndexError, ValueError):
            header = None
        if len(buf) != total or not isinstance(header, dict) or ftype not in (FrameType.REPLY, FrameType.ERROR):
            raise LinkLost(f"the stashed answer from {self.url} did not reassemble ({len(buf)} of {total} bytes)")
        return Frame(ftype, seq, header)

    # ---- commands ------------------------------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        """Agent version, protocol version, device fingerprint, limits and store usage."""
        return self.request("hello")

    def ping(self) -> float:
        """One round trip; returns its duration in seconds (also a keep-alive)."""
        t0 = time.perf_counter()
        self.request("ping")
        return time.perf_counter() - t0

    def put_bytes(self, data: bytes, progress: Progress | None = None) -> str:
        import hashlib

        view = memoryview(data)  # chunks are slices of it, not copies
        return self._put(hashlib.sha256(data).hexdigest(), len(data), lambda off, n: view[off:off + n], progress)

    def put_file(self, path: str | os.PathLike[str], progress: Progress | None = None) -> str:
        """Upload a file (resuming a partial upload the agent kept); returns its sha256."""
        path = Path(path)
        if path.is_symlink():
            raise ConfigError(f"refusing to upload {str(path)!r}: it is a symbolic link (its target could be any "
                              "file on this machine); copy the file in place of the link")
        if not path.is_file():
            raise ConfigError(f"cannot upload {str(path)!r}: not a file")
        sha, size = sha256_file(path), path.stat().st_size
        with open(path, "rb") as fh:
            def read(off: int, n: int) -> bytes:
                fh.seek(off)
                return fh.read(n)

            return self._put(sha, size, read, progress)

    def _put(self, sha: str, size: int, read: Callable[[int, int], bytes], progress: Progress | None) -> str:
        state = self.request("put", {"sha256": sha, "size": size})
        have = int(state.get("have", 0))
        if progress:
            progress(have, size)
        if not state.get("complete"):
            send = upload_window if self.transport.lossy else upload_stop_and_wait
            try:
                send(self, int(state["upload"]), size, have, read, progress)
            except FrameRejected:
                self._reject_link()
                raise
        return sha

    def put_artifact(self, artifact_dir: str | os.PathLike[str], progress: Progress | None = None) -> str:
        """Upload an artifact directory (manifest.json + model files); returns the artifact id."""
        root = Path(artifact_dir)
        if not (root / "manifest.json").is_file():
            raise ConfigError(f"{str(root)!r} is not an artifact directory (no manifest.json); export one first")
        files = sorted(p for p in root.iterdir() if not p.name.startswith("."))
        for p in files:
            if p.is_symlink():
                raise ConfigError(f"artifact {str(root)!r} contains {p.name!r}, a symbolic link; artifacts hold plain "
                                  "files only (copy the file in place of the link)")
            if not p.is_file():
                raise ConfigError(f"artifact {str(root)!r} contains {p.name!r}, which is not a plain file; artifacts are flat directories")
            try:
                check_name(p.name)
            except AgentRequestError as err:
                raise ConfigError(f"artifact {str(root)!r}: {err}") from None
        total = sum(p.stat().st_size for p in files)
        done = 0
        mapping: dict[str, str] = {}
        for p in files:
            size = p.stat().st_size
            cb = (lambda d, _t, base=done: progress(base + d, total)) if progress else None
            mapping[p.name] = self.put_file(p, cb)
            done += size
        return self.request("bundle", {"files": mapping})["artifact"]

    def bench(self, artifact_id: str, request: dict[str, Any] | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """Latency (and memory) of an uploaded artifact, measured on the device."""
        return self.request("bench", {"artifact": artifact_id, "request": request or {}}, timeout=timeout,
                            busy_s=_busy_s(request))["result"]

    def bench_many(self, artifact_ids: list[str], request: dict[str, Any] | None = None, *,
                   timeout: float | None = None) -> list[dict[str, Any] | EdgeKDError]:
        """Latency of several uploaded artifacts, measured one after another in one runner process per
        runtime on the device (at most MAX_MANY): per artifact its result, or the error it failed with."""
        from edgekd.bench.measure import MAX_MANY, rebuild_error

        ids = list(artifact_ids)
        if not 1 <= len(ids) <= MAX_MANY:
            raise AgentError(f"bench_many takes 1 to {MAX_MANY} artifacts, not {len(ids)}")
        entries = self.request("bench_many", {"artifacts": ids, "request": request or {}}, timeout=timeout,
                               busy_s=_many_busy_s(request, len(ids)))["results"]
        if not isinstance(entries, list) or len(entries) != len(ids):
            raise AgentError(f"the agent at {self.url} answered bench_many for {len(ids)} artifacts with "
                             f"{len(entries) if isinstance(entries, list) else 'no'} results")
        return [e["result"] if isinstance(e, dict) and e.get("ok") and isinstance(e.get("result"), dict)
                else rebuild_error(e.get("error") if isinstance(e, dict) and isinstance(e.get("error"), dict) else {}, aid)
                for e, aid in zip(entries, ids)]

    def eval(self, artifact_id: str, data_id: str, request: dict[str, Any] | None = None, *, timeout: float | None = None) -> dict[str, Any]:
        """Accuracy on the device's runtime over an uploaded .npz (plus latency if request asks)."""
        return self.request("eval", {"artifact": artifact_id, "data": data_id, "request": request or {}}, timeout=timeout,
                            busy_s=_busy_s(request))["result"]

    def delete(self, ident: str) -> str:
        """Delete an artifact (and files only it used) or one uploaded file; returns which it was."""
        return self.request("delete", {"id": ident})["deleted"]


def _many_busy_s(request: dict[str, Any] | None, count: int) -> float:
    """How long a `bench_many` of `count` artifacts may keep the agent busy: its child is killed after
    `timeout_s` (default DEFAULT_RUN_S) x count, and if it died each artifact may take its own
    `timeout_s` again; plus BUSY_MARGIN_S."""
    limit = (request or {}).get("timeout_s")
    if not (isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0):
        limit = DEFAULT_RUN_S
    return 2 * float(limit) * count + BUSY_MARGIN_S


def _busy_s(request: dict[str, Any] | None) -> float | None:
    """How long a bench / eval may keep the agent busy once it runs: its request's `timeout_s` (after
    which the isolated runner is killed) if longer than the default, plus BUSY_MARGIN_S; None (the
    client's default, MAX_BUSY_S) without one."""
    limit = (request or {}).get("timeout_s")
    if isinstance(limit, (int, float)) and not isinstance(limit, bool) and limit > 0:
        return max(float(limit), DEFAULT_RUN_S) + BUSY_MARGIN_S
    return None
