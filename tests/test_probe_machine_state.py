"""scripts/probe_machine_state.py: a real short run end to end (its JSON line and what each figure may
be), and its one-line refusal of a bad --seconds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "probe_machine_state.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_a_short_probe_reports_every_cpu_the_persistence_and_the_slowdowns():
    proc = _run("--seconds", "0.4")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    cpus = sorted(os.sched_getaffinity(0))
    assert report["cpus"] == cpus
    assert report["anchor_floor_us"] > 0 and report["windows"] >= 1
    shares = report["calm_share_per_cpu"]
    assert len(shares) == len(cpus) and all(0.0 <= s <= 1.0 for s in shares)
    # at least one CPU is calm whenever every CPU is, and the floor is a 2nd percentile: some window is calm
    assert 0.0 <= report["calm_share_every_cpu"] <= min(shares) <= max(shares) <= report["calm_share_any_cpu"] <= 1.0
    assert report["calm_share_any_cpu"] > 0.0
    assert set(report["persistence"]) <= {"1", "10", "25", "100", "300", "1000"} and "1" in report["persistence"]
    for p in report["persistence"].values():
        assert all(v is None or 0.0 <= v <= 1.0 for v in p.values())
    assert set(report["slowdown"]) == {"L2", "L3", "DRAM"}
    for s in report["slowdown"].values():  # each workload's median over its own 2nd percentile (a few
        # calm samples can sit just under it)
        assert all(v is None or 0.5 < v < 50 for v in s.values()) and any(v is not None for v in s.values())
    assert "speed anchor floor" in proc.stdout and "when the anchor is calm" in proc.stdout


def test_a_bad_seconds_is_refused_in_one_line_with_exit_2():
    for bad in ("0", "-1", "nan"):
        proc = _run("--seconds", bad)
        assert proc.returncode == 2, (bad, proc.stdout, proc.stderr)
        assert proc.stderr.strip().count("\n") == 0 and "--seconds" in proc.stderr
        assert proc.stdout == ""
