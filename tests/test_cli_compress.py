"""`edgekd compress` from the command line: the table, --json, and one-line errors (exit 2)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.models import load_model
from cli_helpers import one_line_error


def _run(*args: str):
    return CliRunner().invoke(main, ["compress", *args])


def test_compress_checkpoint_json(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    out = tmp_path / "out"
    result = _run(str(tiny_teacher_ckpt), "--prune", "0.5", "--finetune-epochs", "0", "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [s["pass"] for s in summary["stages"]] == ["prune"]
    assert summary["params_ratio"] < 0.5
    model, info = load_model(out / "student.pt")
    assert info.surgery[0]["op"] == "resize"


def test_compress_table_prune_and_lowrank(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    out = tmp_path / "out"
    result = _run(str(tiny_teacher_ckpt), "--prune", "0.5", "--lowrank", "0.5", "--finetune-epochs", "0", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "1. prune" in result.output and "2. lowrank" in result.output and "total" in result.output
    assert "accuracy drop" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["pass"] for s in summary["stages"]] == ["prune", "lowrank"]


def test_passes_from_config_file(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("passes:\n  - {key: lowrank, kwargs: {energy: 0.8}}\n  - {key: prune, kwargs: {ratio: 0.25}}\n"
                   "finetune_epochs: 0\n")
    result = _run(str(tiny_teacher_ckpt), "--config", str(cfg), "-o", str(tmp_path / "out"), "--json")
    assert result.exit_code == 0, result.output
    assert [s["pass"] for s in json.loads(result.output)["stages"]] == ["lowrank", "prune"]


def test_missing_run(tmp_path: Path) -> None:
    one_line_error(_run(str(tmp_path / "nope"), "--prune", "0.5", "-o", str(tmp_path / "o")),
                    "nope", "no such run directory")


def test_run_dir_without_student(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    one_line_error(_run(str(tmp_path / "run"), "--prune", "0.5", "-o", str(tmp_path / "o")), "no student.pt")


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_corrupt_checkpoint(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    out = tmp_path / "o"
    one_line_error(_run(str(bad), "--prune", "0.5", "-o", str(out)), "bad.pt")
    assert not out.exists()


def test_truncated_checkpoint(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    bad = tmp_path / "cut.pt"
    bad.write_bytes(tiny_teacher_ckpt.read_bytes()[:300])
    one_line_error(_run(str(bad), "--prune", "0.5", "-o", str(tmp_path / "o")), "cut.pt")


def test_no_pass_and_no_output(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    one_line_error(_run(str(tiny_teacher_ckpt), "-o", str(tmp_path / "o")), "--prune")
    one_line_error(_run(str(tiny_teacher_ckpt), "--prune", "0.5"), "-o")
    one_line_error(_run(str(tiny_teacher_ckpt), "--lowrank", "0.5", "--lowrank-energy", "0.9", "-o", str(tmp_path / "o")),
                    "not both")


def test_bad_ratio_is_rejected_by_the_option() -> None:
    result = _run("whatever", "--prune", "1.5", "-o", "x")
    assert result.exit_code == 2 and "--prune" in result.output


def test_existing_output_is_not_overwritten(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    one_line_error(_run(str(tiny_teacher_ckpt), "--prune", "0.5", "-o", str(out)), "already exists")
    assert (out / "keep.txt").read_text() == "mine"


def test_subprocess_corrupt_checkpoint_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    proc = subprocess.run([sys.executable, "-m", "edgekd", "compress", str(bad), "--prune", "0.5", "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_a_killed_run_is_never_read_and_the_next_run_clears_it(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    import os
    import signal
    import time

    from edgekd.compress.pipeline import INCOMPLETE_MARKER, is_complete_run

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "compress", str(tiny_teacher_ckpt), "--prune", "0.5",
                             "--finetune-epochs", "500", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "stages").is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the compress finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (out / INCOMPLETE_MARKER).is_file() and not is_complete_run(out)
    # the leftover is not a source for anything
    one_line_error(_run(str(out), "--prune", "0.5", "-o", str(tmp_path / "again")), "did not finish")
    # the same command again: the dead run's leftover is cleared, the new run completes
    result = _run(str(tiny_teacher_ckpt), "--prune", "0.5", "--finetune-epochs", "0", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert is_complete_run(out) and not (out / INCOMPLETE_MARKER).exists()
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["01-prune"]


def test_output_being_written_by_a_live_run_is_refused(tmp_path: Path, tiny_teacher_ckpt: Path) -> None:
    import socket

    from edgekd.compress.pipeline import INCOMPLETE_MARKER

    out = tmp_path / "busy"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / INCOMPLETE_MARKER).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        (out / "partial.txt").write_text("theirs")
        one_line_error(_run(str(tiny_teacher_ckpt), "--prune", "0.5", "-o", str(out)), f"pid {sleeper.pid}")
        assert (out / "partial.txt").read_text() == "theirs"
    finally:
        sleeper.kill()
        sleeper.wait()
