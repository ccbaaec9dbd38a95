"""Bring your own family, end to end: the example family of the README (examples/my_models.py with
examples/my_grid.yaml) is listed, calibrated, ranked by `select`, deployed and verified on this
machine, and its checkpoint reloaded; every way a family can fail stops `deploy` with one `error:`
line, exit 2, before anything is written. Real subprocesses of the CLI, the user's module on
PYTHONPATH (no mocks); digits at 8x8, tiny students, 2 epochs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import subprocess_error

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
GRID = str(EXAMPLES / "my_grid.yaml")
FAMILY = ["--family", "my_models:build", "--family-grid", GRID]
FAST_TIMING = ["--threads", "1"]
FAST_VERIFY = ["--min-seconds", "0.2"]  # deploy's timed loops (the test checks the loop, not a figure)


def _edgekd(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(Path(__file__).parent)]),
           "EDGEKD_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def test_example_family_is_listed_with_params_and_macs(tmp_path: Path) -> None:
    res = _edgekd(["models", *FAMILY, "--input-shape", "1x8x8", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    [fam] = json.loads(res.stdout)["families"]
    assert fam["name"] == "mixer" and fam["role"] == "student"
    rows = fam["search_space"]
    assert len(rows) == 12  # width 3 x depth 2 x groups 2
    assert [r["params"] for r in rows] == sorted(r["params"] for r in rows)
    # grouped 1x1 convs cost a quarter of the dense ones: groups=4 is the cheaper of two otherwise equal specs
    macs = {r["spec"]: r["macs"] for r in rows}
    assert macs["mixer:depth=2,groups=4,resolution=0,width=32"] < macs["mixer:depth=2,groups=1,resolution=0,width=32"]


def test_unknown_layer_kinds_get_latency_features() -> None:
    """GELU, LayerNorm, Upsample, grouped and functional convs: features for all, none lost."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from edgekd.latency.features import architecture_features, padded_conv_macs

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3, padding=1)
            self.grouped = nn.Conv2d(8, 8, 1, groups=4)
            self.norm = nn.LayerNorm(8)
            self.up = nn.Upsample(scale_factor=2)
            self.w = nn.Parameter(torch.ones(8, 10))

        def forward(self, x):
            y = self.up(F.gelu(self.grouped(self.conv(x))))
            y = F.conv2d(y, torch.ones(8, 8, 3, 3))  # functional: no module to hook
            return torch.einsum("nc,ck->nk", self.norm(y.mean((2, 3))), self.w)

    feats = architecture_features(Odd(), (1, 8, 8))
    assert feats["conv"] == 2 and feats["bn"] == 1  # LayerNorm counted with the norms
    assert feats["conv_shapes"].split()[1] == f"2:2:{8 * 8 * 8 * 2}"  # one group's channels: 8/4 in, 8/4 out
    assert feats["matmul_macs"] >= 8 * 8 * 9 * 14 * 14  # the functional conv, priced outside layers
    assert feats["activation_bytes"] >= 8 * 16 * 16 * 4  # the upsampled map counts as memory traffic
    assert padded_conv_macs(feats, 8, 8) > 0


def _digits_run(tmp_path: Path, tiny_teacher_ckpt: Path) -> list[str]:
    return ["--target", "cpu", "--teacher", str(tiny_teacher_ckpt), "--budget-ms", "5", "--min-accuracy", "0.5",
            "--epochs", "2", "--max-rounds", "2", *FAST_TIMING, *FAST_VERIFY, "-o", "bundle", "--work-dir", "work"]


@pytest.mark.parametrize("family,grid,words", [
    ("user_family_faults:raises", "width: [8]\n", "raised RuntimeError: no weights for width 8"),
    ("user_family_faults:not_a_module", "width: [8]\n", "returned dict, not a torch nn.Module"),
    ("user_family_faults:no_export", "width: [4]\n", "does not export to ONNX"),
    ("my_models:build", "width: [8, 16\n", "is not readable YAML"),
    ("my_models:build", "width: [8]\nkernel: [3]\n", "takes no argument 'kernel'"),
    ("my_models:nope", "width: [8]\n", "has no function 'nope'"),
    ("not_installed_pkg.models:build", "width: [8]\n", "cannot import not_installed_pkg.models"),
    (None, "width: [8]\n", "--family-grid needs --family"),
])
def test_deploy_refuses_a_bad_family_before_writing_anything(family, grid, words, tmp_path, tiny_teacher_ckpt):
    (tmp_path / "grid.yaml").write_text(grid, encoding="utf-8")
    args = ["deploy", *_digits_run(tmp_path, tiny_teacher_ckpt), "--family-grid", "grid.yaml"]
    res = _edgekd(args + (["--family", family] if family else []), tmp_path)
    assert words in subprocess_error(res)
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "work").exists()


def test_family_only_needs_a_family(tmp_path, tiny_teacher_ckpt):
    res = _edgekd(["deploy", *_digits_run(tmp_path, tiny_teacher_ckpt), "--family-only"], tmp_path)
    assert "--family-only needs --family" in subprocess_error(res)


@pytest.mark.slow
def test_calibrate_select_deploy_and_reload(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    profile = str(tmp_path / "cpu.yaml")
    cal = _edgekd(["profile", "calibrate", "--device", "local", "--profile", profile, "--count", "6", *FAST_TIMING,
                   "--min-seconds", "0.15", "--rounds", "1", "--min-count", "50", "--json", *FAMILY], tmp_path)
    assert cal.returncode == 0, cal.stderr
    report = json.loads(cal.stdout)
    measured = [r["spec"] for r in report["rows"] if r["ok"]]
    # the user family is sampled like a built-in (about a quarter of --count), off its own grid
    mixers = [s for s in measured if s.startswith("mixer:")]
    space = set(_space(tmp_path))
    assert mixers and not set(mixers) & space

    sel = _edgekd(["select", "--profile", profile, "--budget-ms", "1000", "--json", *FAMILY], tmp_path)
    assert sel.returncode == 0, sel.stderr
    ranked = json.loads(sel.stdout)["candidates"]
    mine = [c for c in ranked if c["spec"].startswith("mixer:") and c["latency_source"] == "predicted"]
    assert {c["spec"] for c in mine} == space  # every student of the family, predicted
    assert all(c["latency_ms"] > 0 for c in mine)
    # (the calibration's own mixers, off the grid, are candidates too: measured, as any profiled model)
    assert {c["spec"] for c in ranked if c["spec"].startswith("mixer:") and c["latency_source"] == "measured"} \
        == set(mixers)
    assert any(not c["spec"].startswith("mixer:") for c in ranked)  # with the built-in ones

    dep = _edgekd(["deploy", *_digits_run(tmp_path, tiny_teacher_ckpt), "--profile", profile, "--family-only",
                   "--calibrate-count", "6",
                   "--json", *FAMILY], tmp_path)
    assert dep.returncode == 0, dep.stderr[-3000:]
    out = json.loads(dep.stdout)
    assert out["status"] == "verified", out["status_note"]
    assert out["chosen"]["spec"].startswith("mixer:") and out["chosen"]["measured"]["accuracy"] >= 0.5
    assert all(spec.startswith("mixer:") for spec in out["distilled"])  # --family-only: the family alone

    # the bundle's checkpoint records the builder; reloading it needs the family registered again
    bare = _edgekd(["export", "bundle/student.pt", "-f", "onnx", "-p", "fp32", "-o", "again"], tmp_path)
    assert "register it first with --family my_models:build" in subprocess_error(bare)
    assert not (tmp_path / "again").exists()
    again = _edgekd(["export", "bundle/student.pt", "-f", "onnx", "-p", "fp32", "-o", "again", "--json", *FAMILY],
                    tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rows"][0]["status"] == "ok"


def _space(cwd: Path) -> list[str]:
    res = _edgekd(["models", *FAMILY, "--json"], cwd)
    assert res.returncode == 0, res.stderr
    return [r["spec"] for r in json.loads(res.stdout)["families"][0]["search_space"]]
