"""The agent on an emulated arm64 Debian (Raspberry Pi class), benched from this x86 host over TCP.

Skipped unless EDGEKD_ARM64=1 (set by scripts/test_arm64.sh, which prepares the root file system).
The emulated agent evaluates an .onnx and a .tflite artifact exported here; its accuracy and its
predictions must equal the x86 ones (same model, same data, runtimes built for another CPU).
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import threading
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.arm64,
    pytest.mark.skipif(os.environ.get("EDGEKD_ARM64") != "1", reason="needs the emulated arm64 rootfs: run scripts/test_arm64.sh"),
]
ARM64 = os.environ.get("ARM64_TOOL", "/work/shared/tools/arm64")
FAST = {"warmup_count": 1, "warmup_s": 0.0, "min_count": 3, "min_s": 0.0, "threads": 1}


@pytest.fixture(scope="module")
def arm64_agent(tmp_path_factory):
    key = secrets.token_hex(32)
    keyfile = tmp_path_factory.mktemp("arm64") / "agent.key"
    keyfile.write_text(key)
    subprocess.run([ARM64, "copy", str(keyfile), "/work/agent.key"], check=True, timeout=120)
    proc = subprocess.Popen(
        [ARM64, "run", "python", "-m", "edgekd", "agent", "--listen", "127.0.0.1:0", "--key-file", "/work/agent.key",
         "--workdir", "/work/agent-store"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(300)  # emulated start-up is slow
    m = re.search(r"tcp://\S+", line[0] if line else "")
    if not m:
        proc.kill()
        pytest.fail(f"the arm64 agent did not start: {proc.stderr.read() if proc.poll() is not None else 'no output'}")
    yield m.group(0), key
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


@pytest.mark.timeout(1800)
def test_arm64_agent_benches_onnx_and_tflite_like_x86(arm64_agent, tiny_teacher_ckpt, tmp_path):
    from edgekd import api
    from edgekd.agent.client import AgentClient
    from edgekd.bench.measure import measure_artifact

    from bench_models import make_eval_npz

    url, key = arm64_agent
    report = api.export(str(tiny_teacher_ckpt), str(tmp_path / "export"), formats=["onnx", "tflite"], precisions=["fp32"])
    artifacts = [Path(r["artifact"]) for r in report["rows"] if r.get("status") == "ok" and r.get("artifact")]
    assert len(artifacts) == 2, report
    data = make_eval_npz(tmp_path / "eval.npz", n=40)
    with AgentClient.connect(url, key=key, timeout=600) as agent:
        fp = agent.hello()["fingerprint"]
        assert fp["arch"] == "aarch64" and {"onnxruntime", "litert"} <= set(fp["runtimes"])
        did = agent.put_file(data)
        for art in artifacts:
            aid = agent.put_artifact(art)
            remote = agent.eval(aid, did, {**FAST, "latency": True}, timeout=900)
            local = measure_artifact(art, {**FAST, "latency": False, "data": str(data)})
            assert remote["accuracy"] == local["accuracy"], art.name
            assert remote["latency"]["count"] >= 3
