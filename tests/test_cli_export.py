"""`edgekd export` end to end: table and --json rows, a failing row that does not stop the others,
and one-line exit-2 errors for an unknown target/format and a corrupt checkpoint."""
from __future__ import annotations

import json

from click.testing import CliRunner

from edgekd.cli import main
from edgekd.runtimes import read_manifest

BOARD = """name: gpu-board
arch: x86_64
runtimes: [onnxruntime, tensorrt]
formats: [onnx, tensorrt]
precisions: [fp32, fp16]
default_threads: 1
input_layout: NCHW
install: none
hardware: {peak_gflops_fp32: 1.0, memory_bandwidth_gbs: 1.0, source: test}
"""


def test_export_onnx_table_and_json(tiny_teacher_ckpt, tmp_path):
    run_dir = tiny_teacher_ckpt.parent
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["export", str(run_dir), "-f", "onnx", "-p", "fp32,int8", "-o", str(out),
                                    "--threads", "1", "--calibration-samples", "64"])
    assert res.exit_code == 0, res.output
    assert res.output.count("✅") == 2 and "onnx" in res.output and "torch accuracy" in res.output
    for name in ("onnx-fp32", "onnx-int8"):
        manifest = read_manifest(out / name)
        assert manifest["status"] == "ok" and manifest["source"]["checkpoint_sha256"]
    # the INT8 row says how many convs run in integer kernels here (all of them: U8 activations)
    fused = read_manifest(out / "onnx-int8")["options"]["fused_convs"]
    assert fused["convs"] >= 1 and fused["quantized"] == fused["convs"], fused
    assert f"{fused['convs']} of {fused['convs']} convs in integer kernels" in res.output
    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "fp32", "-o", str(out),
                                    "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["ok"] and report["rows"][0]["max_abs"] <= 1e-4 and report["data"]["matches_training"]
    assert json.loads((out / "export.json").read_text())["rows"][0]["status"] == "ok"


def test_one_failing_row_does_not_stop_the_others(tiny_teacher_ckpt, tmp_path):
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "gpu-board.yaml").write_text(BOARD)
    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "--target", "gpu-board", "--targets-dir",
                                    str(tmp_path / "targets"), "-f", "onnx,tensorrt", "-p", "fp32,fp16",
                                    "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 1, res.output
    rows = {(r["format"], r["precision"]): r for r in json.loads(res.output)["rows"]}
    assert len(rows) == 4
    assert rows[("onnx", "fp16")]["status"] == "failed" and "not fp16" in rows[("onnx", "fp16")]["error"]
    assert rows[("onnx", "fp32")]["status"] == "ok" and rows[("tensorrt", "fp16")]["status"] == "ok"


def test_parity_failure_exits_nonzero_and_keeps_artifact(tiny_teacher_ckpt, tmp_path):
    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "fp32", "--fp32-tol", "0",
                                    "-o", str(tmp_path / "out")])
    assert res.exit_code == 1 and "❌" in res.output and "fp32 parity" in res.output
    manifest = read_manifest(tmp_path / "out" / "onnx-fp32")
    assert manifest["status"] == "failed" and (tmp_path / "out" / "onnx-fp32" / "model.onnx").is_file()


def test_bad_inputs_are_one_line_errors(tiny_teacher_ckpt, tmp_path):
    out = str(tmp_path / "out")
    cases = [
        (["--target", "jetsn"], "Valid targets: cpu"),
        (["-f", "onnx,caffe"], "valid formats: onnx, openvino, tflite, tensorrt"),
        (["-f", "tensorrt"], "does not support format tensorrt"),
        (["-p", "int4"], "valid precisions: fp32, fp16, int8"),
    ]
    for extra, message in cases:
        res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-o", out, *extra])
        assert res.exit_code == 2 and message in res.output, (extra, res.output)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    res = CliRunner().invoke(main, ["export", str(corrupt), "-o", out])
    assert res.exit_code == 2 and "corrupt.pt" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["export", str(tmp_path), "-o", out])
    assert res.exit_code == 2 and "no student.pt" in res.output


def _profile_of(path, fingerprint) -> None:
    """A profile file recording `fingerprint` as its device (what a deploy or calibration writes)."""
    from edgekd.device.profiles import Profile, save_profile

    save_profile(Profile(name=path.stem, device=fingerprint, path=path), path)


def test_export_for_a_device_follows_its_isa(tiny_teacher_ckpt, tmp_path):
    """`--device` asks the device for its fingerprint; `--profile` reads the one a profile recorded. An
    AVX2-only x86 profile (no VNNI: saturating int16 sums) gets ONNX Runtime 7-bit weights although this
    host exports it, and the table says for which device and why; without a device, a hint."""
    from edgekd.agent.fingerprint import device_fingerprint
    from edgekd.device.profiles import device_name

    here = device_fingerprint()
    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "int8", "-o",
                                    str(tmp_path / "here"), "--device", "inprocess", "--calibration-samples", "64"])
    assert res.exit_code == 0, res.output
    assert f"and device {device_name(here)} (device inprocess)" in res.output
    assert read_manifest(tmp_path / "here" / "onnx-int8")["options"]["int8_settings"]["arch"] == here["arch"]
    assert "no particular device" not in res.output

    avx2 = {**here, "arch": "x86_64", "cpu_model": "AVX2 box",
            "cpu": {**here["cpu"], "flags": ["sse4_2", "avx", "avx2", "fma", "f16c"]}}
    _profile_of(tmp_path / "avx2-box.yaml", avx2)
    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "int8", "-o",
                                    str(tmp_path / "avx2"), "--profile", str(tmp_path / "avx2-box.yaml"),
                                    "--calibration-samples", "64", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["device"]["source"] == f"profile {tmp_path / 'avx2-box.yaml'}"
    assert report["device"]["isa_level"] == "avx2" and report["device"]["name"] == device_name(avx2)
    settings = report["rows"][0]["int8_settings"]
    assert settings["reduce_range"] is True and "without VNNI" in settings["rule"]
    assert read_manifest(tmp_path / "avx2" / "onnx-int8")["options"]["int8_settings"] == settings

    res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "int8", "-o",
                                    str(tmp_path / "none"), "--calibration-samples", "64"])
    assert res.exit_code == 0, res.output
    assert "INT8 QUInt8 activations, 7-bit weights: no device identity" in res.output
    assert "chosen for no particular device" in res.output


def test_bad_device_for_an_export_is_one_line_exit_2_and_writes_nothing(tiny_teacher_ckpt, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    old = tmp_path / "old.yaml"
    _profile_of(old, {"cpu_model": "some cpu", "arch": "x86_64"})  # written before identities
    out = tmp_path / "out"
    cases = [
        (["--device", f"tcp://127.0.0.1:{port}"], f"127.0.0.1:{port}"),
        (["--profile", str(tmp_path / "missing.yaml")], "does not exist"),
        (["--profile", str(old)], "records no device identity"),
        (["--device", "inprocess", "--profile", str(old)], "not both"),
    ]
    for extra, message in cases:
        res = CliRunner().invoke(main, ["export", str(tiny_teacher_ckpt), "-f", "onnx", "-p", "int8", "-o", str(out),
                                        *extra])
        assert res.exit_code == 2 and message in res.output, (extra, res.output)
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
        assert not out.exists()  # refused before anything was written
