"""Text through the shared CLI: teacher -> distill (KD + TinyBERT losses) -> export (parity) -> bench."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.data.text_builtin import generate_reviews

TEACHER = "bert:layers=2,hidden=32,heads=2,intermediate=64"
STUDENT = "tinybert:layers=1,hidden=16,heads=2,intermediate=32"


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    texts, y, names = generate_reviews(n=150, seed=11)
    path = tmp_path_factory.mktemp("textdata") / "reviews.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": names[int(v)]}) for t, v in zip(texts, y)) + "\n")
    return path


def invoke(*args: str) -> dict:
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.output.strip()
    return json.loads(out[out.index("{"):] if out.startswith("{") else out.splitlines()[-1])


def test_text_teacher_distill_export_bench(tmp_path, jsonl):
    cache = str(tmp_path / "cache")
    teacher = invoke("teacher", "--data", str(jsonl), "--max-len", "16", "--arch", TEACHER, "--epochs", "1",
                     "--threads", "1", "-o", str(tmp_path / "teacher"))
    assert teacher["student"].startswith("bert:") and "vocab=" not in teacher["student"]
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"losses": [{"key": "kd"}, {"key": "hidden_align", "weight": 0.5},
                                             {"key": "attention_align", "weight": 0.1}]}))
    student = invoke("distill", "--config", str(config), "--teacher", teacher["student_path"], "--data", str(jsonl),
                     "--max-len", "16", "--student", STUDENT, "--epochs", "1", "--threads", "1",
                     "--cache-dir", cache, "-o", str(tmp_path / "student"))
    assert student["soft_target_cache"]["train"] == "online" and student["params_ratio"] < 0.5
    report = invoke("export", str(tmp_path / "student"), "-o", str(tmp_path / "export"), "--format", "onnx",
                    "--precision", "fp32")
    assert report["ok"], report
    assert [r["precision"] for r in report["rows"]] == ["fp32"]
    manifest = json.loads((tmp_path / "export" / "onnx-fp32" / "manifest.json").read_text())
    assert manifest["task"] == "text" and manifest["text"]["tokenizer_file"] == "tokenizer.json"
    rows = invoke("bench", str(tmp_path / "export" / "onnx-fp32"), "--device", "local", "--no-record", "--data", str(jsonl),
                  "--min-count", "5", "--min-seconds", "0", "--warmup", "1", "--warmup-seconds", "0")
    assert [r["status"] for r in rows["rows"]] == ["ok"], rows["rows"]
    assert rows["rows"][0]["accuracy"] is not None and rows["rows"][0]["p50_ms"] > 0


def test_text_errors_are_one_line(tmp_path, jsonl):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nfine,1\n,0\n")
    result = CliRunner().invoke(main, ["teacher", "--data", str(bad), "-o", str(tmp_path / "t")])
    assert result.exit_code == 2 and "line 3: empty text" in result.output
    result = CliRunner().invoke(main, ["distill", "--data", str(jsonl), "--student", "tinybert:hidden=30,heads=4",
                                       "--loss", "ce", "--epochs", "1", "-o", str(tmp_path / "s")])
    assert result.exit_code == 2 and "divisible by heads" in result.output
