"""`edgekd teacher` / `edgekd distill`: options, YAML with CLI overrides, --json, bad input -> exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekd.cli import main


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_explains_every_option():
    for name in ("distill", "teacher"):
        res = invoke(name, "--help")
        assert res.exit_code == 0
        from edgekd.cli import COMMAND_MODULES
        import importlib

        command = importlib.import_module(COMMAND_MODULES[name]).command
        for param in command.params:
            assert param.help, f"{name} {param.name} has no help"
            assert param.opts[-1] in res.output


def test_teacher_command_json(tmp_path: Path):
    res = invoke("teacher", "--arch", "mlp:hidden=32", "--epochs", "1", "--threads", "1", "-o", str(tmp_path / "t"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["role"] == "teacher" and summary["losses"] == ["ce"]
    assert Path(summary["student_path"]).is_file()
    assert summary["augment"] is None  # digits at its native 8x8: the default views shift 0 px, nothing augmented


def test_teacher_trains_on_the_students_shifted_views_by_default(tmp_path: Path):
    """The teacher sees the default recipe's per-epoch shifted views without being asked (2 px at 28-32
    px); --views 0 trains on the clean images; at 8x8 the views round to 0 px and nothing is augmented."""
    from edgekd.config import DEFAULT_RECIPE, recipe

    common = ["--arch", "mlp:hidden=32", "--epochs", "1", "--threads", "1", "--json"]
    res = invoke("teacher", "--image-size", "32", *common, "-o", str(tmp_path / "t"))
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    views = recipe(DEFAULT_RECIPE)["augment"]
    assert summary["augment"]["draws"] == views["draws"] == 8
    assert summary["augment"]["shift_fraction"] == views["shift_fraction"]
    assert summary["augment"]["shift_px"] == 2
    clean = json.loads(invoke("teacher", "--image-size", "32", "--views", "0", *common, "-o", str(tmp_path / "c")).output)
    assert clean["augment"] is None  # not augmented
    native = json.loads(invoke("teacher", *common, "-o", str(tmp_path / "n")).output)  # digits at 8x8
    assert native["augment"] is None
    bad = CliRunner().invoke(main, ["teacher", "--views", "-1", "-o", str(tmp_path / "u")])
    assert bad.exit_code == 2 and "--views" in bad.output


def test_distill_from_yaml_with_cli_overrides(tmp_path: Path, tiny_teacher_ckpt: Path):
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "teacher": str(tiny_teacher_ckpt), "student": "mlp:hidden=16",
        "losses": [{"key": "kd", "weight": 1.0, "kwargs": {"temperature": 2.0, "alpha": 0.1}}],
        "train": {"epochs": 3, "threads": 1}, "output": str(tmp_path / "from-file"),
    }))
    res = invoke("distill", "--config", str(tmp_path / "run.yaml"), "--epochs", "1", "--temperature", "6",
                 "--seed", "4", "-o", str(tmp_path / "cli"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["epochs_run"] == 1 and summary["seed"] == 4
    resolved = yaml.safe_load((tmp_path / "cli" / "config.yaml").read_text())
    assert resolved["losses"][0]["kwargs"] == {"temperature": 6.0, "alpha": 0.1}  # file kept, CLI overrode T
    assert resolved["student"] == "mlp:hidden=16" and not (tmp_path / "from-file").exists()


def test_distill_text_output(tmp_path: Path, tiny_teacher_ckpt: Path):
    res = invoke("distill", "--teacher", str(tiny_teacher_ckpt), "--student", "mlp:hidden=16", "--loss", "kd",
                 "--alpha", "0.2", "--epochs", "1", "--threads", "1", "-o", str(tmp_path / "s"))
    assert res.exit_code == 0, res.output
    assert "epoch   1" in res.output and "test acc" in res.output and "soft targets" in res.output


@pytest.mark.parametrize(
    "args,yaml_text,match",
    [
        (["--teacher", "nope.pt"], None, "teacher nope.pt does not exist"),
        (["--loss", "kdd"], None, "Did you mean 'kd'"),
        (["--loss", "ce", "--temperature", "3"], None, "--temperature do not apply to the loss ce"),
        ([], "student: [unclosed", "invalid YAML at line 1"),
        ([], "studnet: mlp", "unknown key 'studnet'. Did you mean 'student'"),
        ([], "losses: [{key: kd, kwargs: {temp: 3}}]", "unknown option 'temp'"),
        ([], "train: {epochs: many}", "train.epochs: expected a number"),
        (["--student", "mlpp:hidden=16"], None, "mlpp"),
        (["--data", "missing.npz"], None, "missing.npz: no such file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, tiny_teacher_ckpt: Path, args, yaml_text, match):
    base = ["distill", "--teacher", str(tiny_teacher_ckpt), "--threads", "1", "-o", str(tmp_path / "run")]
    if yaml_text is None:
        base += ["--epochs", "1"]
    else:
        (tmp_path / "bad.yaml").write_text(yaml_text)
        base += ["--config", str(tmp_path / "bad.yaml")]
    res = CliRunner().invoke(main, base + args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], res.output
    assert not (tmp_path / "run" / "student.pt").exists()


def test_missing_config_file_and_missing_output(tmp_path: Path):
    res = CliRunner().invoke(main, ["distill", "--config", str(tmp_path / "none.yaml"), "-o", str(tmp_path / "r")])
    assert res.exit_code == 2 and "config file not found" in res.output
    res = CliRunner().invoke(main, ["distill", "--student", "mlp:hidden=16", "--loss", "ce"])
    assert res.exit_code == 2 and "pass -o RUN" in res.output
