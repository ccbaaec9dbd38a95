"""The agent runs on a device without torch or onnx: `edgekd agent` is started in a subprocess
where importing them is impossible, then the host uploads a real ONNX artifact and benchmarks it."""
from __future__ import annotations

import re
import subprocess
import sys
import threading

import pytest

from edgekd.agent.client import AgentClient
from edgekd.agent.protocol import AgentRequestError

from bench_models import make_eval_npz, make_onnx_artifact
from torchless import run_torchless, torchless_env

pytestmark = pytest.mark.timeout(90)
KEY = "torchless-agent-key-0123456789"
FAST = {"warmup_count": 2, "warmup_s": 0.0, "min_count": 20, "min_s": 0.05, "threads": 1}


def test_agent_modules_import_without_torch(tmp_path):
    proc = run_torchless(
        "import sys, edgekd.agent.server, edgekd.agent.client, edgekd.agent.handlers, edgekd.cli.agent_cmd\n"
        "from edgekd.agent.fingerprint import device_fingerprint; device_fingerprint()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'sklearn'))\n"
        "print('heavy:', bad)",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stdout


def test_agent_subprocess_without_torch_serves_bench_and_eval(tmp_path):
    art = make_onnx_artifact(tmp_path / "art")
    data = make_eval_npz(tmp_path / "eval.npz", n=19)
    env = torchless_env(tmp_path / "blocker")
    env["EDGEKD_AGENT_KEY"] = KEY
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekd", "agent", "--listen", "127.0.0.1:0", "--workdir", str(tmp_path / "store")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        m = re.search(r"tcp://\S+", line[0] if line else "")
        assert m, f"agent did not start: {proc.poll()} {line} {proc.stderr.read() if proc.poll() is not None else ''}"
        with AgentClient.connect(m.group(0), key=KEY, timeout=30) as agent:
            fp = agent.hello()["fingerprint"]
            assert "onnxruntime" in fp["runtimes"]
            aid, did = agent.put_artifact(art), agent.put_file(data)
            assert agent.bench(aid, FAST)["latency"]["count"] >= 20
            assert agent.eval(aid, did, {**FAST, "latency": False})["accuracy"]["count"] == 19
            # the accelerator a request names is the runtime's to accept: ONNX Runtime has no NPU
            assert agent.bench(aid, {**FAST, "accelerator": "cpu"})["settings"]["accelerator"] == "cpu"
            with pytest.raises(AgentRequestError, match="onnxruntime does not run on npu"):
                agent.bench(aid, {**FAST, "accelerator": "npu"})
            with pytest.raises(AgentRequestError, match="must be an accelerator name"):
                agent.bench(aid, {**FAST, "accelerator": "x" * 5000})
    finally:
        proc.terminate()
        proc.wait(timeout=10)
