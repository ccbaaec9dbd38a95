"""`--space` together with the joint choice of runtime x precision: `edgekd profile calibrate --space`
(untrained students around the space, each at its own resolution), `edgekd select --space ... --format
auto` (every configuration the profile has, ranked by the weights' bytes on the device, only the space's
students) and `edgekd deploy --space ... --precision fp32,int8` (choose, verify on this machine, record
the INT8 settings, draw the candidates). Real objects and subprocesses, tiny students (ResNet basic
blocks at 12 and 16 px on digits 8x8), no mocks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import subprocess_error

from edgekd.models.spec import parse_spec

GRID = "resnet_basic: {width: [8, 12], depth: 10, resolution: [12, 16]}\n"


def _edgekd(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEKD_CACHE": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def space_profile(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`profile calibrate --space GRID` for ONNX Runtime fp32 and int8, in process (short timed loops:
    the test checks what was measured and where, not how fast)."""
    from edgekd import api

    root = tmp_path_factory.mktemp("joint-space")
    grid = root / "grid.yaml"
    grid.write_text(GRID, encoding="utf-8")
    report = api.calibrate(device="inprocess", profile="box", profiles_dir=str(root / "profiles"), count=6,
                           space=str(grid), runtimes=["onnxruntime"], precisions=["fp32", "int8"], threads=1,
                           rounds=1, work_dir=str(root / "cal"), request={"min_s": 0.02, "min_count": 20,
                                                                           "warmup_s": 0.01})
    return {"root": root, "grid": grid, "report": report}


def test_calibrate_space_measures_untrained_students_around_it_at_their_resolutions(space_profile: dict) -> None:
    from edgekd.deploy.spaces import space_specs
    from edgekd.runtimes import read_manifest

    report, grid = space_profile["report"], space_profile["grid"]
    space = space_specs(str(grid))
    rows = [r for r in report["rows"] if r["ok"]]
    specs = {r["spec"] for r in rows}
    # around the grid: ResNet basic blocks only (not the micro families), resolutions 12-16 px + one step
    assert {parse_spec(s)[0] for s in specs} == {"resnet_basic"}
    assert {int(parse_spec(s)[1]["resolution"]) for s in specs} <= {12, 16, 20}
    assert {int(parse_spec(s)[1]["width"]) for s in specs} <= {8, 12, 16}
    assert set(space) & specs  # a 4-student grid has few variants around it: its own fill the sample up
    assert {(r["runtime"], r["precision"]) for r in rows} == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    assert report["space"] == {"students": 4, "resolutions": sorted({int(parse_spec(s)[1]["resolution"])
                                                                     for s in specs})}
    # each exported at its own resolution, whatever the data's 8x8
    manifests = [read_manifest(m.parent) for m in (space_profile["root"] / "cal").rglob("manifest.json")]
    assert {(m["source"]["spec"], m["precision"]) for m in manifests} == {(r["spec"], r["precision"]) for r in rows}
    for m in manifests:
        size = int(parse_spec(m["source"]["spec"])[1]["resolution"])
        assert m["inputs"][0]["shape"][-2:] == [size, size]
    assert set(report["models"]) == {"onnxruntime/fp32/t1/b1", "onnxruntime/int8/t1/b1"}


def test_select_space_with_format_auto_chooses_runtime_and_precision_by_bytes(space_profile: dict) -> None:
    root, grid = space_profile["root"], space_profile["grid"]
    profile = space_profile["report"]["profile"]
    from edgekd.deploy.spaces import space_specs

    space = set(space_specs(str(grid)))
    res = _edgekd(["select", "--profile", profile, "--budget-ms", "1000", "--percentile", "50", "--space", str(grid),
                   "--format", "auto", "--precision", "auto", "--json"], root)
    assert res.returncode == 0, res.stderr
    sel = json.loads(res.stdout)
    assert sel["joint"] and "bytes per weight" in sel["rule"]
    cands = sel["candidates"]
    assert {c["spec"] for c in cands} == space  # the space's students only: no calibration student, no teacher
    assert {c["precision"] for c in cands} == {"fp32", "int8"}
    # 1 s holds every one: the smallest on the device wins, an INT8 student (a quarter of its fp32 self)
    chosen = sel["chosen"]
    assert chosen["precision"] == "int8" and chosen["size_bytes"] == chosen["params"]
    assert chosen["size_bytes"] == min(c["size_bytes"] for c in cands if c["status"] in ("chosen", "fits"))
    fp32 = [c for c in cands if c["precision"] == "fp32" and c["spec"] == chosen["spec"]]
    assert fp32 and all(f"{chosen['size_bytes'] / 1e6:.4g} MB" in f["reasons"][0] for f in fp32)
    # without --format auto: fewest params, the rule as before
    plain = json.loads(_edgekd(["select", "--profile", profile, "--budget-ms", "1000", "--space", str(grid), "--json"],
                               root).stdout)
    assert not plain["joint"] and "fewest parameters" in plain["rule"]


@pytest.mark.parametrize("extra,words", [
    (["--format", "auto,onnx"], "--format auto chooses among every format"),
    (["--precision", "int8,auto"], "--precision auto chooses among every precision"),
    (["--format", "auto", "--precision", "fp16"], "no measurement and no latency model for the requested"),
])
def test_select_joint_bad_combinations_are_one_line(space_profile: dict, extra: list[str], words: str) -> None:
    res = _edgekd(["select", "--profile", space_profile["report"]["profile"], "--budget-ms", "1", "--space",
                   str(space_profile["grid"]), *extra], space_profile["root"])
    assert words in subprocess_error(res)


def test_calibrate_space_refuses_text_and_unknown_spaces_before_any_work(tmp_path: Path) -> None:
    for extra, words in ((["--space", "real", "--data", "reviews"], "no real-scale student family takes text"),
                         (["--space", "bogus"], "is neither a search space")):
        res = _edgekd(["profile", "calibrate", "--device", "inprocess", "--profiles-dir", "p", "--work-dir", "w",
                       *extra], tmp_path)
        assert words in subprocess_error(res)
        assert not (tmp_path / "p").exists() and not (tmp_path / "w").exists()


@pytest.mark.parametrize("extra,words", [
    (["--space", "real"], "give --budget-ms"),
    (["--space", "GRID", "--budget-ms", "5", "--precision", "fp16"], "target cpu runs precisions fp32, int8, not fp16"),
    (["--space", "GRID", "--budget-ms", "5", "--data", "reviews"], "a grid of image families, and this data is text"),
])
def test_deploy_space_with_format_auto_refuses_what_cannot_work_before_any_work(tmp_path: Path, extra: list[str],
                                                                               words: str) -> None:
    (tmp_path / "grid.yaml").write_text(GRID, encoding="utf-8")
    args = [a.replace("GRID", str(tmp_path / "grid.yaml")) for a in extra]
    res = _edgekd(["deploy", "--format", "auto", "--epochs", "1", "-o", "bundle", "--work-dir", "work", *args], tmp_path)
    assert words in subprocess_error(res)
    assert not (tmp_path / "bundle").exists() and not (tmp_path / "work").exists()


def test_deploy_space_joint_verifies_records_int8_settings_and_plots(space_profile: dict,
                                                                     tiny_teacher_ckpt: Path) -> None:
    """A joint deploy over the grid in ONNX Runtime fp32 and int8 on the profile calibrated above: each
    configuration's candidate is one of the grid's students, the winner is verified on this machine in
    its own configuration at its own resolution, an INT8 winner's manifest holds the ISA rule's settings
    (the same as the report's), and the candidates are drawn."""
    import shutil

    from edgekd import api
    from edgekd.deploy.spaces import space_specs
    from edgekd.runtimes import read_manifest

    root = space_profile["root"] / "deploy"
    root.mkdir()
    profile = root / "box.yaml"
    shutil.copy(space_profile["report"]["profile"], profile)
    space = space_specs(str(space_profile["grid"]))
    logs: list[str] = []
    report = api.deploy(target="cpu", device="inprocess", teacher=str(tiny_teacher_ckpt), space=str(space_profile["grid"]),
                        format="onnx", precision="fp32,int8", budget_ms=1000.0, percentile=50, min_accuracy=0.3,
                        epochs=1, threads=1, max_rounds=1, calibrate_count=4, joint_calibrate_count=4, min_s=0.05,
                        profile=str(profile), profiles_dir=str(root), work_dir=str(root / "work"),
                        output=str(root / "bundle"), log=logs.append)
    assert report["status"] == "verified", report["status_note"]
    # the profile's models were fitted on the space's students: used as they are; the teacher (a micro
    # CNN at 8x8) is no drift point for them, so it does not set off a recalibration
    assert any("it is not a drift point here" in line for line in logs), logs
    assert not any("calibrating" in line for line in logs), logs
    # the int8 configuration has no teacher to check its model with: one untrained probe near the
    # budget is measured there first (and only it), and the model is used or adapted on it
    probe = report["joint"]["latency_models"]["onnxruntime/int8/t1/b1"]["probe"]
    assert probe["spec"] in space and probe["measured_ms"] > 0 and probe["predicted_ms"] > 0
    assert all(probe["spec"] in line for line in logs if "calibrate " in line), logs
    assert report["joint"]["latency_models"]["onnxruntime/int8/t1/b1"]["action"].startswith(
        ("this device's model, checked on the probe", "this device's model, adapted on the probe"))
    last = report["candidates"][-1]
    assert {(v["runtime"], v["precision"]) for v in last} == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    assert all(v["winner"] in space for v in last)
    (won,) = [v for v in last if v["status"] == "chosen"]
    (ref,) = [v for v in last if v["precision"] == "fp32"]
    (int8,) = [v for v in last if v["precision"] == "int8"]
    assert (report["chosen"]["spec"], report["precision"]) == (won["winner"], won["precision"])
    manifest = read_manifest(root / "bundle" / "artifact")
    size = int(parse_spec(won["winner"])[1]["resolution"])
    assert manifest["inputs"][0]["shape"][-2:] == [size, size] and manifest["precision"] == won["precision"]
    # the same student in both: INT8 is a quarter of the bytes, so it wins on accuracy per MB unless its
    # artifact (measured on val on the host) is less accurate than the fp32 reference's
    assert ref["winner"] == int8["winner"] and int8["val_source"] == "int8 artifact on onnxruntime (host)"
    if int8["val_accuracy"] >= ref["val_accuracy"]:
        assert won["precision"] == "int8"
        recorded = report["joint"]["int8_settings"]
        assert recorded == {"runtime": "onnxruntime", **manifest["options"]["int8_settings"]}
        assert recorded["rule"] and isinstance(recorded["reduce_range"], bool)
    else:
        assert won["precision"] == "fp32" and "the reference configuration" in int8["why"]
        assert report["joint"]["int8_settings"] is None
    # either way the INT8 export was made (to measure it) with the ISA rule's settings in its manifest
    (int8_art,) = (root / "work" / "artifacts").glob("*/onnx-int8")
    assert read_manifest(int8_art)["options"]["int8_settings"]["rule"]
    plot = Path(report["joint"]["plot"])
    assert plot.is_file() and plot.stat().st_size > 10_000 and plot.read_bytes()[:4] == b"\x89PNG"
