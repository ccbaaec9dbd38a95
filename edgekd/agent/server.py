"""The device side: one `Session` per link runs the request loop; `serve_tcp` / `serve_serial` /
`TcpAgentServer` hand links to sessions. Commands live in handlers.py.

Rules the loop keeps (docs/PROTOCOL.md): every REQUEST/DATA frame gets exactly one REPLY or ERROR
with the same seq; a repeated seq gets the cached answer again (a resend never runs a command
twice); a damaged frame gets a NAK; garbage gets a NAK once the line is quiet; a frame that stops
mid-way gets a `truncated` ERROR; a long command sends BUSY keep-alives; nothing a peer sends can
stop the loop: every bad request is answered with an ERROR and the agent keeps serving.

In a keyed session every frame after `auth` is authenticated (frame_auth.py); a frame that fails
raises FrameRejected out of the channel: it is logged and the session ends (TCP: the connection
closes; serial: the line starts a fresh, unauthenticated session).
"""
from __future__ import annotations

import errno
import itertools
import json
import logging
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgekd.agent.auth import SessionKeys
from edgekd.agent.channel import Channel
from edgekd.agent.frame_auth import FrameRejected
from edgekd.agent.limits import AgentLimits, SlotCounter
from edgekd.agent.protocol import (
    DEFAULT_MAX_PAYLOAD, AgentRequestError, BadFrame, Corrupt, ErrorCode, Frame, FrameType, Garbage,
    PROTOCOL_VERSION, LinkLost, OutFrame, ProtocolError,
)
from edgekd.agent.storage import ContentStore
from edgekd.agent.transports import Transport
from edgekd.errors import EdgeKDError

log = logging.getLogger("edgekd.agent")
LOSSY_MAX_REPLY = 160  # bytes; longer answers on lossy links are stashed and fetched in pieces


@dataclass
class AgentConfig:
    """Everything an agent process shares between its sessions."""

    store: ContentStore
    key: bytes | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    keepalive_s: float = 1.0  # BUSY interval while a command runs
    truncate_s: float = 2.0  # silence mid-frame after which the partial frame is dropped
    idle_timeout_s: float | None = None  # deprecated alias of limits.idle_s (kept for callers)
    limits: AgentLimits = field(default_factory=AgentLimits)
    measure_lock: threading.Lock = field(default_factory=threading.Lock)  # one measurement at a time

    def __post_init__(self) -> None:
        if self.idle_timeout_s is not None:
            import dataclasses

            self.limits = dataclasses.replace(self.limits, idle_s=float(self.idle_timeout_s))
        self.idle_timeout_s = self.limits.idle_s
        self.connections = SlotCounter(self.limits.max_connections)
        store = self.store
        # the store enforces the memory and file limits on behalf of the sessions
        store.held_budget.cap = self.limits.max_held_bytes
        store.max_uploads_per_owner = self.limits.max_uploads_per_session


_session_ids = itertools.count(1)
_warned: dict[str, list[float]] = {}  # kind -> [last time logged, events since]
_warn_lock = threading.Lock()


def warn_limited(kind: str, message: str, *args: Any) -> None:
    """log.warning, at most once a second per kind (a flood of refusals must not become a flood of
    log lines); the next line says how many were not logged."""
    now = time.monotonic()
    with _warn_lock:
        last, skipped = _warned.get(kind, (0.0, 0))
        if now - last < 1.0:
            _warned[kind] = [last, skipped + 1]
            return
        _warned[kind] = [now, 0]
    log.warning(message + (f" ({skipped} more like it not logged)" if skipped else ""), *args)


class Session:
    """The request loop over one link (one TCP connection, or a serial line for its whole life)."""

    def __init__(self, agent: AgentConfig, transport: Transport, *, persistent: bool = False) -> None:
        self.agent = agent
        self.channel = Channel(transport, agent.max_payload)
        self.persistent = persistent  # serial: `bye` ends the host's session, not the loop
        self.authed = agent.key is None
        self.nonce: str | None = None
        self.close_after_reply = False
        self._last_seq: int | None = None
        self._last_reply: OutFrame | None = None
        self.pending_keys: SessionKeys | None = None  # set by a successful `auth`; MAC on once answered
        self._busy: tuple[int, float] | None = None
        self.queued = False  # the running request waits for the measurement slot (BUSY says so)
        self.stash = b""  # the last long answer, fetched in pieces on lossy links
        self._closed = threading.Event()
        # set when the peer is gone while a command runs: a measurement stops and frees its slot
        self.cancelled = threading.Event()
        self.id = next(_session_ids)
        self.started = time.monotonic()
        self.last_frame = self.started  # last complete frame: only whole frames count as activity
        self._set_preauth_limits()

    def _set_preauth_limits(self) -> None:
        """Before authentication a peer gets small frames and small reads; after, the full limits."""
        limits = self.agent.limits
        if self.authed:
            self.channel.decoder.max_payload = self.agent.max_payload
            self.channel.decoder.max_frame = None
            self.channel.read_size = None
        else:
            self.channel.decoder.max_payload = min(limits.preauth_max_frame, self.agent.max_payload)
            # the header counts too: a 1 MiB header (MAX_HEADER) must not pass as a small frame
            self.channel.decoder.max_frame = limits.preauth_max_frame
            self.channel.read_size = limits.preauth_max_frame

    def end_host_session(self, why: str) -> None:
        """The host is gone (bye, line dropped, idle, new handshake): forget everything it had."""
        if self.agent.key is not None and self.authed:
            log.info("host session on %s ended: %s", self.channel.transport.description, why)
        self.authed = self.agent.key is None
        self.nonce = None
        self.stash = b""
        self._last_seq, self._last_reply = None, None
        self.agent.store.release(self)
        self._set_preauth_limits()

    # ---- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        heartbeat = threading.Thread(target=self._heartbeat, name="edgekd-agent-keepalive", daemon=True)
        heartbeat.start()
        ch = self.channel
        limits = self.agent.limits
        garbage = 0
        preauth_garbage = 0
        carrier: bool | None = None
        try:
            while not self._closed.is_set():
                ev = ch.poll(ch.quiet_s if garbage else 0.2)
                now = time.monotonic()
                if not self.persistent and not self.authed and now - self.started > limits.preauth_s:
                    warn_limited("preauth", "closing %s: not authenticated within %.1f s", ch.transport.description, limits.preauth_s)
                    break
                # checked on silence and on noise alike (bytes are not frames); a frame that arrives is activity
                if not isinstance(ev, Frame) and now - self.last_frame > limits.idle_s:
                    if not self.persistent:
                        log.info("closing idle session %s", ch.transport.description)
                        break
                    if self.authed and self.agent.key is not None:
                        self.end_host_session(f"no frame for {limits.idle_s:.0f} s")
                        ch.stop_mac()  # the host is gone: the next one starts plain, with a new handshake
                if ev is None:
                    if ch.decoder.buffered and now - ch.last_rx > self.agent.truncate_s:
                        for dropped in ch.decoder.drop_partial():
                            if isinstance(dropped, Garbage):
                                garbage += dropped.nbytes
                            else:
                                self._on_event(dropped)
                    if garbage:
                        # the line went quiet after damage: ask for whatever the host sent last
                        expected = 0 if self._last_seq is None else (self._last_seq + 1) & 0xFFFFFFFF
                        ch.send(FrameType.NAK, expected, {"garbage": garbage})
                        garbage = 0
                    if self.persistent:
                        now_carrier = ch.transport.carrier()
                        if carrier is True and now_carrier is False:
                            self.end_host_session("carrier lost")
                            ch.stop_mac()
                        carrier = now_carrier
                    continue
                if isinstance(ev, Garbage):
                    garbage += ev.nbytes
                    if not self.authed and not ch.transport.lossy:
                        preauth_garbage += ev.nbytes
                        if preauth_garbage > limits.preauth_garbage:
                            # a clean link (TCP) never damages bytes: this much noise before auth is abuse
                            warn_limited("garbage", "closing %s: %d bytes of non-frames before authentication",
                                         ch.transport.description, preauth_garbage)
                            break
                    continue
                self.last_frame = now
                self._on_event(ev)
                self.last_frame = time.monotonic()  # a long command is activity, not idleness
        except FrameRejected as err:
            log.warning("%s: %s", ch.transport.description, err)
        except LinkLost as err:
            log.info("session ended: %s", err)
        except Exception:  # a bug or a resource error (MemoryError, EMFILE): end this session only
            log.error("session %s ended by an error:\n%s", ch.transport.description, traceback.format_exc())
        finally:
            self._closed.set()
            self.cancelled.set()
            self.agent.store.release(self)
            ch.close()

    def stop(self) -> None:
        self._closed.set()

    def _on_event(self, ev: Frame | Corrupt | BadFrame) -> None:
        ch = self.channel
        if isinstance(ev, Corrupt):
            ch.send(FrameType.NAK, ev.seq)
        elif isinstance(ev, BadFrame):
            # an older peer is refused in its own version, so it can read why (a newer one reads ours)
            older = ev.code == ErrorCode.BAD_VERSION.value and 1 <= ev.version < PROTOCOL_VERSION
            ch.send(FrameType.ERROR, ev.seq, {"code": ev.code, "message": ev.message}, **({"version": ev.version} if older else {}))
        elif ev.type in (FrameType.REQUEST, FrameType.DATA):
            if ev.seq == self._last_seq and self._last_reply is not None:
                ch.send_out(self._last_reply)  # a resend: answer again, never run it twice
                return
            was_authed = self.authed
            reply = self._execute(ev)
            if self.authed != was_authed:
                self._set_preauth_limits()
            if ch.transport.lossy and reply.size > LOSSY_MAX_REPLY and ev.header.get("cmd") != "fetch" and not reply.payload:
                # a long answer would rarely cross a noisy line whole: keep it here and let the
                # host fetch it in small pieces, each one checked and resent on its own. The stash
                # is the frame type + JSON header, never a whole frame: a frame inside a payload
                # could be taken for a real one by a reader resynchronising after damage.
                self.stash = bytes([reply.type]) + json.dumps(reply.header, separators=(",", ":"), allow_nan=False).encode()
                reply = ch.prepare(FrameType.REPLY, ev.seq, {"stashed": len(self.stash)})
            self._last_seq, self._last_reply = ev.seq, reply
            ch.send_out(reply)
            if self.pending_keys is not None:  # `auth` succeeded and its (plain) answer is out
                ch.start_mac(self.pending_keys, "agent", grace_seq=ev.seq)
                self.pending_keys = None
            if self.close_after_reply:
                self.close_after_reply = False
                if ch.mac is not None:  # the host's authenticated session is over
                    ch.stop_mac()
                    self._last_seq = self._last_reply = None
                if not self.persistent:
                    self._closed.set()
        elif ev.type == FrameType.NAK:
            if ev.seq == self._last_seq and self._last_reply is not None:
                ch.send_out(self._last_reply)
            else:  # the host missed our answer to something we never received: ask for it
                ch.send(FrameType.NAK, ev.seq)
        else:
            ch.send(FrameType.ERROR, ev.seq, {"code": ErrorCode.BAD_REQUEST.value,
                                              "message": f"the agent accepts REQUEST, DATA and NAK frames, not {FrameType(ev.type).name}"})

    def _execute(self, frame: Frame) -> OutFrame:
        from edgekd.agent.handlers import dispatch

        self._busy = (frame.seq, time.monotonic())
        try:
            header, payload = dispatch(self, frame)
            return self.channel.prepare(FrameType.REPLY, frame.seq, header, (payload,) if payload else ())
        except AgentRequestError as err:
            return self._error(frame.seq, err.code, str(err), err.detail)
        except (ProtocolError, EdgeKDError) as err:
            return self._error(frame.seq, ErrorCode.FAILED.value, str(err), {"error_type": type(err).__name__})
        except (OSError, MemoryError) as err:  # out of descriptors, memory or disk: refuse this one request
            log.warning("request %s refused for lack of resources: %s", frame.header.get("cmd", "DATA"), err)
            return self._error(frame.seq, ErrorCode.FAILED.value,
                               f"the agent is short of resources ({type(err).__name__}: {err}); retry later",
                               {"error_type": type(err).__name__})
        except Exception as err:  # a bug: report it, keep serving
            log.error("command failed with a bug:\n%s", traceback.format_exc())
            return self._error(frame.seq, ErrorCode.INTERNAL.value, f"agent bug: {type(err).__name__}: {err}", {})
        finally:
            self._busy = None

    def _error(self, seq: int, code: str, message: str, detail: dict[str, Any]) -> OutFrame:
        header = {**{k: v for k, v in detail.items() if k not in ("code", "message")}, "code": code, "message": message}
        try:
            return self.channel.prepare(FrameType.ERROR, seq, header)
        except ProtocolError:
            return self.channel.prepare(FrameType.ERROR, seq, {"code": code, "message": message[:2000]})

    def _heartbeat(self) -> None:
        interval = self.agent.keepalive_s
        last_sent = 0.0
        while not self._closed.wait(interval / 4):
            busy = self._busy
            now = time.monotonic()
            if busy and self.channel.transport.peer_closed():
                log.info("peer %s left while request %d ran: cancelling it", self.channel.transport.description, busy[0])
                self.cancelled.set()
            if busy and now - busy[1] >= interval and now - last_sent >= interval:
                try:
                    self.channel.send(FrameType.BUSY, busy[0], {"queued": 1} if self.queued else None)
                    last_sent = now
                except LinkLost:
                    self.cancelled.set()
                    return


_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def serve_tcp(agent: AgentConfig, sock: socket.socket, stop: threading.Event | None = None) -> None:
    """Accept connections on a listening socket until `stop` is set; one thread per session.

    Never ends for lack of resources: when the process is out of file descriptors (or memory, or
    threads) the connection in hand is refused, the event is logged, and accepting goes on. At most
    `limits.max_connections` sessions run at once; a connection beyond that is closed at once.
    """
    from edgekd.agent.transports.tcp import TcpTransport

    stop = stop or threading.Event()
    sock.settimeout(0.2)
    warned = 0.0
    while not stop.is_set():
        try:
            conn, peer = sock.accept()
        except socket.timeout:
            continue
        except OSError as err:
            if err.errno in _RESOURCE_ERRNOS or isinstance(err, (ConnectionAbortedError, ConnectionResetError)):
                if time.monotonic() - warned > 5.0:
                    log.warning("cannot accept a connection (%s); still serving, retrying", err)
                    warned = time.monotonic()
                stop.wait(0.05)
                continue
            if stop.is_set() or sock.fileno() < 0:
                break
            log.warning("accept failed (%s); still serving", err)
            stop.wait(0.05)
            continue
        if not agent.connections.enter():
            warn_limited("connections", "refusing %s:%s: %d connections already (--max-connections)", peer[0], peer[1],
                         agent.connections.cap)
            _close_quietly(conn)
            continue
        log.info("connection from %s:%s", peer[0], peer[1])
        try:
            session = Session(agent, TcpTransport(conn, f"tcp://{peer[0]}:{peer[1]}"))
            threading.Thread(target=_run_counted, args=(agent, session), name="edgekd-agent-session", daemon=True).start()
        except (OSError, RuntimeError, MemoryError) as err:  # no thread or memory left for one more
            agent.connections.leave()
            log.warning("refusing %s:%s for lack of resources (%s)", peer[0], peer[1], err)
            _close_quietly(conn)
    sock.close()


def _run_counted(agent: AgentConfig, session: Session) -> None:
    try:
        session.run()
    finally:
        agent.connections.leave()


def _close_quietly(conn: socket.socket) -> None:
    try:
        conn.close()
    except OSError:
        pass


def serve_serial(agent: AgentConfig, port: str, baud: int, stop: threading.Event | None = None,
                 on_ready: Callable[[str], None] | None = None) -> None:
    """Serve one serial line for ever; reopen it when the device goes away (a USB gadget unplugged)."""
    from edgekd.agent.transports.serial import SerialTransport, open_serial_port

    stop = stop or threading.Event()
    while not stop.is_set():
        try:
            transport = SerialTransport(open_serial_port(port, baud), port, baud)
        except EdgeKDError as err:
            log.warning("%s; retrying in 1 s", err)
            stop.wait(1.0)
            continue
        if on_ready:
            on_ready(f"serial://{port}?baud={baud}")
            on_ready = None
        session = Session(agent, transport, persistent=True)
        watcher = threading.Thread(target=lambda: (stop.wait(), session.stop()), daemon=True)
        watcher.start()
        session.run()
        stop.wait(0.5)


class TcpAgentServer:
    """An agent serving TCP from a background thread of this process (tests, embedding)."""

    def __init__(self, workdir: str | Path, *, key: bytes | None = None, host: str = "127.0.0.1",
                 port: int = 0, quota_bytes: int = 1 << 30, **config: Any) -> None:
        from edgekd.agent.transports.tcp import listen_tcp

        self.agent = AgentConfig(store=ContentStore(workdir, quota_bytes), key=key, **config)
        self.store = self.agent.store
        self._sock = listen_tcp(host, port)
        self.url = f"tcp://{host}:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=serve_tcp, args=(self.agent, self._sock, self._stop), daemon=True)

    def __enter__(self) -> "TcpAgentServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
