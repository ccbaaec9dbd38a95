"""One shared contract test for every registered runtime adapter, plus runtime-specific edges and the
TensorRT logic that needs no TensorRT (op check, cache key, trtexec JSON); TensorRT 10/11 precision
and engine-build flags are in test_tensorrt_precision.py."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgekd.errors import ConfigError, ExportError, ModelError, RuntimeMissingError
from edgekd.runtimes import RUNTIMES, load_artifact, read_manifest
from edgekd.runtimes.base import MANIFEST_SCHEMA, feeds_from_nchw, hash_files
from edgekd.runtimes.parity import torch_logits
from edgekd.runtimes.tensorrt_ops import (check_tensorrt_onnx, engine_cache_key, parse_trtexec_times, summarize_ms,
                                          unsupported_ops)

MANIFEST_KEYS = {"schema", "format", "runtime", "precision", "model_file", "files", "inputs", "outputs",
                 "normalization", "class_names", "num_classes", "source", "parity", "status", "error", "versions",
                 "options"}


def _needs_runtime(runtime: str) -> None:
    reason = RUNTIMES.get(runtime).unavailable_reason()
    if reason is not None:
        pytest.skip(f"{runtime} cannot run here: {reason}")


@pytest.fixture(scope="module")
def tiny(tiny_teacher_ckpt, digits_small):
    from edgekd.models import load_model

    model, info = load_model(tiny_teacher_ckpt)
    return model, info, digits_small.test.x[:5]


@pytest.mark.parametrize("runtime", RUNTIMES.names())
def test_adapter_contract(runtime, runtime_artifacts, tiny):
    """Export fp32 -> manifest complete and hashed -> load -> run any batch size -> matches torch."""
    adapter = RUNTIMES.get(runtime)
    assert adapter.name == runtime and "fp32" in adapter.precisions
    if adapter.unavailable_reason() is not None and not getattr(adapter, "host_export_without_runtime", False):
        pytest.skip(f"{runtime}: {adapter.unavailable_reason()}")
    path = runtime_artifacts(runtime)
    manifest = read_manifest(path)
    assert MANIFEST_KEYS <= set(manifest) and manifest["schema"] == MANIFEST_SCHEMA
    assert manifest["runtime"] == runtime and manifest["format"] == adapter.format
    assert manifest["files"] == hash_files(path, manifest["files"])
    assert manifest["status"] == "ok", manifest["error"]
    assert manifest["parity"]["max_abs"] <= 1e-4 and manifest["num_classes"] == 10
    assert manifest["source"]["params"] > 0 and manifest["versions"]["edgekd"]
    _needs_runtime(runtime)
    model, _, x = tiny
    runner = load_artifact(path, threads=1)
    assert runner.input_names == [manifest["inputs"][0]["name"]]
    assert runner.info["runtime"] == runtime and runner.info["threads"] == 1 and runner.info["version"]
    got = runner.run(feeds_from_nchw(manifest, x))  # 5 rows through a batch-1 model: chunked
    assert got.shape == (5, 10) and got.dtype == np.float32
    assert np.abs(got - torch_logits(model, x)).max() <= 1e-4


@pytest.mark.parametrize("runtime", [n for n, a in RUNTIMES.items() if "int8" in a.precisions])
def test_int8_export_is_calibrated_and_gated(runtime, runtime_artifacts):
    adapter = RUNTIMES.get(runtime)
    if adapter.unavailable_reason() is not None and not getattr(adapter, "host_export_without_runtime", False):
        pytest.skip(f"{runtime}: {adapter.unavailable_reason()}")
    manifest = read_manifest(runtime_artifacts(runtime, "int8"))
    parity = manifest["parity"]
    assert manifest["precision"] == "int8" and parity["n"] > 200
    # the quantizer's settings are in the manifest, the same keys whichever runtime wrote them (an export
    # for no particular device: each quantizer's defaults, said so in the rule)
    from edgekd.runtimes.int8_settings import SETTINGS_KEYS, int8_settings

    wanted = int8_settings(runtime, None)
    if wanted is not None:
        assert manifest["options"]["int8_settings"] == wanted and set(SETTINGS_KEYS) <= set(wanted)
    assert parity["passed"] == (manifest["status"] == "ok")
    if parity["proxy"] is None:  # a real int8 run: close to torch, not identical
        assert 0 < parity["max_abs"] and parity["top1_agreement"] > 0.9 and parity["accuracy"] > 50


def test_litert_nhwc_layout_matches_torch(runtime_artifacts, tiny):
    _needs_runtime("litert")
    path = runtime_artifacts("litert", layout="NHWC")
    manifest = read_manifest(path)
    spec = manifest["inputs"][0]
    assert spec["layout"] == "NHWC" and spec["shape"] == [1, 8, 8, 1]
    model, _, x = tiny
    got = load_artifact(path).run(feeds_from_nchw(manifest, x))
    assert np.abs(got - torch_logits(model, x)).max() <= 1e-4


def test_onnx_dynamic_batch_runs_whole_batch(runtime_artifacts, tiny):
    path = runtime_artifacts("onnxruntime", dynamic_batch=True)
    manifest = read_manifest(path)
    assert manifest["inputs"][0]["shape"][0] == -1
    model, _, x = tiny
    assert np.abs(load_artifact(path).run({"input": x}) - torch_logits(model, x)).max() <= 1e-4


def test_openvino_runner_records_f32_hint(runtime_artifacts):
    _needs_runtime("openvino")
    info = load_artifact(runtime_artifacts("openvino"), threads=1).info
    assert info["precision_hint"] == "f32"  # never the bf16 default of AVX512-BF16 CPUs
    assert info["accelerator"] == "cpu" and info["device"] == "CPU"


def test_openvino_on_the_npu_a_target_names(runtime_artifacts, tmp_path, tiny):
    """A target YAML with `accelerator: NPU` sends OpenVINO to the NPU: the request carries it, the
    runner compiles for "NPU" with the precision hint still set and recorded. Without an NPU here
    the run step is skipped, naming what OpenVINO sees; everything before it has run."""
    from edgekd.bench.measure import normalize_request
    from edgekd.device.targets import load_target

    _needs_runtime("openvino")
    (tmp_path / "intel-npu.yaml").write_text(
        "name: intel-npu\narch: x86_64\nruntimes: [openvino]\nformats: [openvino]\nprecisions: [fp32]\n"
        "accelerator: NPU\ninput_layout: NCHW\ninstall: pip install 'edgekd[openvino]'\n"
        "hardware: {peak_gops_int8: 11000.0, memory_bandwidth_gbs: 60.0, source: test figures}\n")
    target = load_target("intel-npu", tmp_path)
    request = normalize_request({"accelerator": target.accelerator})
    assert request["accelerator"] == "npu"
    path = runtime_artifacts("openvino")
    try:
        runner = load_artifact(path, threads=1, accelerator=request["accelerator"])
    except RuntimeMissingError as err:
        pytest.skip(f"no NPU on this machine: {err}")
    manifest = read_manifest(path)
    model, _, x = tiny
    assert runner.info["device"] == "NPU" and runner.info["accelerator"] == "npu" and runner.info["precision_hint"]
    got = runner.run(feeds_from_nchw(manifest, x))
    assert np.abs(got - torch_logits(model, x)).max() <= 1e-2  # the NPU computes in fp16


@pytest.mark.parametrize("runtime", RUNTIMES.names())
def test_every_table_comes_from_the_adapter_declaration(runtime):
    """Formats, suffixes, precisions, accelerators and device modules: declared once per adapter,
    read by every table (export formats, manifest formats, fingerprint modules, select, bundle)."""
    from edgekd.agent.fingerprint import runtimes as found_here
    from edgekd.deploy.bundle import run_model_source
    from edgekd.runtimes import FORMAT_RUNTIME, catalog

    adapter = RUNTIMES.get(runtime)
    assert catalog.format_runtime(adapter.export_format) == catalog.format_runtime(adapter.format) == runtime
    assert FORMAT_RUNTIME[adapter.export_format] == runtime and catalog.runtime_format(runtime) == adapter.export_format
    assert adapter.format in catalog.manifest_formats() and adapter.suffixes
    assert all(s.startswith(".") for s in adapter.suffixes)
    assert set(adapter.precisions) <= set(catalog.PRECISION_NAMES) and adapter.accelerators
    assert catalog.default_accelerator(runtime) == next(iter(adapter.accelerators))
    for reported, module, _ in adapter.device_modules:
        assert catalog.device_modules()[reported][0] == module
    if adapter.unavailable_reason() is None:
        assert adapter.device_modules[0][0] in found_here()
    for accelerator in adapter.accelerators:
        compile(run_model_source(runtime, accelerator), "run_model.py", "exec")
    other = next(a for a in catalog.all_accelerators() if a not in adapter.accelerators)  # 4 runtimes: one exists
    with pytest.raises(ConfigError, match=f"{runtime} does not run on {other}"):
        catalog.check_accelerator(runtime, other)


def test_a_new_runtime_is_one_module_in_the_folder(tmp_path):
    """Drop one adapter module (with a new accelerator) into a copy of edgekd/runtimes/: targets,
    formats, manifests, the agent's fingerprint, bench requests, profile and latency keys and the
    bundle's run_model.py all know it, with no other file changed."""
    import subprocess
    import sys
    from pathlib import Path

    import edgekd

    src = Path(edgekd.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "edgekd", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "edgekd" / "runtimes" / "toyrt.py").write_text(
        "from edgekd.runtimes.catalog import AdapterBase\n\n"
        "class ToyAdapter(AdapterBase):\n"
        "    name = 'toyrt'\n    format = 'toy'\n    suffixes = ('.toy',)\n    precisions = ('fp32',)\n"
        "    accelerators = {'cpu': 'host', 'tpu': 'edge-tpu'}\n"
        "    device_modules = (('toyrt', 'json', ()),)\n"
        "    standalone_loader = 'def load_runner(model, device):\\n    return lambda x: x\\n'\n"
        "    def unavailable_reason(self):\n        return None\n")
    (tmp_path / "targets").mkdir()
    (tmp_path / "targets" / "toy-board.yaml").write_text(
        "name: toy-board\narch: x86_64\nruntimes: [toyrt]\nformats: [toy]\nprecisions: [fp32]\n"
        "accelerator: TPU\ninput_layout: NCHW\ninstall: nothing\nhardware: {source: none}\n")
    code = (
        "import edgekd, edgekd.runtimes as r\n"
        f"assert edgekd.__file__.startswith({str(tmp_path)!r}), edgekd.__file__\n"
        "from edgekd.runtimes import catalog as c\n"
        "from edgekd.device.targets import load_target\n"
        "from edgekd.agent.fingerprint import runtimes\n"
        "from edgekd.bench.request import normalize_request\n"
        "from edgekd.device.profiles import Measurement\n"
        "from edgekd.latency.model import model_key\n"
        "from edgekd.deploy.bundle import run_model_source\n"
        f"t = load_target('toy-board', {str(tmp_path / 'targets')!r})\n"
        "assert (t.runtimes, t.formats, t.accelerator) == (('toyrt',), ('toy',), 'tpu')\n"
        "assert 'toy' in c.export_formats() and r.FORMAT_RUNTIME['toy'] == 'toyrt' and 'tpu' in c.all_accelerators()\n"
        "assert 'toyrt' in runtimes() and normalize_request({'accelerator': 'tpu'})['accelerator'] == 'tpu'\n"
        "m = Measurement(model_sha256='a' * 64, format='toy', precision='fp32', threads=0, batch=1, runtime='toyrt', accelerator='tpu')\n"
        "assert m.key == 'aaaaaaaaaaaa/toy/fp32/t0/b1@tpu', m.key\n"
        "assert model_key('toyrt', 'fp32', 0, 1, accelerator='tpu') == 'toyrt/fp32/t0/b1@tpu'\n"
        "assert \"DEVICE = 'edge-tpu'\" in run_model_source('toyrt', 'tpu')\n"
        "print('ok')\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_load_artifact_rejects_tampered_and_failed(runtime_artifacts, tmp_path):
    src = runtime_artifacts("onnxruntime")
    bad = tmp_path / "tampered"
    shutil.copytree(src, bad)
    with open(bad / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="sha256"):
        load_artifact(bad)
    failed = tmp_path / "failed"
    shutil.copytree(src, failed)
    manifest = json.loads((failed / "manifest.json").read_text())
    manifest.update(status="failed", error="fp32 parity: made up")
    (failed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="made up"):
        load_artifact(failed)
    assert load_artifact(failed, allow_failed=True).run({"input": np.zeros((1, 1, 8, 8), np.float32)}).shape == (1, 10)
    with pytest.raises(ModelError, match="no manifest"):
        load_artifact(tmp_path)
    with pytest.raises(ModelError, match="inputs"):
        load_artifact(src).run({"wrong": np.zeros((1, 1, 8, 8), np.float32)})
    with pytest.raises(ConfigError, match="threads"):
        load_artifact(src, threads=0)


def test_unsupported_precision_is_an_export_error(tiny, tmp_path):
    model, info, _ = tiny
    with pytest.raises(ExportError, match="fp16"):
        RUNTIMES.get("onnxruntime").export(model, info, tmp_path / "a", precision="fp16", calibration=None)
    with pytest.raises(ExportError, match="calibration"):
        RUNTIMES.get("onnxruntime").export(model, info, tmp_path / "b", precision="int8", calibration=None)


def test_a_converter_failure_is_one_export_error_and_temporaries_go(tmp_path):
    from edgekd.runtimes.host import export_step

    temp = tmp_path / "model.pre.onnx"
    temp.write_bytes(b"half")
    with pytest.raises(ExportError, match=r"^nncf quantization failed: ValueError: bad shape$"):
        with export_step("nncf quantization", temp):
            raise ValueError("bad shape")
    assert not temp.exists()
    temp.write_bytes(b"half")
    with pytest.raises(ExportError, match="^needs --data$"):  # our own errors pass through unchanged
        with export_step("nncf quantization", temp):
            raise ExportError("needs --data")
    assert not temp.exists()


# ------------------------------------------------------------------ TensorRT without TensorRT

def _onnx_model(op: str = "Relu", domain: str = "", opset: int = 18, dynamic: bool = False):
    import onnx
    from onnx import TensorProto, helper

    dims = ["N", 4] if dynamic else [1, 4]
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], domain=domain)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=imports)


def test_tensorrt_op_check_names_the_op():
    check_tensorrt_onnx(_onnx_model("Relu"))
    with pytest.raises(ExportError, match="QLinearConv.*unsupported by TensorRT 10"):
        check_tensorrt_onnx(_onnx_model("QLinearConv"))
    assert unsupported_ops(_onnx_model("Frobnicate", domain="com.example")) == ["com.example::Frobnicate"]
    with pytest.raises(ExportError, match="opset 21 outside"):
        check_tensorrt_onnx(_onnx_model(opset=21))
    with pytest.raises(ExportError, match="dynamic shape"):
        check_tensorrt_onnx(_onnx_model(dynamic=True))


def test_tensorrt_host_export_is_trt_ready(runtime_artifacts):
    import onnx

    path = runtime_artifacts("tensorrt", "int8")
    manifest = read_manifest(path)
    assert manifest["format"] == "tensorrt-onnx" and "calibration.npz" not in manifest["files"]
    assert manifest["options"]["precision_in_graph"].startswith("explicit Q/DQ")  # calibrated on the host
    check_tensorrt_onnx(onnx.load(str(path / "model.onnx")))
    if RUNTIMES.get("tensorrt").unavailable_reason() is not None:
        assert manifest["parity"]["proxy"]  # checked through ONNX Runtime, and says so
        with pytest.raises(RuntimeMissingError, match="tensorrt"):
            load_artifact(path)


def test_engine_cache_key_of_a_dla_engine_differs_and_a_gpu_key_is_unchanged():
    gpu = engine_cache_key("a" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "int8")
    assert engine_cache_key("a" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "int8", "gpu") == gpu
    dla = engine_cache_key("a" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "int8", "dla")
    assert dla != gpu and "-dla-" in dla


def test_engine_cache_key_changes_with_every_component():
    base = engine_cache_key("a" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "int8")
    assert base == engine_cache_key("a" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "int8")
    assert base.startswith("int8-trt10.3.0-nvidia-orin-nvgpu-")
    others = {engine_cache_key("b" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "int8"),
              engine_cache_key("a" * 64, "10.4.0", "NVIDIA Orin (nvgpu)", "int8"),
              engine_cache_key("a" * 64, "10.3.0", "Tesla T4", "int8"),
              engine_cache_key("a" * 64, "10.3.0", "NVIDIA Orin (nvgpu)", "fp16")}
    assert base not in others and len(others) == 4


def test_parse_trtexec_export_times(tmp_path):
    # the format trtexec --exportTimes writes (samples/common/sampleReporting.cpp, exportJSONTrace)
    entries = []
    for i, compute in enumerate([5.0, 5.0, 1.0, 1.2, 0.9, 1.1, 1.0]):
        start = i * 10.0
        entries.append({"startEnqMs": start, "endEnqMs": start + 0.05, "startH2dMs": start + 0.1,
                        "endH2dMs": start + 0.2, "startComputeMs": start + 0.2, "endComputeMs": start + 0.2 + compute,
                        "startD2hMs": start + 0.2 + compute, "endD2hMs": start + 0.25 + compute, "h2dMs": 0.1,
                        "computeMs": compute, "d2hMs": 0.05, "latencyMs": 0.15 + compute,
                        "endToEndMs": 0.15 + compute})
    path = tmp_path / "times.json"
    path.write_text("[\n" + "\n, ".join(json.dumps(e) for e in entries) + "\n]\n")
    parsed = parse_trtexec_times(path, warmup_ms=20.0)  # the first two are warm-up
    assert parsed["count"] == 5 and parsed["warmup_dropped"] == 2
    assert summarize_ms(parsed["compute_ms"])["median"] == pytest.approx(1.0)
    assert summarize_ms(parsed["latency_ms"])["max"] == pytest.approx(1.35)
    assert parsed["enqueue_ms"][0] == pytest.approx(0.05)
    path.write_text('{"not": "a list"}')
    with pytest.raises(ModelError, match="JSON list"):
        parse_trtexec_times(path)
    path.write_text('[{"latencyMs": 1}]')
    with pytest.raises(ModelError, match="exportTimes"):
        parse_trtexec_times(path)


def test_trtexec_command(runtime_artifacts, tmp_path):
    from edgekd.runtimes.tensorrt import trtexec_command

    path = runtime_artifacts("tensorrt", "int8")
    cmd = trtexec_command(path, "10.3.0", times_path=tmp_path / "t.json", plan_path=tmp_path / "e.plan")
    assert f"--onnx={path / 'model.onnx'}" in cmd and f"--exportTimes={tmp_path / 't.json'}" in cmd
    assert "--stronglyTyped" in cmd and "--int8" not in cmd and "--fp16" not in cmd  # int8 is in the graph


def test_tensorrt_engine_on_device(runtime_artifacts):
    _needs_runtime("tensorrt")  # skipped here: TensorRT needs an NVIDIA GPU
    runner = load_artifact(runtime_artifacts("tensorrt", "fp16"))
    manifest = read_manifest(runtime_artifacts("tensorrt", "fp16"))
    ref = np.load(runtime_artifacts("tensorrt", "fp16") / "reference.npz")
    assert np.abs(runner.run(feeds_from_nchw(manifest, ref["x"])) - ref["logits"]).max() < 0.05
