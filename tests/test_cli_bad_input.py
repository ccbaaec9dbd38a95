"""Issue 11, defects 9 and 10: malformed profiles and bad CLI input get one line and exit 2 (never a
traceback, never a success), and a killed profile writer leaves no temp file behind for long."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.errors import ConfigError
from edgekd.device.profiles import Measurement, Profile, dump_profile, record_measurements, save_profile

from bench_models import make_onnx_artifact

QUICK = ["--min-count", "2", "--min-seconds", "0", "--warmup", "0", "--warmup-seconds", "0"]
FP = {"arch": "x86_64", "cpu_model": "AMD EPYC", "cores": 2}


def _meas(**kw) -> Measurement:
    base = dict(model_sha256="a" * 64, format="onnx", precision="fp32", threads=1, batch=1, spec="cnn:width=4",
                params=1000, size_bytes=5000, latency={"p50_ms": 1.0, "p90_ms": 1.2, "p99_ms": 1.5}, accuracy=0.9)
    base.update(kw)
    return Measurement(**base)


def _run(args: list[str]):
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output, result.exception


def _one_line_exit_2(code: int, output: str, exc: BaseException | None, *, mentions: str) -> None:
    assert code == 2, (code, output, exc)
    assert isinstance(exc, SystemExit), exc  # not an AttributeError/TypeError traceback
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert lines and mentions in lines[-1], output
    assert "Traceback" not in output


def _good_profile_text() -> str:
    p = Profile(name="dev", device=FP)
    p.record(_meas())
    return dump_profile(p)


def _malformed() -> dict[str, str]:
    good = _good_profile_text()
    cut = good.index("p50_ms") + 3
    return {
        "measurements_not_maps": good.split("measurements:")[0] + "measurements: {k: 5}\nlatency_model: null\n",
        "device_a_list": good.replace("device:\n", "device: [1, 2]\nold_device:\n", 1),
        "latency_a_string": good.replace("latency:\n", "latency: fast\n  old_latency:\n", 1),
        "truncated_mid_key": good[:cut],
    }


@pytest.mark.parametrize("variant", list(_malformed()))
def test_malformed_profiles_get_one_line_and_exit_2_everywhere(tmp_path, variant):
    text = _malformed()[variant]
    path = tmp_path / "dev.yaml"
    path.write_text(text)
    art = make_onnx_artifact(tmp_path / "art")
    for args in (
        ["profile", "show", "dev", "--profiles-dir", str(tmp_path)],
        ["select", "--profile", "dev", "--profiles-dir", str(tmp_path), "--budget-ms", "1"],
        ["profile", "plot", "dev", "--profiles-dir", str(tmp_path), "-o", str(tmp_path / "p.png")],
        ["bench", str(art), "--device", "inprocess", "--profile", "dev", "--profiles-dir", str(tmp_path), *QUICK],
    ):
        code, output, exc = _run(args)
        _one_line_exit_2(code, output, exc, mentions="dev.yaml")
    assert path.read_text() == text  # nothing was written over it


def test_a_killed_profile_writer_leaves_no_temp_file_after_the_next_write(tmp_path):
    path = tmp_path / "dev.yaml"
    save_profile(Profile(name="dev", device=FP), path)
    writer = (
        "import sys\n"
        "from edgekd.fileio import atomic_write_text\n"
        "text = 'x' * (16 << 20)\n"
        "while True:\n"
        "    atomic_write_text(sys.argv[1] + '.other', text)\n"
        "    atomic_write_text(sys.argv[1], text)\n"
    )
    leftovers = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", writer, str(path)])
        time.sleep(0.8)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        leftovers += list(tmp_path.glob(".dev.yaml.*.tmp"))
    # whatever the kills left (the state a kill -9 mid-write leaves), the next write clears it
    (tmp_path / ".dev.yaml.killed.tmp").write_text("half a profile")
    path.write_text(dump_profile(Profile(name="dev", device=FP)))
    record_measurements(path, [_meas()], device=FP)
    assert not list(tmp_path.glob(".dev.yaml.*.tmp"))
    assert len(Profile.load(path).measurements) == 1


# ---- defect 10: bad CLI input -------------------------------------------------------------------

def _bad_npz(tmp_path: Path) -> dict[str, Path]:
    files = {}
    files["corrupt"] = tmp_path / "corrupt.npz"
    files["corrupt"].write_bytes(b"PK\x03\x04" + os.urandom(300))
    files["objects"] = tmp_path / "objects.npz"
    np.savez(files["objects"], x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    files["wrong_shape"] = tmp_path / "wrong_shape.npz"
    np.savez(files["wrong_shape"], x=np.zeros((4, 3, 5, 5), np.float32), y=np.zeros(4, np.int64))
    files["label_count"] = tmp_path / "label_count.npz"
    np.savez(files["label_count"], x=np.zeros((4, 1, 8, 8), np.float32), y=np.zeros(3, np.int64))
    files["no_labels"] = tmp_path / "no_labels.npz"
    np.savez(files["no_labels"], x=np.zeros((4, 1, 8, 8), np.float32))
    return files


@pytest.mark.parametrize("kind", ["corrupt", "objects", "wrong_shape", "label_count", "no_labels"])
def test_bench_with_bad_data_exits_2_before_any_row(tmp_path, kind):
    art = make_onnx_artifact(tmp_path / "art")
    data = _bad_npz(tmp_path)[kind]
    code, output, exc = _run(["bench", str(art), "--device", "inprocess", "--data", str(data),
                              "--profiles-dir", str(tmp_path), *QUICK])
    _one_line_exit_2(code, output, exc, mentions=data.name)
    assert "✅" not in output and not (tmp_path / "profiles").exists() and not list(tmp_path.glob("*.yaml"))


def test_bench_of_an_unreadable_checkpoint_exits_2(tmp_path):
    torch = pytest.importorskip("torch")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "edgekd.model/1", "x": Evil()}, evil)
    code, output, exc = _run(["bench", str(evil), "--device", "inprocess", "--formats", "onnx",
                              "--precisions", "fp32", "--profiles-dir", str(tmp_path), *QUICK])
    _one_line_exit_2(code, output, exc, mentions="evil.pt")
    assert "pwned" not in output


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
def test_budget_must_be_a_finite_number(tmp_path, value):
    for args in (["select", "--profile", "dev", "--profiles-dir", str(tmp_path), "--budget-ms", value],
                 ["deploy", "--target", "cpu", "--budget-ms", value, "-o", str(tmp_path / "out")],
                 ["bench", str(tmp_path), "--min-seconds", value]):
        t0 = time.monotonic()
        code, output, exc = _run(args)
        assert code == 2 and ("finite" in output or "not in the range" in output), (args, output)
        assert time.monotonic() - t0 < 30


def test_api_select_refuses_a_nan_budget(tmp_path):
    from edgekd import api

    path = tmp_path / "dev.yaml"
    save_profile(Profile(name="dev", device=FP, measurements={}), path)
    record_measurements(path, [_meas()], device=FP)
    with pytest.raises(ConfigError, match="budget"):
        api.select(str(path), budget_ms=math.nan)


def test_api_deploy_unknown_or_mistyped_key_is_a_config_error_not_a_type_error():
    from edgekd import api
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'budgt_ms'. Did you mean 'budget_ms'"):
        api.deploy(budgt_ms=1.0)
    with pytest.raises(ConfigError, match="max_rounds: expected a number"):
        api.deploy({"max_rounds": "three"})
