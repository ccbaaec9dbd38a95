"""Targets: built-in YAMLs, aliases, user directories, and one-line errors naming a bad file."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.errors import ConfigError
from edgekd.runtimes import RUNTIMES
from edgekd.device.targets import BUILTIN_TARGETS_DIR, list_targets, load_target

GOOD = """name: {name}
arch: aarch64
runtimes: [litert]
formats: [tflite]
precisions: [int8]
default_threads: 2
input_layout: NHWC
install: pip install 'edgekd[litert]'
hardware: {{peak_gflops_fp32: 10.0, memory_bandwidth_gbs: 4.0, source: vendor datasheet}}
"""


def test_builtin_targets_are_complete():
    names = [t.name for t in list_targets()]
    assert {"cpu", "nvidia-gpu", "jetson-orin-nano", "rpi4", "rpi5"} <= set(names)
    for target in list_targets():
        assert all(r in RUNTIMES for r in target.runtimes)
        assert target.hardware["source"] and target.hardware["memory_bandwidth_gbs"] > 0
        assert target.install and target.input_layout in ("NCHW", "NHWC")


def test_alias_and_unknown():
    assert load_target("jetson").name == "jetson-orin-nano"
    with pytest.raises(ConfigError, match="Did you mean 'rpi5'.*Valid targets: cpu"):
        load_target("rpi6")


def test_user_directory_and_env(tmp_path, monkeypatch):
    (tmp_path / "my-board.yaml").write_text(GOOD.format(name="my-board"))
    assert load_target("my-board", tmp_path).default_threads == 2
    monkeypatch.setenv("EDGEKD_TARGETS", str(tmp_path))
    assert "my-board" in [t.name for t in list_targets()]
    with pytest.raises(ConfigError, match="does not exist"):
        load_target("cpu", tmp_path / "missing")


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed", "unreadable YAML"),
    ("- a list", "mapping"),
    (GOOD.format(name="bad").replace("arch: aarch64\n", ""), "missing key"),
    (GOOD.format(name="bad").replace("[litert]", "[coreml]"), "unknown runtimes coreml"),
    (GOOD.format(name="other"), "must equal the file name"),
    (GOOD.format(name="bad").replace("source: vendor datasheet", "x: 1"), "source"),
    (GOOD.format(name="bad").replace("default_threads: 2", "default_threads: -1"), "default_threads"),
])
def test_bad_yaml_is_one_line_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        list_targets(tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_targets_cli(tmp_path):
    (tmp_path / "my-board.yaml").write_text(GOOD.format(name="my-board"))
    res = CliRunner().invoke(main, ["targets", "--json", "--targets-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    rows = {t["name"]: t for t in json.loads(res.output)}
    assert rows["my-board"]["runtimes"] == ["litert"] and "rpi4" in rows
    (tmp_path / "broken.yaml").write_text("name: [")
    res = CliRunner().invoke(main, ["targets", "--targets-dir", str(tmp_path)])
    assert res.exit_code == 2 and "broken.yaml" in res.output


def test_targets_subprocess():
    proc = subprocess.run([sys.executable, "-m", "edgekd", "targets"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "jetson-orin-nano" in proc.stdout
    assert BUILTIN_TARGETS_DIR.is_dir()


def test_built_in_targets_ship_inside_the_wheel(tmp_path):
    """A regular (non-editable) install finds the built-in targets: they are package data, not files
    next to the source tree."""
    import ast
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root / "edgekd", src / "edgekd", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "--disable-pip-version-check", "-w", str(tmp_path / "dist"), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("edgekd-*.whl"))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--disable-pip-version-check",
                              "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    code = ("import edgekd, edgekd.device.targets as t; print(edgekd.__file__); "
            "print(sorted(x.name for x in t.list_targets()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    where, names = proc.stdout.splitlines()
    assert where.startswith(str(site))  # the installed copy, not this source tree
    assert {"cpu", "jetson-orin-nano", "rpi4"} <= set(ast.literal_eval(names))


NPU = """name: {name}
arch: x86_64
runtimes: [openvino]
formats: [openvino]
precisions: [fp32, int8]
accelerator: {accelerator}
input_layout: NCHW
install: pip install 'edgekd[openvino]' and Intel's NPU driver
hardware: {{peak_gops_int8: 11000.0, memory_bandwidth_gbs: 60.0, source: test figures, not a datasheet}}
"""


def test_accelerator_from_the_target_yaml(tmp_path):
    """`accelerator: NPU` is read in edgekd's spelling; a target without one leaves each runtime on its
    default (None), which is what every built-in target has always meant."""
    (tmp_path / "intel-npu.yaml").write_text(NPU.format(name="intel-npu", accelerator="NPU"))
    target = load_target("intel-npu", tmp_path)
    assert target.accelerator == "npu" and target.to_dict()["accelerator"] == "npu"
    assert load_target("cpu").accelerator is None


@pytest.mark.parametrize("accelerator, message", [
    ("TPU", "unknown accelerator 'TPU'; accelerators: cpu, gpu, npu"),
    ("dla", "openvino does not run on dla; it runs on cpu, gpu, npu"),
    ("[1, 2]", "must be an accelerator name"),
])
def test_unknown_accelerator_is_a_one_line_config_error(tmp_path, accelerator, message):
    path = tmp_path / "bad.yaml"
    path.write_text(NPU.format(name="bad", accelerator=accelerator))
    with pytest.raises(ConfigError, match=message) as err:
        list_targets(tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    res = CliRunner().invoke(main, ["targets", "--targets-dir", str(tmp_path)])
    assert res.exit_code == 2 and "bad.yaml" in res.output and message.split(";")[0][:20] in res.output


def test_every_listed_runtime_must_run_on_the_target_accelerator(tmp_path):
    text = NPU.format(name="mixed", accelerator="npu").replace("[openvino]\nformats", "[openvino, onnxruntime]\nformats")
    (tmp_path / "mixed.yaml").write_text(text)
    with pytest.raises(ConfigError, match="onnxruntime does not run on npu"):
        list_targets(tmp_path)


def test_bench_with_an_unknown_accelerator_exits_2():
    res = CliRunner().invoke(main, ["bench", "runs/none", "--accelerator", "tpu", "--json"])
    assert res.exit_code == 2 and "unknown --accelerator 'tpu'; accelerators: cpu, gpu, npu" in res.output
