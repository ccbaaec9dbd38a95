"""The agent over a real pseudo-terminal pair opened through pyserial (as on /dev/ttyGS0 <-> /dev/ttyACM0)."""
from __future__ import annotations

import os

import pytest

from edgekd.agent.client import AgentClient
from edgekd.agent.protocol import AgentRequestError

from agent_links import serial_agent
from bench_models import make_onnx_artifact

pytestmark = pytest.mark.timeout(60)
KEY = b"serial-line-test-key-0123456789"
FAST = {"warmup_count": 2, "warmup_s": 0.0, "min_count": 20, "min_s": 0.05}


def test_hello_upload_and_bench_over_a_serial_line(tmp_path):
    with serial_agent(tmp_path / "store", key=KEY) as (device, relay):
        with AgentClient.connect(f"serial://{device}?baud=921600", key=KEY, timeout=20) as agent:
            assert agent.transport.lossy and agent.hello()["protocol"] == 2
            data = os.urandom(200_000)
            sha = agent.put_bytes(data)
            assert (tmp_path / "store" / "blobs" / sha).read_bytes() == data
            aid = agent.put_artifact(make_onnx_artifact(tmp_path / "art"))
            result = agent.bench(aid, {**FAST, "threads": 1})
            assert result["latency"]["count"] >= 20
        assert relay.forwarded[0] > 200_000


def test_plain_device_path_and_consecutive_sessions_on_one_line(tmp_path):
    with serial_agent(tmp_path / "store", key=KEY) as (device, _):
        with pytest.raises(AgentRequestError) as err:
            AgentClient.connect(device, key=b"x" * 32, timeout=10)
        assert err.value.code == "auth_failed"
        for _ in range(2):  # the line stays up between host sessions; each authenticates anew
            with AgentClient.connect(device, key=KEY, timeout=10) as agent:
                assert agent.ping() < 1.0
