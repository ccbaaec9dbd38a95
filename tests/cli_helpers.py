"""Assertions shared by the CLI tests."""
from __future__ import annotations


def one_line_error(result, *needles: str) -> None:
    """A click result that exited 2 with exactly one non-blank line, `error: ...`, naming each needle."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def subprocess_error(res) -> str:
    """A finished `python -m edgekd ...` subprocess that exited 2 with exactly one `error:` line on
    stderr and no traceback; returns that line."""
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    return errors[0]
