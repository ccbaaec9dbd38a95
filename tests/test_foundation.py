"""Registry, atomic writes, and the promise that `import edgekd` never pulls torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.errors import ConfigError
from edgekd.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from edgekd.registry import Registry


def test_registry_duplicate_unknown_and_did_you_mean():
    reg: Registry[int] = Registry("widget")
    reg.add("mobilenet", 1)
    reg.add("resnet", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("resnet", 3)
    with pytest.raises(ConfigError) as err:
        reg.get("mobilnet")
    assert "Did you mean 'mobilenet'" in str(err.value) and "Valid widget names: mobilenet, resnet" in str(err.value)
    assert reg.names() == ["mobilenet", "resnet"] and "resnet" in reg and len(reg) == 2


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert target.read_text().strip().startswith("{") and '"a": 2' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path: Path):
    from edgekd.fileio import atomic_write_with

    target = tmp_path / "keep.bin"
    atomic_write_bytes(target, b"old")

    def failing(path: Path) -> None:
        path.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]
    assert sha256_file(target) == __import__("hashlib").sha256(b"old").hexdigest()


def test_import_edgekd_and_cli_help_do_not_import_torch():
    code = "import sys, edgekd, edgekd.cli, edgekd.errors, edgekd.registry, edgekd.fileio; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_cli_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "edgekd", "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "120"})
    assert out.returncode == 0, out.stderr
    for name in ("data", "distill", "teacher"):
        assert name in out.stdout
