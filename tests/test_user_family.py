"""Bring your own family: a user's builder (module:function) with a YAML grid joins the registry,
is listed with its MACs, distilled and exported like a built-in; every failure is one line, exit 2.
Real subprocesses of the CLI with the user's module on PYTHONPATH."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

USER_MODULE = '''
import torch
from torch import nn


def build(num_classes, in_channels=1, width=8, depth=1):
    """A plain user CNN: depth strided 3x3 convs of width channels."""
    layers, c = [], in_channels
    for _ in range(depth):
        layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


def broken(width=8):
    raise ValueError("width must be a power of two")


def wrong_logits(width=8):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 3))


class Eigen(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        y = self.conv(x).mean((2, 3))
        return self.head(torch.linalg.eigvalsh(y[:, :, None] * y[:, None, :] + torch.eye(4)))


def no_export(num_classes, in_channels, width=8):
    return Eigen(num_classes, in_channels)
'''


@pytest.fixture(scope="module")
def user_pkg(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("user-pkg")
    (root / "my_models.py").write_text(textwrap.dedent(USER_MODULE), encoding="utf-8")
    (root / "grid.yaml").write_text("name: mynet\ngrid:\n  width: [16, 8]\n  depth: [1, 2]\n", encoding="utf-8")
    (root / "one.yaml").write_text("width: [8]\n", encoding="utf-8")
    return root


def _edgekd(args: list[str], pkg: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pkg), "EDGEKD_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_listed_like_a_builtin(user_pkg: Path, tmp_path: Path) -> None:
    res = _edgekd(["models", "--family", "my_models:build", "--family-grid", str(user_pkg / "grid.yaml"),
                   "--input-shape", "1x8x8", "--json"], user_pkg, tmp_path)
    assert res.returncode == 0, res.stderr
    [fam] = json.loads(res.stdout)["families"]
    assert fam["name"] == "mynet" and fam["role"] == "student" and fam["scale"] == "real"
    specs = [row["spec"] for row in fam["search_space"]]
    assert len(specs) == 4 and specs[0] == "mynet:depth=1,resolution=0,width=8"
    params = [row["params"] for row in fam["search_space"]]
    assert params == sorted(params) and all(row["macs"] > 0 for row in fam["search_space"])


@pytest.mark.parametrize("builder,grid,words", [
    ("nosuch_module:build", None, "cannot import nosuch_module"),
    ("my_models:broken", "one.yaml", "raised ValueError: width must be a power of two"),
    ("my_models:no_export", "one.yaml", "does not export to ONNX"),
])
def test_failures_are_one_line_exit_2(builder: str, grid: str | None, words: str, user_pkg: Path, tmp_path: Path) -> None:
    args = ["models", "--family", builder] + (["--family-grid", str(user_pkg / grid)] if grid else [])
    res = _edgekd(args, user_pkg, tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("builder,grid,words", [
    ("my_models:missing", None, "has no function 'missing'"),
    ("my_models:wrong_logits", {"width": [8]}, "expected (2, 10) logits"),
    ("my_models:build", "absent.yaml", "does not exist"),
    ("my_models:build", {"colour": [1, 2]}, "takes no argument 'colour'"),
    ("my_models:build", {"width": [[8, 16]]}, "list of numbers"),
    ("not a ref", None, "is not module:function"),
])
def test_bad_builders_and_grids_in_process(builder, grid, words, user_pkg: Path, tmp_path: Path, monkeypatch) -> None:
    """The same one-line ConfigErrors through the API (what the CLI prints after `error:`)."""
    from edgekd import api
    from edgekd.errors import ConfigError

    monkeypatch.syspath_prepend(str(user_pkg))
    grid = str(tmp_path / grid) if isinstance(grid, str) else grid
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        name = api.register_family(builder, grid, name=f"t_{abs(hash((builder, str(grid)))) % 10**6}")
        api.check_family(name, (1, 8, 8), 10)


def test_a_family_is_unregistered_to_register_an_edited_grid(user_pkg: Path, monkeypatch) -> None:
    from edgekd import api
    from edgekd.errors import ConfigError
    from edgekd.models import MODELS

    monkeypatch.syspath_prepend(str(user_pkg))
    name = api.register_family("my_models:build", {"width": [8]}, name="t_edited")
    with pytest.raises(ConfigError, match="is taken"):
        api.register_family("my_models:build", {"width": [16]}, name="t_edited")
    api.unregister_family(name)
    assert name not in MODELS
    assert api.register_family("my_models:build", {"width": [16]}, name="t_edited") == name
    assert MODELS.get(name).space == (f"{name}:resolution=0,width=16",)  # the edited grid, not the first
    with pytest.raises(ConfigError, match="'cnn' is a built-in family"):
        api.unregister_family("cnn")
    assert "cnn" in MODELS
    with pytest.raises(ConfigError, match="unknown model family 'nope'"):
        api.unregister_family("nope")


def test_distilled_and_exported(user_pkg: Path, tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    grid = str(user_pkg / "grid.yaml")
    res = _edgekd(["distill", "--family", "my_models:build", "--family-grid", grid, "--student", "mynet:width=16",
                   "--teacher", str(tiny_teacher_ckpt), "--epochs", "2", "--threads", "1", "-o", "run", "--json"],
                  user_pkg, tmp_path)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["student"] == "mynet:width=16" and summary["macs"] > 0 and summary["teacher"]
    # a checkpoint never makes edgekd import code it names: without --family, one line saying so
    bare = _edgekd(["export", "run/student.pt", "-f", "onnx", "-p", "fp32", "-o", "exp"], user_pkg, tmp_path)
    assert bare.returncode == 2 and "register it first with --family my_models:build" in bare.stderr
    ok = _edgekd(["export", "run/student.pt", "-f", "onnx", "-p", "fp32", "-o", "exp", "--json",
                  "--family", "my_models:build", "--family-grid", grid], user_pkg, tmp_path)
    assert ok.returncode == 0, ok.stderr
    [row] = json.loads(ok.stdout)["rows"]
    assert row["status"] == "ok" and row["max_abs"] <= 1e-4
