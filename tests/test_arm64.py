"""The agent on an emulated arm64 Debian (Raspberry Pi class), benched from this x86 host over TCP.

Skipped unless EDGEKD_ARM64=1 (set by scripts/test_arm64.sh, which prepares the root file system
with /work/shared/tools/arm64: aarch64 wheels of the base deps + onnxruntime + ai-edge-litert).
The host exports the tiny digits teacher to .onnx and .tflite, uploads both and the digits test split
to the emulated agent over TCP loopback (the chroot shares this machine's network), and checks:
- `hello` reports aarch64 and both runtimes;
- `eval` on the device gives the same top-1 as on x86, and the same prediction for every sample
  (a second evaluation set labelled with the x86 predictions must score 100 %);
- the logits of the very files that crossed the link, run on aarch64, equal the x86 logits within
  float tolerance (different CPU kernels, same maths).
Timings under emulation mean nothing and are not checked beyond "the loop ran".
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.arm64,
    pytest.mark.skipif(os.environ.get("EDGEKD_ARM64") != "1", reason="needs the emulated arm64 rootfs: run scripts/test_arm64.sh"),
]
ARM64 = os.environ.get("ARM64_TOOL", "/work/shared/tools/arm64")
FAST = {"warmup_count": 1, "warmup_s": 0.0, "min_count": 3, "min_s": 0.0, "threads": 1}
ATOL = 1e-4  # logits are O(1..10); x86 AVX and aarch64 NEON kernels may sum in another order

# run inside the chroot: logits of each artifact directory for the inputs given as JSON on stdin
DEVICE_LOGITS = """
import json, sys
import numpy as np
from edgekd.runtimes import feeds_from_nchw, load_artifact, read_manifest
job = json.load(sys.stdin)
x = np.asarray(job["x"], dtype=np.float32)
out = {d: np.asarray(load_artifact(d, threads=1).run(feeds_from_nchw(read_manifest(d), x))).tolist() for d in job["dirs"]}
print("LOGITS " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def arm64_agent(tmp_path_factory):
    """(url, key) of an agent started inside the arm64 rootfs on a free loopback port, with a key."""
    key = secrets.token_hex(32)
    keyfile = tmp_path_factory.mktemp("arm64") / "agent.key"
    keyfile.write_text(key)
    # `arm64 copy SRC DIR` copies into DIR: this lands at /work/agent.key
    subprocess.run([ARM64, "copy", str(keyfile), "/work"], check=True, timeout=120)
    subprocess.run([ARM64, "run", "rm", "-rf", "/work/agent-store"], check=True, timeout=120)  # a fresh store
    stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty runtime can never block the agent
    proc = subprocess.Popen(
        [ARM64, "run", "python", "-m", "edgekd", "agent", "--listen", "127.0.0.1:0", "--key-file", "/work/agent.key",
         "--workdir", "/work/agent-store", "--verbose"],
        stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
    )
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(300)  # emulated start-up is slow
    m = re.search(r"tcp://\S+", line[0] if line else "")
    if not m:
        os.killpg(proc.pid, 9)
        proc.wait(timeout=30)
        stderr.seek(0)
        pytest.fail(f"the arm64 agent did not start: {stderr.read().decode(errors='replace')[-2000:] or 'no output'}")
    yield m.group(0), key
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
    stderr.close()


def _device_logits(dirs: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    job = json.dumps({"dirs": dirs, "x": x.tolist()})
    out = subprocess.run([ARM64, "run", "python", "-c", DEVICE_LOGITS], input=job, capture_output=True, text=True,
                         timeout=900, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("LOGITS ")]
    assert out.returncode == 0 and lines, f"device logits failed ({out.returncode}): {out.stderr[-2000:]}"
    return {d: np.asarray(v, dtype=np.float32) for d, v in json.loads(lines[-1][len("LOGITS "):]).items()}


@pytest.mark.timeout(1800)
def test_arm64_agent_benches_onnx_and_tflite_like_x86(arm64_agent, runtime_artifacts, digits_small, tmp_path):
    from edgekd.agent.client import AgentClient
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.bench.measure import measure_artifact
    from edgekd.runtimes import feeds_from_nchw, load_artifact, read_manifest

    url, key = arm64_agent
    artifacts = {"onnx": runtime_artifacts("onnxruntime"), "tflite": runtime_artifacts("litert")}
    x, y = digits_small.test.x.astype(np.float32), digits_small.test.y
    data = write_eval_npz(tmp_path / "digits-test.npz", x, y)
    x86_logits = {fmt: np.asarray(load_artifact(art, threads=1).run(feeds_from_nchw(read_manifest(art), x)))
                  for fmt, art in artifacts.items()}

    report: dict[str, Any] = {}
    with AgentClient.connect(url, key=key, timeout=600) as agent:
        fp = agent.hello()["fingerprint"]
        report["hello"] = {k: fp.get(k) for k in ("arch", "cpu_model", "cores_logical", "ram_bytes", "os", "python", "runtimes")}
        assert fp["arch"] == "aarch64", fp
        assert {"onnxruntime", "litert"} <= set(fp["runtimes"]), fp["runtimes"]
        did = agent.put_file(data)
        device_dirs: dict[str, str] = {}
        for fmt, art in artifacts.items():
            # labels = this format's x86 predictions: 100 % on the device means every prediction agrees
            same = agent.put_file(write_eval_npz(tmp_path / f"x86-{fmt}.npz", x, x86_logits[fmt].argmax(axis=1)))
            aid = agent.put_artifact(art)
            remote = agent.eval(aid, did, {**FAST, "latency": True}, timeout=900)
            agree = agent.eval(aid, same, {**FAST, "latency": False}, timeout=900)
            local = measure_artifact(art, {**FAST, "latency": False, "data": str(data)})
            report[fmt] = {"x86_top1": local["accuracy"]["top1"], "arm64_top1": remote["accuracy"]["top1"],
                           "predictions_agree": agree["accuracy"]["top1"], "samples": remote["accuracy"]["count"],
                           "runtime": remote["runner_info"].get("runtime"), "version": remote["versions"].get("runtime")}
            assert remote["accuracy"]["correct"] == local["accuracy"]["correct"], (fmt, remote["accuracy"], local["accuracy"])
            assert agree["accuracy"]["top1"] == 1.0, (fmt, agree["accuracy"])
            assert remote["latency"]["count"] >= 3  # the loop ran; emulated timings mean nothing
            device_dirs[fmt] = remote["artifact"]["dir"]
    # the files that crossed the link, run again on aarch64 for their raw outputs
    got = _device_logits(list(device_dirs.values()), x)
    for fmt, d in device_dirs.items():
        diff = float(np.abs(got[d] - x86_logits[fmt]).max())
        report[fmt]["max_abs_logit_diff"] = diff
        np.testing.assert_allclose(got[d], x86_logits[fmt], atol=ATOL, rtol=0, err_msg=fmt)
    print("\narm64 vs x86:", json.dumps(report, indent=1))


@pytest.mark.timeout(1800)
def test_export_for_the_arm64_agent_takes_its_int8_rule_and_runs_there(arm64_agent, tiny_teacher_ckpt, digits_small,
                                                                         tmp_path):
    """`edgekd export --device <the aarch64 agent>` on this x86 host: the agent's fingerprint picks the
    ARM rule (ONNX Runtime's S8 activations, full 8-bit weights), the table names the aarch64 device, and
    the artifact gives the same predictions on the device as on this host."""
    from click.testing import CliRunner

    from edgekd.agent.client import AgentClient
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.cli import main
    from edgekd.runtimes import feeds_from_nchw, load_artifact, read_manifest

    url, key = arm64_agent
    keyfile = tmp_path / "agent.key"
    keyfile.write_text(key)
    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "int8", "-o",
                                    str(tmp_path / "out"), "--device", url, "--key-file", str(keyfile),
                                    "--calibration-samples", "64", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["device"]["arch"] == "aarch64" and report["device"]["source"] == f"device {url}"
    art = tmp_path / "out" / "onnx-int8"
    settings = read_manifest(art)["options"]["int8_settings"]
    assert settings["arch"] == "aarch64" and settings["activation_type"] == "QInt8" and not settings["reduce_range"]
    x = digits_small.test.x.astype(np.float32)
    here = np.asarray(load_artifact(art, threads=1).run(feeds_from_nchw(read_manifest(art), x))).argmax(axis=1)
    with AgentClient.connect(url, key=key, timeout=600) as agent:
        same = agent.put_file(write_eval_npz(tmp_path / "x86-int8.npz", x, here))
        agree = agent.eval(agent.put_artifact(art), same, {**FAST, "latency": False}, timeout=900)
    assert agree["accuracy"]["top1"] >= 0.99, agree["accuracy"]  # integer kernels may round a tie differently
    print("\nexport for arm64:", json.dumps({"device": report["device"], "int8_settings": settings,
                                             "predictions_agree": agree["accuracy"]["top1"]}, indent=1))


# run inside the chroot under one emulated core: the HWCAP dot-product bit, then each model's outputs
DEVICE_SATURATION = """
import json, struct, sys
import numpy as np
import onnxruntime as ort
hwcap = 0
raw = open("/proc/self/auxv", "rb").read()
for i in range(0, len(raw), 16):
    t, v = struct.unpack("<QQ", raw[i:i + 16])
    if t == 16:
        hwcap = v
job = json.load(sys.stdin)
x = np.asarray(job["x"], dtype=np.float32)
out = {}
for path in job["models"]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out[path] = np.concatenate([s.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))]).tolist()
print("SAT " + json.dumps({"asimddp": bool(hwcap & (1 << 20)), "out": out}))
"""


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("core", ["cortex-a53", "cortex-a72", "max"])
def test_arm_int8_weights_do_not_saturate_with_or_without_dot_products(core, tmp_path):
    """The ARM rule keeps full 8-bit weights because ARM's integer kernels do not saturate. Checked on
    the cores Raspberry Pis have, without dot products (Cortex-A53: Pi 3 / Zero 2; Cortex-A72: Pi 4),
    and on qemu's `max` core (SDOT, I8MM: Pi 5 class), each emulated by qemu (QEMU_CPU; the HWCAP bit
    the kernels dispatch on is asserted), on a conv built to saturate int16 pair sums: the ARM rule's
    artifact and the worst case (U8 activations with full 8-bit weights, which lose half the value on
    x86 without VNNI) both compute the exact result."""
    import shutil

    from bench_models import saturating_conv_onnx, saturating_inputs, saturation_error

    from edgekd.runtimes.int8_settings import ort_int8_settings
    from edgekd.runtimes.onnxruntime import quantize_onnx_int8

    x, exact = saturating_inputs()
    src = tmp_path / "sat"
    src.mkdir()
    arm = ort_int8_settings({"arch": "aarch64", "isa": ["asimd"]})
    assert arm["activation_type"] == "QInt8" and arm["reduce_range"] is False
    models = []
    for behind in (False, True):
        saturating_conv_onnx(tmp_path / f"fp32-{behind:d}.onnx", behind)
        for name, settings in (("arm", arm), ("u8-8bit", {**arm, "activation_type": "QUInt8"})):
            models.append(f"{name}-{behind:d}.onnx")
            quantize_onnx_int8(tmp_path / f"fp32-{behind:d}.onnx", src / models[-1],
                               [{"input": x[i:i + 1]} for i in range(len(x))], batch=1, settings=settings)
    dst = f"sat-{core}"
    shutil.move(str(src), str(tmp_path / dst))
    subprocess.run([ARM64, "run", "rm", "-rf", f"/work/{dst}"], check=True, timeout=120)
    subprocess.run([ARM64, "copy", str(tmp_path / dst), "/work"], check=True, timeout=120)
    job = json.dumps({"models": [f"{dst}/{m}" for m in models], "x": x.tolist()})
    proc = subprocess.run([ARM64, "run", "env", f"QEMU_CPU={core}", "python", "-c", DEVICE_SATURATION], input=job,
                          capture_output=True, text=True, timeout=900, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SAT ")]
    assert proc.returncode == 0 and lines, f"device run failed ({proc.returncode}): {proc.stderr[-2000:]}"
    got = json.loads(lines[-1][len("SAT "):])
    assert got["asimddp"] is (core == "max"), got["asimddp"]  # the emulated core is the one asked for
    errors = {m: saturation_error(np.asarray(got["out"][f"{dst}/{m}"]), exact) for m in models}
    print(f"\n{core}: dot products {got['asimddp']}, relative errors {errors}")
    assert max(errors.values()) < 0.02, errors
