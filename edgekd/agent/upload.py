"""How the client streams a file's bytes to the agent after `put` (docs/PROTOCOL.md, "Uploads").

- Clean links (TCP): one DATA frame of up to 1 MiB in flight; the reply comes back in well under a
  millisecond on loopback, so a window would add complexity for no throughput.
- Lossy links (serial): a window of small DATA frames in flight (selective repeat). Every chunk is
  answered on its own; the agent holds chunks that arrive ahead of a gap in memory until the gap is
  filled, and a chunk sent twice is harmless (same bytes, same offset). When the line goes quiet,
  every chunk still unanswered is sent again. The chunk size adapts to the damage rate, so a line
  that flips 1 % of its bytes still moves data at a useful rate.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from edgekd.agent.protocol import (
    AgentRequestError, Corrupt, ErrorCode, Frame, FrameType, LinkLost, OutFrame, data_head,
)
from edgekd.errors import AgentError

if TYPE_CHECKING:
    from edgekd.agent.client import AgentClient

Reader = Callable[[int, int], bytes]
Progress = Callable[[int, int], None]
WINDOW = 32
MIN_CHUNK = 64
MAX_ROUNDS_WITHOUT_PROGRESS = 200


def upload_stop_and_wait(client: "AgentClient", handle: int, size: int, have: int, read: Reader,
                         progress: Progress | None) -> dict:
    """One chunk in flight; the next one is read and encoded (CRC, MAC) while the agent stores this
    one, so the host's and the agent's work on the bytes overlap instead of taking turns."""
    state: dict = {}
    ahead: dict[int, tuple[int, OutFrame]] = {}  # offset -> (length, frame encoded for the next seq)
    stalled = 0  # answers in a row that moved nothing forward

    def encode(off: int) -> tuple[int, OutFrame]:
        n = min(client.chunk, size - off)
        return n, client.channel.prepare(FrameType.DATA, client.next_seq(), None, [data_head(handle, off), read(off, n)])

    while have < size or not state.get("complete"):
        if stalled > MAX_ROUNDS_WITHOUT_PROGRESS:
            raise LinkLost(f"upload to {client.url} made no progress: the agent answered {stalled} chunks in a row "
                           f"without taking any bytes (it has {have} of {size})")
        n, frame = ahead.pop(have, None) or encode(have)
        if frame.seq != client.next_seq():  # only if a request went out in between
            n, frame = encode(have)
        following = have + n

        def prepare_following() -> None:
            ahead.clear()
            if following < size:
                ahead[following] = encode(following)

        try:
            answer = client._exchange(FrameType.DATA, {}, [], None, prepared=frame, while_waiting=prepare_following)
        except AgentRequestError as err:
            if err.code != ErrorCode.OFFSET_MISMATCH.value:
                raise
            before, have = have, _reported_have(client, err.detail.get("have"), size)
            stalled = 0 if have > before else stalled + 1
            continue
        state = answer.header
        before, have = have, _reported_have(client, state.get("have", have + n), size)
        stalled = 0 if have > before or state.get("complete") else stalled + 1
        if progress:
            progress(have, size)
    return state


def _reported_have(client: "AgentClient", value: object, size: int) -> int:
    """The agent's count of bytes it holds, checked: an integer from 0 to the file's size."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= size:
        raise AgentError(f"the agent at {client.url} says it has {str(value)[:40]!r} bytes of a {size}-byte upload; "
                         "that is not a byte count of this file")
    return value


def upload_window(client: "AgentClient", handle: int, size: int, have: int, read: Reader,
                  progress: Progress | None) -> dict:
    ch = client.channel
    bps = client.transport.bytes_per_s
    chunk = min(client.chunk, 1024)
    outstanding: dict[int, tuple[int, int, OutFrame]] = {}  # seq -> (offset, length, frame)
    done: set[int] = set()  # offsets the agent has answered for
    acked_bytes = have
    next_off = have
    sent = answered = 0  # for the chunk-size adaptation
    complete: dict | None = None
    stalled = 0
    while complete is None:
        def send_new(off: int, n: int) -> None:
            nonlocal sent
            client._seq = seq = (client._seq + 1) & 0xFFFFFFFF
            frame = ch.prepare(FrameType.DATA, seq, None, [data_head(handle, off) + read(off, n)])
            outstanding[seq] = (off, n, frame)
            ch.send_out(frame, joined=True)
            sent += 1

        while len(outstanding) < WINDOW and next_off < size:
            n = min(chunk, size - next_off)
            send_new(next_off, n)
            next_off += n
        if not outstanding:
            raise LinkLost(f"the agent at {client.url} acknowledged every chunk but never reported the upload complete")
        # long enough for a whole window to cross the line and its answers to come back
        frame_len = next(iter(outstanding.values()))[2].size
        quiet = max(ch.quiet_s * 2, 0.005) + (3 * frame_len / bps if bps else 0.0)
        ev = ch.poll(quiet)
        if ev is None:  # quiet: whatever is unanswered was lost on the way (there or back)
            if ch.decoder.buffered:
                ch.decoder.drop_partial()  # not a frame after all: damaged bytes
            stalled += 1
            if stalled > MAX_ROUNDS_WITHOUT_PROGRESS or time.monotonic() - ch.last_rx > client.timeout:
                raise LinkLost(f"upload to {client.url} made no progress; the line is too noisy or down")
            # adapt: halve the chunk while most frames are lost, grow it while most arrive
            if sent >= 2 * WINDOW:
                rate = answered / sent
                sent = answered = 0
                if rate < 0.2 and chunk > MIN_CHUNK:
                    chunk = max(MIN_CHUNK, chunk // 2)
                    # resend what is unanswered in the new, smaller pieces
                    pending = sorted((off, n) for off, n, _ in outstanding.values())
                    outstanding.clear()
                    for off, n in pending:
                        for sub in range(off, off + n, chunk):
                            send_new(sub, min(chunk, off + n - sub))
                    continue
                if rate > 0.8:
                    chunk = min(client.transport.default_chunk, chunk * 2)
            for _, _, frame in outstanding.values():
                ch.send_out(frame, joined=True)
                sent += 1
                client.stats["resends"] += 1
            continue
        if isinstance(ev, Corrupt):
            if ev.seq in outstanding:  # the agent's answer was damaged: the chunk may be resent freely
                ch.send_out(outstanding[ev.seq][2], joined=True)
                sent += 1
                client.stats["resends"] += 1
            continue
        if not isinstance(ev, Frame) or ev.seq not in outstanding:
            continue  # garbage, a NAK for line noise, an old answer: the quiet rule covers them
        if ev.type == FrameType.NAK:
            ch.send_out(outstanding[ev.seq][2], joined=True)
            sent += 1
            continue
        if ev.type == FrameType.ERROR:
            h = dict(ev.header)
            code, message = str(h.pop("code", "?")), str(h.pop("message", "agent error"))
            if code == ErrorCode.OFFSET_MISMATCH.value:  # too far ahead for the agent to hold
                continue  # resent on the next quiet round, once the gap before it is filled
            raise AgentRequestError(code, f"agent at {client.url}: {message}", h)
        if ev.type != FrameType.REPLY:
            continue
        off, n, _ = outstanding.pop(ev.seq)
        answered += 1
        stalled = 0
        if off not in done:
            done.add(off)
            acked_bytes += n
        if ev.header.get("complete"):
            complete = ev.header
        if progress:
            progress(min(acked_bytes, size), size)
    client.chunk = chunk
    return complete
