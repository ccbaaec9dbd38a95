"""Assertions shared by the CLI tests."""
from __future__ import annotations


def one_line_error(result, *needles: str) -> None:
    """A click result that exited 2 with exactly one non-blank line, `error: ...`, naming each needle."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
