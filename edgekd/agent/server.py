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
    idle_timeout_s: float = 600.0  # a TCP session silent this long is closed
    measure_lock: threading.Lock = field(default_factory=threading.Lock)  # one measurement at a time


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
        self.stash = b""  # the last long answer, fetched in pieces on lossy links
        self._closed = threading.Event()

    # ---- loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        heartbeat = threading.Thread(target=self._heartbeat, name="edgekd-agent-keepalive", daemon=True)
        heartbeat.start()
        ch = self.channel
        garbage = 0
        try:
            while not self._closed.is_set():
                ev = ch.poll(ch.quiet_s if garbage else 0.2)
                if ev is None:
                    now = time.monotonic()
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
                    elif not self.persistent and now - ch.last_rx > self.agent.idle_timeout_s:
                        log.info("closing idle session %s", ch.transport.description)
                        break
                    continue
                if isinstance(ev, Garbage):
                    garbage += ev.nbytes
                    continue
                self._on_event(ev)
        except FrameRejected as err:
            log.warning("%s: %s", ch.transport.description, err)
        except LinkLost as err:
            log.info("session ended: %s", err)
        finally:
            self._closed.set()
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
            reply = self._execute(ev)
            if ch.transport.lossy and reply.size > LOSSY_MAX_REPLY and ev.header.get("cmd") != "fetch" and not reply.payload:
                # a long answer would rarely cross a noisy line whole: keep it here and let the
                # host fetch it in small pieces, each one checked and resent on its own. The stash
                # is the frame type + JSON header, never a whole frame: a frame inside a payload
                # could be taken for a real one by a reader resynchronising after damage.
                self.stash = bytes([reply.type]) + json.dumps(reply.header, separators=(",", ":")).encode()
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
            if busy and now - busy[1] >= interval and now - last_sent >= interval:
                try:
                    self.channel.send(FrameType.BUSY, busy[0])
                    last_sent = now
                except LinkLost:
                    return


def serve_tcp(agent: AgentConfig, sock: socket.socket, stop: threading.Event | None = None) -> None:
    """Accept connections on a listening socket until `stop` is set; one thread per session."""
    from edgekd.agent.transports.tcp import TcpTransport

    stop = stop or threading.Event()
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, peer = sock.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        log.info("connection from %s:%s", peer[0], peer[1])
        session = Session(agent, TcpTransport(conn, f"tcp://{peer[0]}:{peer[1]}"))
        threading.Thread(target=session.run, name="edgekd-agent-session", daemon=True).start()
    sock.close()


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
