"""The compression-pass registry: declared fields, the chain config both `compress` and `deploy` read,
one-line errors naming the valid passes/fields, --help built from the registry, and a new pass
reaching the CLI with no other file touched."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.compress import PASSES, CompressionPass, PassEntry
from edgekd.compress.passes import chain_slug, parse_chain, parse_pass_spec
from edgekd.errors import ConfigError
from cli_helpers import one_line_error


# ---- every registered pass declares itself fully -------------------------------------------------
@pytest.mark.parametrize("name", PASSES.names())
def test_pass_declares_name_help_and_checked_defaults(name: str) -> None:
    cls = PASSES.get(name)
    assert issubclass(cls, CompressionPass) and cls.name == name
    assert cls.summary(), f"{name}: the class docstring's first line is its help"
    assert cls.fields, f"{name}: declares no fields"
    for f in cls.fields:
        assert f.help and f.name in f.describe()
        assert f.check(f.default, name) == f.default  # a default passes its own check
    cfg = cls.config({})
    assert set(cfg) == {f.name for f in cls.fields}


@pytest.mark.parametrize("name", PASSES.names())
def test_unknown_field_names_the_valid_ones(name: str) -> None:
    cls = PASSES.get(name)
    with pytest.raises(ConfigError) as err:
        parse_chain([{"pass": name, "no_such_field": 1}])
    message = str(err.value)
    assert "\n" not in message and "no_such_field" in message
    for f in cls.fields:
        assert f.name in message


def test_unknown_pass_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError) as err:
        parse_chain([{"pass": "prun", "ratio": 0.5}])
    message = str(err.value)
    assert "Did you mean 'prune'" in message and "\n" not in message
    for name in PASSES.names():
        assert name in message


@pytest.mark.parametrize("entry, needle", [
    ({"pass": "prune", "ratio": 1.0}, "ratio must be a number in [0, 1)"),
    ({"pass": "prune", "ratio": -0.1}, "ratio must be"),
    ({"pass": "prune", "ratio": "half"}, "got 'half'"),
    ({"pass": "prune", "ratio": True}, "got True"),
    ({"pass": "prune", "ratio": None}, "got null"),
    ({"pass": "prune", "ratio": float("nan")}, "ratio must be"),
    ({"pass": "lowrank", "energy": 0.0}, "energy must be a number in (0, 1] or null"),
    ({"pass": "lowrank", "energy": 0.9, "ratio": 0.5}, "not both"),
    ({"pass": "lowrank", "min_reduction": 1}, "min_reduction must be"),
    ({"pass": "lowrank", "exclude": [1, 2]}, "exclude must be a list of strings"),
    ({"pass": "lowrank", "exclude": "classifier"}, "exclude must be"),
    ({"ratio": 0.5}, "needs 'pass: NAME'"),
    ({"key": "prune", "kwargs": {"ratio": 0.5}, "extra": 1}, "unknown key 'extra'"),
    (42, "each pass is a mapping"),
])
def test_bad_values_are_one_line_config_errors(entry: object, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_chain([entry])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_layouts_and_shorthand_read_the_same() -> None:
    """New layout, the older {key, kwargs} one, the CLI shorthand and a bare name give one chain."""
    new = parse_chain([{"pass": "prune", "ratio": 0.5}, {"pass": "lowrank", "ratio": 0.25, "exclude": ["classifier"]}])
    old = parse_chain([{"key": "prune", "kwargs": {"ratio": 0.5}},
                       {"key": "lowrank", "kwargs": {"ratio": 0.25, "exclude": ["classifier"]}}])
    cli = parse_chain(["prune:ratio=0.5", "lowrank:ratio=0.25,exclude=[classifier]"])
    assert new == old == cli
    assert new[0] == PassEntry("prune", {"ratio": 0.5})
    assert [e.as_dict() for e in new] == [{"pass": "prune", "ratio": 0.5},
                                         {"pass": "lowrank", "ratio": 0.25, "exclude": ["classifier"]}]
    assert parse_chain("prune") == [PassEntry("prune", {})]
    options = parse_chain([{"pass": "lowrank", "min_reduction": 0}])[0].options  # an int for a float field
    assert options == {"min_reduction": 0.0} and isinstance(options["min_reduction"], float)
    assert PassEntry("lowrank", {}).config()["energy"] == 0.9  # defaults filled, rules applied


def test_pass_spec_shorthand() -> None:
    assert parse_pass_spec("lowrank:energy=0.8,exclude=[classifier, features.0]") == {
        "pass": "lowrank", "energy": 0.8, "exclude": ["classifier", "features.0"]}
    assert parse_pass_spec("lowrank:ratio=null") == {"pass": "lowrank", "ratio": None}
    assert parse_pass_spec("lowrank:min_reduction=5e-2") == {"pass": "lowrank", "min_reduction": 0.05}
    for bad, needle in ((":ratio=0.5", "start with a pass name"), ("prune:ratio", "not FIELD=VALUE"),
                        ("prune:=0.5", "not FIELD=VALUE"), ("lowrank:exclude=[a", "cannot read")):
        with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
            parse_pass_spec(bad)


def test_chain_slug_names_the_chain() -> None:
    # deploy's cache of a pruned student keeps the name it always had
    assert chain_slug(parse_chain([{"pass": "prune", "ratio": 0.5}])) == "prune0.5"
    assert chain_slug(parse_chain(["prune:ratio=0.5", "lowrank:ratio=0.5"])) == "prune0.5-lowrank-ratio0.5"
    assert chain_slug(parse_chain(["lowrank:energy=0.9"])) != chain_slug(parse_chain(["lowrank:ratio=0.9"]))
    long = chain_slug(parse_chain(["lowrank:exclude=[features.0.0, features.1.0, features.2.0, classifier.1]"]))
    assert len(long) <= 60 and long.startswith("lowrank-")


# ---- the CLI reads the registry ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["compress", "deploy"])
def test_help_lists_every_pass_and_field_from_the_registry(command: str) -> None:
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Compression passes" in text
    for name, cls in PASSES.items():
        assert f"{name}: {cls.summary()}" in text
        for f in cls.fields:
            assert " ".join(f.describe().split()) in text


def test_cli_unknown_pass_and_field_exit_2(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    out = tmp_path / "o"
    run = lambda *a: CliRunner().invoke(main, ["compress", str(tiny_teacher_ckpt), *a, "-o", str(out)])  # noqa: E731
    one_line_error(run("--pass", "prun"), "Did you mean 'prune'", "lowrank")
    one_line_error(run("--pass", "prune:ratoi=0.5"), "unknown field 'ratoi'", "ratio")
    one_line_error(run("--pass", "prune:ratio=2"), "ratio must be")
    one_line_error(run("--pass", "prune", "--lowrank", "0.5"), "--pass only")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("passes:\n  - {pass: lowrank, energyy: 0.8}\n")
    one_line_error(run("--config", str(cfg)), "Did you mean 'energy'")
    assert not out.exists()


def test_cli_pass_chain_runs_in_the_given_order(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["compress", str(tiny_teacher_ckpt), "--pass", "lowrank:ratio=0.5",
                                       "--pass", "prune:ratio=0.25", "--finetune-epochs", "0", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [s["pass"] for s in summary["stages"]] == ["lowrank", "prune"]
    assert summary["passes"] == [{"pass": "lowrank", "ratio": 0.5}, {"pass": "prune", "ratio": 0.25}]
    # the written config is the same layout and reads back to the same chain
    import yaml

    written = yaml.safe_load((out / "compress.yaml").read_text())
    assert parse_chain(written["passes"]) == parse_chain(summary["passes"])


NEW_PASS = textwrap.dedent('''
    import json, sys
    import torch
    from click.testing import CliRunner
    from edgekd.compress import CompressionPass, Field, PassResult
    from edgekd.cli import main

    class Sparsify(CompressionPass):
        """Zero the smallest weights of every layer (no structural change)."""
        name = "sparsify"
        fields = (Field("amount", float, 0.5, "share of each weight tensor zeroed", low=0, high=1, high_open=True),)

        def run(self, model, data, cfg):
            zeroed = 0
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1:
                        k = int(cfg["amount"] * p.numel())
                        if k:
                            cut = p.abs().flatten().kthvalue(k).values
                            mask = p.abs() <= cut
                            zeroed += int(mask.sum())
                            p[mask] = 0.0
            return PassResult(model, [], {"zeroed": zeroed})

    ckpt, out = sys.argv[1], sys.argv[2]
    runner = CliRunner()
    help_text = runner.invoke(main, ["compress", "--help"]).output
    bad = runner.invoke(main, ["compress", ckpt, "--pass", "sparsify:amont=0.3", "-o", out])
    ok = runner.invoke(main, ["compress", ckpt, "--pass", "sparsify:amount=0.3", "--finetune-epochs", "0",
                              "-o", out, "--json"])
    print(json.dumps({"help": help_text, "bad": [bad.exit_code, bad.output], "ok": [ok.exit_code, ok.output]}))
''')


def test_a_new_pass_is_one_class(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    """Defining a CompressionPass subclass is all it takes: --help lists it, --pass checks its fields
    and runs it — in a fresh process, so the test's pass never leaks into the registry here."""
    script = tmp_path / "new_pass.py"
    script.write_text(NEW_PASS)
    proc = subprocess.run([sys.executable, str(script), str(tiny_teacher_ckpt), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    help_text = " ".join(got["help"].split())
    assert "sparsify: Zero the smallest weights" in help_text and "amount (number in [0, 1), default 0.5)" in help_text
    assert got["bad"][0] == 2 and "Did you mean 'amount'" in got["bad"][1]
    assert got["ok"][0] == 0, got["ok"][1]
    summary = json.loads(got["ok"][1])
    assert summary["passes"] == [{"pass": "sparsify", "amount": 0.3}]
    assert summary["stages"][0]["details"]["zeroed"] > 0


# ---- deploy takes the same chain -----------------------------------------------------------------
def test_deploy_checks_its_chain_before_any_work(tmp_path: Path) -> None:
    from edgekd import api

    work = tmp_path / "work"
    base = {"target": "cpu", "device": None, "work_dir": str(work), "profiles_dir": str(tmp_path / "p"),
            "output": str(tmp_path / "b")}
    with pytest.raises(ConfigError, match="Did you mean 'prune'"):
        api.deploy({**base, "compress": [{"pass": "prun"}]})
    with pytest.raises(ConfigError, match="unknown field 'amount'.*ratio"):
        api.deploy({**base, "compress": ["prune:amount=0.5"]})
    with pytest.raises(ConfigError, match="not both"):
        api.deploy({**base, "compress": ["lowrank"], "prune": 0.5})
    assert not work.exists()  # nothing trained, nothing written


def test_deploy_cli_compress_error_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["deploy", "--target", "cpu", "--compress", "prune:ratio=1.5",
                                       "--work-dir", str(tmp_path / "w"), "-o", str(tmp_path / "b")])
    one_line_error(result, "ratio must be")


def test_deploy_chain_and_prune_shorthand() -> None:
    from edgekd.deploy.config import DeployConfig, compress_chain

    assert compress_chain(DeployConfig()) == []
    assert compress_chain(DeployConfig(prune=0.5)) == [PassEntry("prune", {"ratio": 0.5})]
    assert compress_chain(DeployConfig(compress=["lowrank:energy=0.8", {"pass": "prune", "ratio": 0.25}])) == [
        PassEntry("lowrank", {"energy": 0.8}), PassEntry("prune", {"ratio": 0.25})]


def test_deploy_compress_stage_runs_the_chain_and_caches(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    """deploy's compress stage on a trained run: the chain from config, KD fine-tuning, cached under
    the chain's name (a prune-only chain keeps the directory name deploy always gave it)."""
    import shutil

    from edgekd.deploy.stages import COMPRESS_FINETUNE_EPOCHS, compress_student
    from edgekd.models import load_model

    run = tmp_path / "students" / "s"
    run.mkdir(parents=True)
    for name in ("student.pt", "config.yaml"):  # a run dir of its own, so the outputs land in tmp_path
        shutil.copy(tiny_teacher_ckpt.parent / name, run / name)
    chain = parse_chain([{"pass": "prune", "ratio": 0.5}])
    ckpt, acc = compress_student(chain, run, tiny_teacher_ckpt, lambda _line: None)
    assert ckpt == run.parent / "s-prune0.5" / "student.pt"
    summary = json.loads((ckpt.parent / "summary.json").read_text())
    assert [s["pass"] for s in summary["stages"]] == ["prune"]
    assert summary["stages"][0]["finetune"]["epochs"] == COMPRESS_FINETUNE_EPOCHS
    assert acc.val == summary["after"]["val_acc"] and acc.test == summary["test_acc"]
    assert [r["op"] for r in load_model(ckpt)[1].surgery] == ["resize"]
    stamp = (ckpt.parent / "summary.json").stat().st_mtime_ns
    again, acc2 = compress_student(chain, run, tiny_teacher_ckpt, lambda _line: None)
    assert again == ckpt and acc2 == acc and (ckpt.parent / "summary.json").stat().st_mtime_ns == stamp
