"""README command 2 itself (scripts/test.sh): a bad worker count is one line, exit 2, before set-up
runs; a run that collects no test fails (pytest's exit 5 is not a pass), also on xdist workers.
Real bash subprocesses of the script."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _test_sh(*args: str, workers: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEKD_TEST_WORKERS": workers}
    return subprocess.run(["bash", str(ROOT / "scripts" / "test.sh"), *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.parametrize("workers", ["0", "two", "-1", "2 -x"])
def test_a_bad_worker_count_is_one_line_before_anything_runs(workers: str) -> None:
    res = _test_sh("-q", workers=workers)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"test.sh: EDGEKD_TEST_WORKERS must be a whole number of workers, 1 or more (got '{workers}')"]
    assert res.stdout == ""  # neither set-up nor pytest ran


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_run_that_collects_nothing_fails(workers: str) -> None:
    res = _test_sh("-q", "-p", "no:cacheprovider", str(Path(__file__)), "-k", "no_test_is_named_like_this",
                   workers=workers)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "test.sh: pytest collected no tests; failing on purpose" in res.stderr
