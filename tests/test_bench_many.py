"""Several artifacts measured in ONE runner process (`run_isolated_many`, the agent's `bench_many`):
what calibration's many short rounds use. Real artifacts, a real runner child, a real agent over TCP."""
from __future__ import annotations

import os

import pytest

from edgekd.agent.client import AgentClient
from edgekd.agent.protocol import AgentRequestError
from edgekd.agent.server import TcpAgentServer
from edgekd.bench.devices import AgentDevice, InProcessDevice
from edgekd.bench.measure import MAX_MANY, MeasurementError, run_isolated_many
from edgekd.errors import AgentError, ConfigError, ModelError

from bench_models import make_onnx_artifact

pytestmark = pytest.mark.timeout(120)
KEY = b"0123456789abcdef-test-key"
FAST = {"warmup_count": 2, "warmup_s": 0.0, "min_count": 20, "min_s": 0.05, "threads": 1}


@pytest.fixture
def arts(tmp_path):
    return [make_onnx_artifact(tmp_path / f"a{i}", hidden=8 * (i + 1), seed=i) for i in range(3)]


def test_one_process_measures_every_artifact_in_order_and_a_bad_one_fails_alone(arts, tmp_path):
    missing = tmp_path / "not-an-artifact"
    missing.mkdir()
    out = run_isolated_many([arts[0], missing, arts[1], arts[2]], FAST)
    assert len(out) == 4
    assert isinstance(out[1], ModelError) and "no manifest" in str(out[1])
    good = [out[0], out[2], out[3]]
    assert all(isinstance(r, dict) and r["latency"]["count"] >= 20 and r["latency"]["p50_ms"] > 0 for r in good)
    assert [r["artifact"]["dir"] for r in good] == [str(a.resolve()) for a in arts]
    assert len({r["runner_pid"] for r in good}) == 1 and good[0]["runner_pid"] != os.getpid()
    # no per-model memory figure from a process that held several models
    assert all(r["memory"] == {"peak_rss_bytes": None, "isolated": False, "shared_process": True} for r in good)


def test_a_child_past_its_deadline_is_killed_and_each_artifact_measured_alone(arts, tmp_path):
    # the same request for all: at least 5000 timed runs. The small models need milliseconds; the one
    # with a 64 MB dense layer (~64 MB read per run) needs tens of seconds, so the shared child passes
    # its deadline (3 artifacts x timeout_s) and is killed; then each artifact gets a child of its own
    slow = make_onnx_artifact(tmp_path / "slow", extra_mb=64)
    request = {**FAST, "min_count": 5000, "min_s": 0.0, "max_s": 120.0, "timeout_s": 2.5}
    out = run_isolated_many([arts[1], slow, arts[2]], request)
    assert isinstance(out[1], MeasurementError) and str(out[1]).startswith(f"measuring {slow} took longer")
    assert isinstance(out[0], dict) and isinstance(out[2], dict), out
    assert out[0]["latency"]["count"] >= 5000
    assert out[0]["runner_pid"] != out[2]["runner_pid"]  # measured apart, after the shared child was killed
    assert out[0]["memory"]["isolated"] is True


def test_batch_size_and_request_are_checked_before_anything_runs(arts):
    with pytest.raises(ConfigError, match=f"1 to {MAX_MANY}"):
        run_isolated_many([], FAST)
    with pytest.raises(ConfigError, match=f"1 to {MAX_MANY}"):
        run_isolated_many([arts[0]] * (MAX_MANY + 1), FAST)
    with pytest.raises(ConfigError):
        run_isolated_many(arts, {**FAST, "min_s": float("nan")})


def test_in_process_device_and_agent_device_give_the_same_shape(arts, tmp_path):
    local = InProcessDevice().bench_many(arts[:2], FAST)
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
        dev = AgentDevice(srv.url, key=KEY.decode())
        try:
            remote = dev.bench_many(arts[:2], FAST)
        finally:
            dev.close()
    for a, b in zip(local, remote):
        assert a.keys() == b.keys() and b["latency"]["p50_ms"] > 0 and b["memory"]["shared_process"] is True
    assert remote[0]["runner_pid"] == remote[1]["runner_pid"]


def test_agent_refuses_hostile_artifact_lists_and_serves_the_next_request(arts, tmp_path):
    with TcpAgentServer(tmp_path / "store", key=KEY) as srv, AgentClient.connect(srv.url, key=KEY, timeout=20) as c:
        aid = c.put_artifact(arts[0])
        bad_lists = [{"x": aid}, [], [aid] * 2, [aid] * (MAX_MANY + 1), ["0" * 64], ["../../etc"], [17], None]
        for artifacts in bad_lists:
            with pytest.raises(AgentRequestError) as err:
                c.request("bench_many", {"artifacts": artifacts, "request": FAST})
            assert "\n" not in str(err.value) and len(str(err.value)) < 300
        with pytest.raises(AgentRequestError, match="cannot be a path"):
            c.request("bench_many", {"artifacts": [aid], "request": {**FAST, "data": "/etc/passwd"}})
        with pytest.raises(AgentRequestError):
            c.request("bench_many", {"artifacts": [aid], "request": {**FAST, "min_s": -1}})
        with pytest.raises(AgentError, match=f"1 to {MAX_MANY}"):
            c.bench_many([], FAST)  # the client checks too
        out = c.bench_many([aid], FAST)
        assert out[0]["latency"]["p50_ms"] > 0


def test_a_host_falls_back_to_one_bench_per_artifact_on_an_agent_without_bench_many(arts, tmp_path):
    # every agent before bench_many answers it with unknown_command: here a real agent whose command
    # table is that of such an agent (the command taken out for this test, put back after)
    from edgekd.agent import handlers

    entry = handlers.COMMANDS.pop("bench_many")
    try:
        with TcpAgentServer(tmp_path / "store", key=KEY) as srv:
            dev = AgentDevice(srv.url, key=KEY.decode())
            try:
                out = dev.bench_many(arts[:2], FAST)
                again = dev.bench_many(arts[:2], FAST)  # and again, on the same connection
            finally:
                dev.close()
    finally:
        handlers.COMMANDS["bench_many"] = entry
    assert all(r["latency"]["p50_ms"] > 0 and r["memory"]["isolated"] is True for r in out + again)
    assert out[0]["runner_pid"] != out[1]["runner_pid"]  # one process per artifact, as `bench` always did


def test_artifacts_of_different_runtimes_never_share_a_runner_process(arts, tmp_path):
    """A deployed app loads one runtime: OpenVINO INT8 timed after ONNX Runtime models in one process
    ran up to 1.58x slower (run_isolated_many's docstring). Each consecutive run of one runtime gets
    its own child; an artifact without a readable manifest stays in the run it sits in."""
    from edgekd.bench.measure import runtime_runs
    from edgekd.latency.calibrate import export_untrained

    ov = [export_untrained(f"mlp:hidden={h}", (1, 8, 8), 10, "openvino", "fp32", tmp_path / "w") for h in (16, 32)]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("[not a manifest")
    order = [arts[0], arts[1], ov[0], broken, ov[1], arts[2]]
    assert [len(r) for r in runtime_runs(order)] == [2, 3, 1]
    out = run_isolated_many(order, FAST)
    assert isinstance(out[3], ModelError)
    pids = [r["runner_pid"] for r in out if isinstance(r, dict)]
    assert pids[0] == pids[1] and pids[2] == pids[3]  # one child per run of one runtime
    assert len({pids[0], pids[2], pids[4]}) == 3
    assert all(r["memory"]["shared_process"] for r in out if isinstance(r, dict))
