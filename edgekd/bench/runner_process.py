"""`python -m edgekd.bench.runner_process`: measure ONE artifact in this fresh process.

Reads `{"artifact_dir": ..., "request": {...}}` as JSON on stdin, writes one JSON line on stdout:
`{"ok": true, "result": {...}}` or `{"ok": false, "error": {"type": <EdgeKDError subclass name>,
"message": ...}}`. The parent (`edgekd.bench.measure.run_isolated`) reads this process's peak RSS from
the kernel when it reaps it, so the figure belongs to this model alone.

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
        from edgekd.bench.measure import measure_artifact

        result = measure_artifact(job["artifact_dir"], job.get("request") or {})
        reply = {"ok": True, "result": result}
        code = 0
    except Exception as err:  # every failure must come back as a reply, never as a silent exit
        from edgekd.errors import EdgeKDError

        if isinstance(err, EdgeKDError):
            reply = {"ok": False, "error": {"type": type(err).__name__, "message": str(err)}}
        else:
            traceback.print_exc()
            reply = {"ok": False, "error": {"type": "MeasurementError",
                                            "message": f"{type(err).__name__}: {err}"}}
        code = 1
    with os.fdopen(reply_fd, "w", encoding="utf-8") as out:
        out.write(json.dumps(reply, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
