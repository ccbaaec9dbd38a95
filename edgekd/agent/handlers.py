"""The agent's commands. Each takes (session, header, payload) and returns (reply header, payload).

Commands that need the shared key are refused with `unauthorized` until the session has passed the
challenge-response (auth.py). bench and eval call the measurement harness
(`edgekd.bench.measure.run_isolated`), which runs each model in a fresh runner process.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from edgekd import __version__
from edgekd.agent import auth
from edgekd.agent.fingerprint import device_fingerprint
from edgekd.agent.protocol import (
    MAX_HEADER, PROTOCOL_VERSION, AgentRequestError, ErrorCode, Frame, FrameType, decode_data,
)

if TYPE_CHECKING:
    from edgekd.agent.server import Session

Handler = Callable[["Session", dict[str, Any], bytes], Any]  # -> header dict, or (header, payload)
COMMANDS: dict[str, tuple[Handler, bool]] = {}  # name -> (handler, needs auth)


def command(name: str, *, needs_auth: bool = True) -> Callable[[Handler], Handler]:
    def add(fn: Handler) -> Handler:
        COMMANDS[name] = (fn, needs_auth)
        return fn

    return add


def _bad(message: str) -> AgentRequestError:
    return AgentRequestError(ErrorCode.BAD_REQUEST.value, message)


def _field(header: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = header.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _bad(f"request field {name!r} is missing or not a {getattr(kind, '__name__', kind)}")
    return value


def dispatch(session: "Session", frame: Frame) -> tuple[dict[str, Any], bytes]:
    if frame.type == FrameType.DATA:
        if not session.authed:
            raise AgentRequestError(ErrorCode.UNAUTHORIZED.value, "authenticate first (challenge + auth)")
        try:
            handle, offset, chunk = decode_data(frame.payload)
        except ValueError as err:
            raise _bad(str(err)) from None
        reply = session.agent.store.append(handle, offset, chunk)
        # the common case (stored, more to come) answers with an empty header: fewer bytes on noisy
        # lines; otherwise the header says how much the agent has
        normal = reply.get("held") or reply == {"have": offset + len(chunk)}
        return ({} if normal else reply), b""
    cmd = frame.header.get("cmd")
    entry = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if entry is None:
        raise AgentRequestError(ErrorCode.UNKNOWN_COMMAND.value, f"unknown command {str(cmd)[:40]!r}; known: {', '.join(sorted(COMMANDS))}")
    handler, needs_auth = entry
    if needs_auth and not session.authed:
        raise AgentRequestError(ErrorCode.UNAUTHORIZED.value, f"command {cmd!r} needs authentication first (challenge + auth with the shared key)")
    result = handler(session, frame.header, frame.payload)
    return result if isinstance(result, tuple) else (result, b"")


@command("ping", needs_auth=False)
def ping(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return {"time": time.time()}


@command("fetch", needs_auth=False)
def fetch(session: "Session", header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
    """A piece of the last stashed answer (lossy links; the stash holds only this session's answer)."""
    off, n = _field(header, "off", int), _field(header, "n", int)
    if off < 0 or n < 0 or off > len(session.stash):
        raise _bad(f"fetch range {off}+{n} is outside the stashed answer of {len(session.stash)} bytes")
    return {}, session.stash[off:off + min(n, 4096)]


def _not_twice(session: "Session", cmd: str) -> None:
    if session.channel.mac is not None:
        raise _bad(f"{cmd!r}: this session is already authenticated; `bye` ends it, then start a new one")


@command("challenge", needs_auth=False)
def challenge(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    _not_twice(session, "challenge")
    session.end_host_session("new handshake")  # a new host on the line: nothing of the old one survives
    session.nonce = auth.new_nonce()
    return {"nonce": session.nonce, "auth_required": session.agent.key is not None,
            "protocol": PROTOCOL_VERSION, "agent": __version__}


@command("auth", needs_auth=False)
def authenticate(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    key = session.agent.key
    if key is None:
        raise _bad("this agent has no key (loopback only); connect without one")
    _not_twice(session, "auth")
    agent_nonce, session.nonce = session.nonce, None  # one attempt per challenge
    host_nonce = header.get("nonce")
    if agent_nonce is None or not auth.is_nonce(host_nonce):
        raise _bad("auth needs a fresh challenge first and a 64-hex-digit 'nonce'")
    if not auth.verify(auth.host_proof(key, agent_nonce, host_nonce), header.get("proof")):
        session.authed = False
        raise AgentRequestError(ErrorCode.AUTH_FAILED.value, "wrong key: the agent rejected the host's proof; use the same key on both sides (--key-file or EDGEKD_AGENT_KEY)")
    session.authed = True
    # the session loop turns the per-frame MAC on once this (plain) answer is out
    session.pending_keys = auth.session_keys(key, agent_nonce, host_nonce)
    return {"proof": auth.agent_proof(key, agent_nonce, host_nonce)}


@command("hello")
def hello(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return {
        "agent": __version__,
        "protocol": PROTOCOL_VERSION,
        "fingerprint": device_fingerprint(),
        "limits": {"max_payload": session.agent.max_payload, "max_header": MAX_HEADER,
                   **session.agent.limits.to_dict()},
        "store": session.agent.store.stats(),
        "commands": sorted(COMMANDS),
    }


@command("put")
def put(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return session.agent.store.begin(_field(header, "sha256", str), _field(header, "size", int), owner=session)


@command("bundle")
def bundle(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return {"artifact": session.agent.store.bundle(header.get("files"))}


@command("delete")
def delete(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return {"deleted": session.agent.store.delete(header.get("id"))}


def _measure(session: "Session", artifact: Any, request: dict[str, Any]) -> dict[str, Any]:
    artifact_dir = session.agent.store.artifact_dir(artifact)
    from edgekd.bench.measure import run_isolated  # numpy + stdlib; the runtime loads in the child

    return _in_slot(session, request, lambda req: {"result": _plain(run_isolated(artifact_dir, req,
                                                                                 cancel=session.cancelled))})


def _in_slot(session: "Session", request: dict[str, Any], run: Callable[[dict[str, Any]], dict[str, Any]]
             ) -> dict[str, Any]:
    """`run(request)` holding the agent's one measurement slot, the request range-checked first."""
    from edgekd.bench.measure import MeasurementError, normalize_request

    request = normalize_request(request)  # range-checked before it waits for the slot
    lock = session.agent.measure_lock
    # two measurements at once would disturb each other; a client that leaves while waiting for the
    # slot, or while its measurement runs, gives it up (the runner child is killed)
    session.queued = True  # its BUSY keep-alives say so: the host's bound on a run does not tick yet
    try:
        while not lock.acquire(timeout=0.05):
            if session.cancelled.is_set():
                raise MeasurementError("the client left before the measurement started")
    finally:
        session.queued = False
    try:
        return run(request)
    finally:
        lock.release()


def _many_dirs(session: "Session", artifacts: Any) -> list[Any]:
    """The artifact folders a `bench_many` names: a list of 1 to MAX_MANY distinct uploaded ids."""
    from edgekd.bench.measure import MAX_MANY

    if not isinstance(artifacts, list) or not 1 <= len(artifacts) <= MAX_MANY:
        raise _bad(f"'artifacts' must be a list of 1 to {MAX_MANY} artifact ids")
    if len(set(map(str, artifacts))) != len(artifacts):
        raise _bad("'artifacts' names an artifact twice; list each once")
    return [session.agent.store.artifact_dir(a) for a in artifacts]


def _plain(obj: Any) -> Any:
    """Strict JSON: NaN and infinities (not JSON) become null."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _request(header: dict[str, Any]) -> dict[str, Any]:
    request = header.get("request") or {}
    if not isinstance(request, dict):
        raise _bad("'request' must be a JSON object of benchmark settings")
    if "data" in request:
        # no host-chosen paths on the device: evaluation data is an uploaded file named by sha256
        raise _bad("'data' cannot be a path; upload the .npz with put and use the eval command with its id")
    return dict(request)


@command("bench")
def bench(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    return _measure(session, header.get("artifact"), _request(header))


@command("bench_many")
def bench_many(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    """Several artifacts measured one after another in one runner process per runtime (latency; no
    per-model memory): `{"results": [{"ok": true, "result": ...} | {"ok": false, "error": {type, message}}]}`."""
    from edgekd.bench.measure import run_isolated_many
    from edgekd.errors import EdgeKDError

    dirs = _many_dirs(session, header.get("artifacts"))

    def run(request: dict[str, Any]) -> dict[str, Any]:
        out = run_isolated_many(dirs, request, cancel=session.cancelled)
        return {"results": [{"ok": False, "error": {"type": type(r).__name__, "message": str(r)}}
                             if isinstance(r, EdgeKDError) else {"ok": True, "result": _plain(r)} for r in out]}

    return _in_slot(session, _request(header), run)


@command("eval")
def evaluate(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    request = _request(header)
    request["data"] = str(session.agent.store.blob_path(header.get("data")))
    request.setdefault("accuracy", True)
    return _measure(session, header.get("artifact"), request)


@command("bye", needs_auth=False)
def bye(session: "Session", header: dict[str, Any], payload: bytes) -> dict[str, Any]:
    session.close_after_reply = True
    session.end_host_session("bye")
    return {}
