"""TensorRT 10 / 11 with the precision made on the host (issue 15), tested without TensorRT.

The FP16 and INT8 ONNX graphs are real exports of the tiny teacher, checked by reading the graphs
independently of edgekd's own checkers and run through the parity gate under ONNX Runtime. The
engine-build code and `run_trtexec` run against STAND-INS for an absent library (a small fake
`tensorrt` + `cuda` package and a fake `trtexec` script, written below): TensorRT cannot be installed on
these machines, so they only check which calls and flags edgekd would make on 10.x and 11.x (the fakes
reject what 11.x removed). They say nothing about what a real TensorRT builds; that is unverified.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgekd.errors import ExportError, ModelError
from edgekd.runtimes import read_manifest
from edgekd.runtimes.tensorrt_ops import (TRT11_REMOVED_BUILDER_FLAGS, TRT11_REMOVED_TRTEXEC_OPTIONS,
                                          check_tensorrt_onnx, parse_trtexec_banner, trt_major, trtexec_typing_options)
from edgekd.runtimes.tensorrt_precision import FP32_OPS, check_fp16_graph, check_qdq_graph

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FLOAT, INT8, FLOAT16 = 1, 3, 10


def _types(model) -> dict[str, int]:
    import onnx

    g = onnx.shape_inference.infer_shapes(model).graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in [*g.input, *g.output, *g.value_info]}
    out.update({i.name: i.data_type for i in g.initializer})
    return out


def _fp16_ok(model) -> None:
    """The FP16 rule read straight off the graph: float32 I/O, float16 weights and inputs for every
    weighted op, float32 in and out for every op that must stay float32."""
    types = _types(model)
    assert all(vi.type.tensor_type.elem_type == FLOAT for vi in [*model.graph.input, *model.graph.output])
    weighted = [n for n in model.graph.node if n.op_type in WEIGHTED]
    assert weighted and all(types[n.input[0]] == FLOAT16 and types[n.input[1]] == FLOAT16 for n in weighted)
    for node in model.graph.node:
        if node.op_type in FP32_OPS:
            floats = [types[t] for t in [*node.input, *node.output] if t and types[t] in (FLOAT, FLOAT16)]
            assert floats and all(t == FLOAT for t in floats), node.name  # (int64 axes inputs aside)


def test_fp16_artifact_is_cast_checked_and_passes_parity(runtime_artifacts):
    import onnx

    path = runtime_artifacts("tensorrt", "fp16")
    manifest = read_manifest(path)
    model = onnx.load(str(path / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    check_tensorrt_onnx(model)  # TensorRT's published ONNX operator list, opset, static shapes
    _fp16_ok(model)
    assert manifest["status"] == "ok", manifest["error"]
    parity = manifest["parity"]
    assert parity["passed"] and parity["proxy"] and "fp16 ONNX graph" in parity["proxy"]
    assert parity["runtime"]["runtime"] == "onnxruntime" and parity["accuracy_drop_pts"] <= 1.0
    assert parity["max_abs"] > 0  # ONNX Runtime ran the cast graph, not an fp32 copy of it
    assert manifest["options"]["precision_in_graph"].startswith("fp16") and manifest["options"]["strongly_typed"]
    assert set(manifest["files"]) == {"model.onnx", "reference.npz"}  # no calibration file any more


def test_fp16_cast_keeps_sensitive_ops_fp32(tmp_path):
    """A graph with the ops that must stay float32 (ReduceMean, Softmax): they stay float32 behind
    Casts; without the block list the same conversion casts them, and the checker says so."""
    import onnx
    import torch
    from onnxconverter_common import float16

    from edgekd.runtimes.tensorrt_precision import cast_fp16

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return torch.softmax(self.fc(self.conv(x).mean(dim=(2, 3))), dim=1)

    src = tmp_path / "net.onnx"
    torch.onnx.export(Net().eval(), (torch.randn(1, 1, 8, 8),), str(src), opset_version=18, dynamo=True,
                      input_names=["input"], output_names=["logits"])
    options = cast_fp16(src, tmp_path / "fp16.onnx")
    model = onnx.load(str(tmp_path / "fp16.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"ReduceMean", "Softmax", "Cast"} <= ops and options["fp32_kept_nodes"]
    _fp16_ok(model)
    check_tensorrt_onnx(model)
    unguarded = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    with pytest.raises(ExportError, match="cast to float16; it must stay float32"):
        check_fp16_graph(unguarded)


def _qdq_placement(model) -> dict[str, object]:
    """Q/DQ read straight off the graph: which ops each DequantizeLinear feeds, zero points, axes."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    fed = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in producer and producer[name].op_type == "DequantizeLinear":
                fed.setdefault(producer[name].name, []).append((node.op_type, i))
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    weights = []
    for node in model.graph.node:
        if node.op_type in WEIGHTED:
            dq = producer[node.input[1]]
            w = inits[dq.input[0]]
            scale = numpy_helper.to_array(inits[dq.input[1]])
            axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            out_axis = 0 if node.op_type == "Conv" or (node.op_type == "Gemm" and trans_b) else 1
            weights.append((node.op_type, w.data_type, axis, out_axis, scale.size, list(w.dims)))
    return {"fed": fed, "zero_points": zero_points, "weights": weights, "producer": producer}


def test_int8_artifact_has_qdq_exactly_where_tensorrt_wants_it(runtime_artifacts):
    import onnx
    from onnx import numpy_helper

    path = runtime_artifacts("tensorrt", "int8")
    manifest = read_manifest(path)
    model = onnx.load(str(path / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    check_tensorrt_onnx(model)
    found = _qdq_placement(model)
    weighted = [n for n in model.graph.node if n.op_type in WEIGHTED]
    assert weighted
    for node in weighted:  # both data inputs dequantized, the bias not
        assert found["producer"][node.input[0]].op_type == "DequantizeLinear"
        assert found["producer"][node.input[1]].op_type == "DequantizeLinear"
        if len(node.input) > 2 and node.input[2]:
            assert node.input[2] not in found["producer"] or found["producer"][node.input[2]].op_type != "DequantizeLinear"
    # every DequantizeLinear feeds a data/weight input of a weighted op, and no bias (the tiny teacher
    # has no skip connection, so here nothing else at all)
    assert all(op in WEIGHTED and i in (0, 1) for uses in found["fed"].values() for op, i in uses)
    n_dq = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    assert n_dq == len(found["fed"]) == 2 * len(weighted)  # one activation pair + one weight DQ per op
    assert found["zero_points"] and all(z.data_type == INT8 and not numpy_helper.to_array(z).any()
                                        for z in found["zero_points"])
    for op, dtype, axis, out_axis, scales, dims in found["weights"]:  # per output channel, stored int8
        assert dtype == INT8 and axis % len(dims) == out_axis and scales == dims[out_axis], (op, axis, dims)
    assert manifest["status"] == "ok", manifest["error"]
    parity = manifest["parity"]
    assert parity["passed"] and "int8 ONNX graph" in parity["proxy"] and parity["accuracy_drop_pts"] <= 1.0
    assert manifest["options"]["calibration_samples"] == 64  # the 64 real training digits of the fixture
    assert set(manifest["files"]) == {"model.onnx", "reference.npz"}
    assert check_qdq_graph(model)["quantized_nodes"] == [n.name for n in weighted]


def test_int8_residual_add_shares_the_conv_pair(tmp_path, digits_small):
    """A resnet block: the skip connection's tensor feeds a Conv (quantized) and the residual Add, which
    shares that Q/DQ pair, as TensorRT's placement advice for skip connections asks; still no bias or
    weight DQ anywhere else."""
    import onnx

    from edgekd.models import create_model
    from edgekd.runtimes.host import export_onnx
    from edgekd.runtimes.tensorrt_precision import quantize_qdq_int8

    model = create_model("resnet:blocks=1,depth=2,width=8", (1, 8, 8), 10).eval()
    info = type("Info", (), {"input_shape": (1, 8, 8), "num_classes": 10, "task": "image"})()
    src = export_onnx(model, info, tmp_path / "fp32.onnx", batch=1, dynamic_batch=False)
    calib = [{"input": digits_small.train.x[i:i + 1]} for i in range(32)]
    quantize_qdq_int8(src, tmp_path / "int8.onnx", calib, batch=1)
    q = onnx.load(str(tmp_path / "int8.onnx"))
    found = _qdq_placement(q)
    adds = [uses for uses in found["fed"].values() if any(op == "Add" for op, _ in uses)]
    assert adds and all(any(op in WEIGHTED and i == 0 for op, i in uses) for uses in adds)
    assert all(i in (0, 1) for uses in found["fed"].values() for op, i in uses if op in WEIGHTED)
    assert check_qdq_graph(q)["quantized_nodes"]


def test_qdq_checker_rejects_the_onnxruntime_cpu_layout(runtime_artifacts):
    """The ONNX Runtime adapter's own INT8 (asymmetric activations, int32 bias DQ) is not TensorRT's form."""
    import onnx

    model = onnx.load(str(runtime_artifacts("onnxruntime", "int8") / "model.onnx"))
    with pytest.raises(ExportError, match="not symmetric INT8|feeds"):
        check_qdq_graph(model)


# --- stand-in for the absent TensorRT + cuda-python: records what edgekd asks of them --------------
FAKE_TENSORRT = '''
"""STAND-IN for NVIDIA TensorRT, which cannot be installed here. Records calls to calls.json. On 11.x it
lacks what 11.x removed (BuilderFlag.FP16/INT8/..., IBuilderConfig.int8_calibrator, ...), so using any
of them raises AttributeError as the real 11.x bindings do."""
import json, os
__version__ = os.environ["FAKE_TRT_VERSION"]
ELEVEN = int(__version__.split(".")[0]) >= 11
CALLS = []
def _log(*what):
    CALLS.append(list(what))
    with open(os.environ["FAKE_TRT_CALLS"], "w") as fh:
        json.dump(CALLS, fh)
REMOVED_FLAGS = {"FP16", "INT8", "FP8", "BF16", "INT4", "FP4", "OBEY_PRECISION_CONSTRAINTS",
                 "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO"}
class _FlagEnum:
    def __getattr__(self, name):
        _log("BuilderFlag", name)
        if ELEVEN and name in REMOVED_FLAGS:
            raise AttributeError(f"type object 'tensorrt.BuilderFlag' has no attribute '{name}'")
        return 1
BuilderFlag = _FlagEnum()
class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 1  # its enum value in 10.x (EXPLICIT_BATCH is 0); 11.x keeps it, ignored
class MemoryPoolType:
    WORKSPACE = 0
class Logger:
    WARNING = 2
    def __init__(self, level=None):
        pass
class _Config:
    def __init__(self):
        object.__setattr__(self, "flags", [])
    def set_flag(self, flag):
        _log("set_flag", flag)
    def set_memory_pool_limit(self, pool, size):
        _log("set_memory_pool_limit", pool, size)
    def __setattr__(self, name, value):
        _log("config_set", name)
        if ELEVEN and name in ("int8_calibrator", "quantization_flags"):
            raise AttributeError(f"'tensorrt.IBuilderConfig' object has no attribute '{name}'")
        object.__setattr__(self, name, value)
class Builder:
    def __init__(self, logger):
        pass
    def create_network(self, flags=0):
        _log("create_network", flags)
        return object()
    def create_builder_config(self):
        return _Config()
    def build_serialized_network(self, network, config):
        _log("build_serialized_network")
        return b"fake-plan"
    def __getattr__(self, name):
        _log("builder_get", name)
        raise AttributeError(name)
class OnnxParser:
    def __init__(self, network, logger):
        self.num_errors = 0
    def parse(self, data):
        _log("parse", len(data))
        return True
'''

FAKE_CUDART = '''
"""STAND-IN for cuda-python's runtime bindings (no GPU here): one device named like a T4."""
class _Props:
    name = b"Tesla T4"
def cudaGetDeviceProperties(index):
    return (0, _Props())
'''

BUILD = '''
import json, sys
from pathlib import Path
from edgekd.runtimes.tensorrt import build_engine
cache = Path(sys.argv[2])
plan1, key, cached1 = build_engine(Path(sys.argv[1]), sys.argv[3], cache_dir=cache)
plan2, key2, cached2 = build_engine(Path(sys.argv[1]), sys.argv[3], cache_dir=cache)
print(json.dumps({"key": key, "cached": [cached1, cached2], "plan": plan1.decode(), "same": key == key2}))
'''


@pytest.fixture(scope="module")
def fake_trt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fake-trt")
    (root / "tensorrt").mkdir()
    (root / "tensorrt" / "__init__.py").write_text(FAKE_TENSORRT)
    (root / "cuda" / "bindings").mkdir(parents=True)
    (root / "cuda" / "__init__.py").write_text("")
    (root / "cuda" / "bindings" / "__init__.py").write_text("")
    (root / "cuda" / "bindings" / "runtime.py").write_text(FAKE_CUDART)
    return root


def _build_with(fake_trt: Path, version: str, artifact: Path, tmp_path: Path, precision: str) -> tuple[dict, list]:
    calls = tmp_path / f"calls-{version}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake_trt), os.environ.get("PYTHONPATH", "")]),
           "FAKE_TRT_VERSION": version, "FAKE_TRT_CALLS": str(calls)}
    proc = subprocess.run([sys.executable, "-c", BUILD, str(artifact / "model.onnx"), str(tmp_path / f"plans-{version}"),
                           precision], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), json.loads(calls.read_text())


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_build_sets_no_precision_flag_on_10_and_11(fake_trt, runtime_artifacts, tmp_path, precision):
    artifact = runtime_artifacts("tensorrt", precision)
    for version, network_flags in (("10.3.0", 1 << 1), ("11.4.1", 0)):
        out, calls = _build_with(fake_trt, version, artifact, tmp_path, precision)
        kinds = [c[0] for c in calls]
        # 10.x: strongly typed by the creation flag; 11.x: no flag (always strongly typed there)
        assert ["create_network", network_flags] in calls, calls
        assert "set_flag" not in kinds and "BuilderFlag" not in kinds and "builder_get" not in kinds, calls
        assert not [c for c in calls if c[0] == "config_set"], calls  # no calibrator, no quantization flags
        assert kinds.count("build_serialized_network") == 1  # the second call came from the plan cache
        assert out["cached"] == [False, True] and out["plan"] == "fake-plan" and out["same"]
        assert out["key"].startswith(f"{precision}-trt{version}-tesla-t4-")  # the cache key names the version


def test_stand_in_rejects_what_11_removed(fake_trt, tmp_path):
    """The stand-in is strict enough to catch the old code path: BuilderFlag.FP16 raises under 11.x."""
    env = {**os.environ, "PYTHONPATH": str(fake_trt), "FAKE_TRT_VERSION": "11.4.1",
           "FAKE_TRT_CALLS": str(tmp_path / "c.json")}
    proc = subprocess.run([sys.executable, "-c", "import tensorrt as trt; trt.Builder(None).create_builder_config()"
                           ".set_flag(trt.BuilderFlag.FP16)"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode != 0 and "has no attribute 'FP16'" in proc.stderr
    assert {"FP16", "INT8"} <= TRT11_REMOVED_BUILDER_FLAGS


def test_tensorrt_module_names_nothing_11_removed():
    """Every attribute the device code touches, read from its source: none is one 11.x removed (the
    stand-in runs above cover the executed path; this covers the branches they do not reach)."""
    import ast

    import edgekd.runtimes.tensorrt as module
    from edgekd.runtimes.tensorrt_ops import TRT11_REMOVED_BUILDER_ATTRS, TRT11_REMOVED_CONFIG_ATTRS

    removed = (TRT11_REMOVED_BUILDER_FLAGS | TRT11_REMOVED_CONFIG_ATTRS | TRT11_REMOVED_BUILDER_ATTRS
               | {"IInt8EntropyCalibrator2", "IInt8Calibrator", "IInt8MinMaxCalibrator", "CalibrationAlgoType"})
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert "create_network" in used and "build_serialized_network" in used  # the scan sees the build path
    assert not used & removed, used & removed
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    assert not [s for s in strings if s in TRT11_REMOVED_TRTEXEC_OPTIONS]


def test_old_artifact_without_precision_in_graph_is_refused(runtime_artifacts, tmp_path):
    import shutil

    from edgekd.runtimes.tensorrt import check_artifact_precision

    artifact = tmp_path / "old"
    shutil.copytree(runtime_artifacts("tensorrt", "fp16"), artifact)
    manifest = read_manifest(artifact)
    check_artifact_precision(manifest, artifact)
    manifest["options"].pop("precision_in_graph")
    with pytest.raises(ModelError, match="re-export"):
        check_artifact_precision(manifest, artifact)


# --- trtexec ---------------------------------------------------------------------------------------
def test_trtexec_version_banner_and_majors():
    assert parse_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v100500] [b18] # trtexec --help") == "10.5.0"
    assert parse_trtexec_banner("&&&& RUNNING TensorRT.trtexec [TensorRT v110401] # trtexec") == "11.4.1"
    assert parse_trtexec_banner("[TensorRT v8601]") == "8.6.1"
    assert parse_trtexec_banner("[TensorRT v10.3.0]") == "10.3.0"
    assert parse_trtexec_banner("no banner") is None
    assert trt_major("10.3.0") == 10 and trt_major("11.4.1.5") == 11
    with pytest.raises(ModelError, match="too old"):
        trt_major("8.6.1")
    with pytest.raises(ModelError, match="cannot read"):
        trt_major("latest")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trtexec_command_per_version(runtime_artifacts, tmp_path, precision):
    from edgekd.runtimes.tensorrt import trtexec_command

    path = runtime_artifacts("tensorrt", precision)
    for version in ("10.3.0", "11.4.1"):
        cmd = trtexec_command(path, version, times_path=tmp_path / "t.json", plan_path=tmp_path / "e.plan")
        assert f"--onnx={path / 'model.onnx'}" in cmd and f"--exportTimes={tmp_path / 't.json'}" in cmd
        assert not set(cmd) & set(TRT11_REMOVED_TRTEXEC_OPTIONS), cmd
        assert ("--stronglyTyped" in cmd) == version.startswith("10.")
    assert trtexec_typing_options("10.0.1") == ["--stronglyTyped"] and trtexec_typing_options("11.0.0") == []


FAKE_TRTEXEC = '''#!{python}
"""STAND-IN for NVIDIA trtexec (not installable here): prints the version banner, refuses the options
11.x removed, records its argv and writes an --exportTimes trace."""
import json, os, sys
version = os.environ["FAKE_TRTEXEC_VERSION"]
major, minor, patch = (int(p) for p in version.split("."))
print(f"&&&& RUNNING TensorRT.trtexec [TensorRT v{{major * 10000 + minor * 100 + patch}}] # trtexec " + " ".join(sys.argv[1:]))
if "--help" in sys.argv:
    sys.exit(0)
removed = {{"--fp16", "--int8", "--bf16", "--fp8", "--int4", "--best"}}
if major >= 11 and removed & set(sys.argv):
    print("[E] Unknown option: " + sorted(removed & set(sys.argv))[0]); sys.exit(1)
with open(os.environ["FAKE_TRTEXEC_ARGV"], "w") as fh:
    json.dump(sys.argv[1:], fh)
times = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--exportTimes="))
trace = [{{"startEnqMs": i, "endEnqMs": i + 0.01, "startComputeMs": i + 0.1, "computeMs": 0.5 + i * 0.01,
          "latencyMs": 0.6 + i * 0.01, "endToEndMs": 0.7}} for i in range(20)]
open(times, "w").write(json.dumps(trace))
'''


@pytest.mark.parametrize("version", ["10.3.0", "11.4.1"])
def test_run_trtexec_detects_the_version(runtime_artifacts, tmp_path, monkeypatch, version):
    from edgekd.runtimes.tensorrt import run_trtexec

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "trtexec"
    exe.write_text(textwrap.dedent(FAKE_TRTEXEC.format(python=sys.executable)))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TRTEXEC_VERSION", version)
    monkeypatch.setenv("FAKE_TRTEXEC_ARGV", str(tmp_path / "argv.json"))
    out = run_trtexec(runtime_artifacts("tensorrt", "int8"), out_dir=tmp_path / "out", iterations=20)
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert out["tensorrt_version"] == version and out["count"] == 20
    assert ("--stronglyTyped" in argv) == version.startswith("10.") and "--int8" not in argv
    assert out["compute_ms"]["median"] == pytest.approx(float(np.median([0.5 + i * 0.01 for i in range(20)])))


def test_targets_say_which_tensorrt_they_run():
    from edgekd.device.targets import load_target
    from edgekd.runtimes.tensorrt_ops import SUPPORTED_TRT_MAJORS

    for name, want in (("nvidia-gpu", {"10", "11"}), ("jetson", {"10"})):
        data = yaml.safe_load(Path(load_target(name).path).read_text())
        assert set(data["tensorrt_versions"]) == want
        assert {int(v) for v in want} <= set(SUPPORTED_TRT_MAJORS)


def test_export_plan_for_gpu_precisions_leaves_out_what_no_adapter_makes():
    """`edgekd export --target nvidia-gpu -p fp16,int8`: TensorRT fp16 + int8 and ONNX Runtime int8,
    no failed ONNX Runtime fp16 row; explicit formats still get every pair (and a reason per row)."""
    from edgekd.errors import ConfigError
    from edgekd.runtimes.export import _plan
    from edgekd.device.targets import load_target

    gpu = load_target("nvidia-gpu")
    assert _plan(gpu, None, ["fp16", "int8"]) == [("tensorrt", "fp16"), ("tensorrt", "int8"), ("onnx", "int8")]
    assert ("onnx", "fp16") in _plan(gpu, ["tensorrt", "onnx"], ["fp16"])
    onnx_only = dataclasses.replace(gpu, formats=("onnx",))
    with pytest.raises(ConfigError, match="no format of target 'nvidia-gpu' exports fp16"):
        _plan(onnx_only, None, ["fp16"])
