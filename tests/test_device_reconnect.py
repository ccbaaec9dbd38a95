"""A deploy distills on the host between device calls for longer than the agent's idle limit (a
mnist10k deploy: ~15 min of distilling between the teacher's measurement and round 1; the agent closes a
session idle for `--idle-seconds`, 600 s by default). The host's device must survive that: found by
running the real deploy, whose round 1 ended 'closed the connection'. Here with a real agent
subprocess and an idle limit of 1 s."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from edgekd.bench.devices import AgentDevice

REPO = Path(__file__).resolve().parents[1]
KEY = b"k" * 32
FAST = {"threads": 1, "batch": 1, "warmup_count": 2, "warmup_s": 0.0, "min_count": 5, "min_s": 0.0}


def test_device_calls_survive_the_agent_closing_an_idle_session(tmp_path, runtime_artifacts):
    art = runtime_artifacts("onnxruntime")
    env = dict(os.environ, EDGEKD_AGENT_KEY=KEY.decode(), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "agent", "--listen", "127.0.0.1:0",
                             "--workdir", str(tmp_path / "store"), "--idle-seconds", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        url = proc.stdout.readline().decode().split("listening on ", 1)[1].strip()
        dev = AgentDevice(url, key=KEY.decode())
        try:
            assert dev.bench(art, FAST)["latency"]["count"] >= 5
            first_client = dev.client
            time.sleep(1.6)  # host work longer than the agent's idle limit
            assert dev.bench(art, FAST)["latency"]["count"] >= 5  # reconnected, not "closed the connection"
            assert dev.client is not first_client
        finally:
            dev.close()
        assert proc.poll() is None, "the agent must keep serving"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
