"""`python -m edgekd.bench.runner_process`: measure ONE artifact (or a list, one after another) in
this fresh process.

Reads `{"artifact_dir": ..., "request": {...}}` as JSON on stdin, writes one JSON line on stdout:
`{"ok": true, "result": {...}}` or `{"ok": false, "error": {"type": <EdgeKDError subclass name>,
"message": ...}}`. The parent (`edgekd.bench.measure.run_isolated`) reads this process's peak RSS from
the kernel when it reaps it, so the figure belongs to this model alone.

With `{"artifact_dirs": [...], "request": {...}}` instead (`edgekd.bench.measure.run_isolated_many`)
it measures each in turn, in this one process, and replies `{"ok": true, "results": [<one reply per
artifact, as above>]}`: one artifact's failure is its own entry, the others are still measured. No
per-model peak RSS then (`memory.peak_rss_bytes` null): the process held every model in turn.

Runtimes sometimes print to stdout (C++ logging); file descriptor 1 is pointed at stderr before
anything is loaded and the reply goes to a private duplicate of the real stdout, so the reply
line can never be interleaved with library chatter.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def main() -> int:
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # anything the runtime prints now lands on stderr
    sys.stdout = sys.stderr
    reply: dict[str, Any]
    try:
        job = json.loads(sys.stdin.read())
        if "artifact_dirs" in job:
            reply = {"ok": True, "results": [_one(d, job.get("request") or {}, shared=True) for d in job["artifact_dirs"]]}
        else:
            reply = _one(job["artifact_dir"], job.get("request") or {})
        code = 0 if reply["ok"] else 1
    except Exception as err:  # every failure must come back as a reply, never as a silent exit
        reply = _failure(err)
        code = 1
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(reply, default=str) + "\n")
    return code


def _failure(err: Exception) -> dict[str, Any]:
    from edgekd.errors import EdgeKDError

    if isinstance(err, EdgeKDError):
        return {"ok": False, "error": {"type": type(err).__name__, "message": str(err)}}
    traceback.print_exc()
    return {"ok": False, "error": {"type": "MeasurementError", "message": f"{type(err).__name__}: {err}"}}


def _one(artifact_dir: str, request: dict[str, Any], shared: bool = False) -> dict[str, Any]:
    """One artifact's reply; `shared`: measured with others in this process (no per-model peak RSS)."""
    from edgekd.bench.measure import measure_artifact

    try:
        result = measure_artifact(artifact_dir, request)
    except Exception as err:  # one model's failure is its own reply
        return _failure(err)
    if shared:
        result["memory"] = {"peak_rss_bytes": None, "isolated": False, "shared_process": True}
    return {"ok": True, "result": result}


if __name__ == "__main__":
    sys.exit(main())
