"""scripts/bench_transfer.py's offline pieces (nothing is timed here): how it scores the agreement of two
measurement runs, the ceiling its within-10 % tables are read against."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_transfer", ROOT / "scripts" / "bench_transfer.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_transfer"] = mod  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop("bench_transfer", None)


def test_repeatability_divides_out_the_runs_speed_ratio_and_scores_the_held_out_students(bench):
    run1 = {"ort-t2": {"s1": 1.0, "s2": 2.0, "s3": 4.0, "h1": 1.0, "h2": 3.0}}
    # run 2 is 2x slower overall; h2 is 1.5x further off (3 -> 9 instead of 6), s3 5 % (4 -> 8.4)
    run2 = {"ort-t2": {"s1": 2.0, "s2": 4.0, "s3": 8.4, "h1": 2.0, "h2": 9.0}, "other": {"s1": 1.0}}
    rep = bench.repeatability(run1, run2, held=["h1", "h2"])
    assert list(rep) == ["ort-t2"]  # only configurations both runs measured
    r = rep["ort-t2"]
    assert r["students"] == 5 and r["within_10pct"] == 0.8  # median ratio 2: ratios 1, 1, 1.05, 1, 1.5
    assert r["held_within_10pct"] == 0.5  # h1 agrees, h2 does not
    assert r["min"] == 1.0 and r["max"] == 1.5


def test_the_real_space_runs_each_student_at_its_resolution_with_the_pairs_it_can_score(bench):
    real = bench.SPACES["real"]
    assert real.input_of("mobilenetv2:resolution=96,width=0.35") == (3, 96, 96)
    assert set(real.pairs) == {"a", "b", "c"}  # (d) is the committed profile's micro-space model
    assert set(bench.SPACES["micro"].pairs) == {"a", "b", "c", "d"}


@pytest.mark.parametrize("args,words", [
    (["--load-measurements", "REAL"], "--load-measurements REAL holds measurements of the 'real' space; pass --space real"),
    (["--repeat-of", "REAL"], "--repeat-of REAL holds measurements of the 'real' space; pass --space real"),
    (["--space", "real", "--repeat-of", "MICRO"], "--repeat-of MICRO holds measurements of the 'micro' space; "
                                                  "pass --space micro"),
    (["--load-measurements", "MISSING"], "--load-measurements MISSING: cannot read it (No such file or directory); "
                                         "pass a file written by --save-measurements"),
    (["--load-measurements", "GARBLED"], "--load-measurements GARBLED is not JSON; pass a file written by "
                                         "--save-measurements"),
    (["--space", "real", "--deploys", "foriegn"], "unknown --deploys foriegn; use some of foreign, committed, demo"),
])
def test_bad_arguments_and_files_are_refused_in_one_line_before_measuring(args, words, tmp_path):
    """Each refused in one line with exit code 2, before anything is measured (minutes) or written:
    a store of the other space (it used to crash on an empty comparison after the whole measurement),
    a missing or garbled file, a misspelt deploy (it was dropped silently with --space real)."""
    files = {"REAL": tmp_path / "real.json", "MICRO": tmp_path / "micro.json", "MISSING": tmp_path / "missing.json",
             "GARBLED": tmp_path / "garbled.json"}
    files["REAL"].write_text(json.dumps({"space": "real", "p50_ms": {}, "fit": [], "held": []}))
    files["MICRO"].write_text(json.dumps({"p50_ms": {}, "fit": [], "held": []}))  # before spaces: micro
    files["GARBLED"].write_text("{not json")
    argv = [str(files.get(a, a)) for a in args] + ["--save-measurements", str(tmp_path / "out.json")]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_transfer.py"), *argv],
                          capture_output=True, text=True, timeout=120)
    for name, path in files.items():
        words = words.replace(name, str(path))
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {words}"]
    assert not (tmp_path / "out.json").exists()


def test_timed_rounds_time_each_model_in_every_configuration_back_to_back_alternating_order(bench):
    """A pair compares one model in two configurations: those are timed next to each other in every round
    (model-major), and every other round runs the list backwards. Real timing loops over tiny steps."""
    calls: list[tuple[str, str]] = []

    def step(c: str, s: str):
        return lambda: calls.append((c, s))

    steps = {c: {s: step(c, s) for s in ("m1", "m2")} for c in ("ort-t1", "openvino")}
    out = bench.timed_rounds(steps, rounds=2, min_s=0.001, min_count=3, calm_s=0.0)
    order = [x for i, x in enumerate(calls) if i == 0 or calls[i - 1] != x]  # one entry per timed job
    forward = [("ort-t1", "m1"), ("openvino", "m1"), ("ort-t1", "m2"), ("openvino", "m2")]
    assert order == forward + forward[::-1][1:]  # round 2 starts with round 1's last job, backwards
    assert {c: sorted(row) for c, row in out.items()} == {"ort-t1": ["m1", "m2"], "openvino": ["m1", "m2"]}
    for row in out.values():
        for rounds in row.values():
            assert len(rounds) == 2 and all(r["p50_ms"] > 0 and r["anchor_p50_ms"] > 0 for r in rounds)
