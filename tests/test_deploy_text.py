"""`edgekd deploy` and `edgekd select` for text models: the closed loop on this machine for a tiny
text task (a csv written here, max_len 8, a tiny BERT teacher), into a profile that already holds an
image calibration, so the test also checks that text and image latency models stay apart."""
from __future__ import annotations

import csv
import json
import random

import pytest
from click.testing import CliRunner

from latency_helpers import calibrated_profile, copy_profile

from edgekd import api
from edgekd.latency.section import latency_section
from edgekd.cli import main
from edgekd.latency.model import model_key, shape_tag
from edgekd.device.profiles import Profile

MAX_LEN = 8
TINY_TEACHER = "bert:layers=1,hidden=32,heads=2,intermediate=64"


def write_csv(path, rows: int = 600, seed: int = 0) -> None:
    """Two classes told apart by one sentiment word among filler words (learnable in a few epochs)."""
    rng = random.Random(seed)
    pos, neg = "good great fine lovely superb nice".split(), "bad awful poor dull broken sad".split()
    filler = "the a movie food it was very so".split()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(rows):
            words = [rng.choice(pos if i % 2 else neg), *rng.sample(filler, 3)]
            rng.shuffle(words)
            w.writerow([" ".join(words), i % 2])


def test_shape_tag_keeps_image_keys_and_separates_text():
    assert shape_tag((1, 8, 8)) == "" and shape_tag(None) == ""
    assert shape_tag((16,)) == "/seq16"
    assert model_key("onnxruntime", "fp32", 1, 1) == "onnxruntime/fp32/t1/b1"
    assert model_key("onnxruntime", "fp32", 1, 1, (16,)) == "onnxruntime/fp32/t1/b1/seq16"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy-text")
    image = calibrated_profile(tmp_path_factory.getbasetemp() / "latency-profile")
    profile = copy_profile(image["path"], root)
    before = latency_section(Profile.load(profile))
    data = root / "reviews.csv"
    write_csv(data)
    api.train_teacher(api.teacher_config(data=str(data), arch=TINY_TEACHER, epochs=6, patience=6, max_len=MAX_LEN,
                                         lr=3e-3, threads=1, output=str(root / "teacher")), progress=False)
    report = api.deploy(target="cpu", device="local", data=str(data), max_len=MAX_LEN,
                        teacher=str(root / "teacher" / "student.pt"), threads=1, profile=str(profile),
                        output=str(root / "bundle"), work_dir=str(root / "work"), budget_ms=5.0, max_rounds=2,
                        accuracy_margin=0.3, epochs=6, min_s=0.2, calibrate_count=6)
    return {"report": report, "profile": profile, "before": before, "root": root}


@pytest.mark.slow
def test_text_deploy_verifies_on_the_device_and_keeps_latency_models_apart(deployed):
    report, profile, before = deployed["report"], deployed["profile"], deployed["before"]
    assert report["status"] == "verified", report["status_note"]
    chosen = report["chosen"]
    assert chosen["spec"].startswith("tinybert:") and f"vocab=" in chosen["spec"]
    measured = chosen["measured"]
    assert measured["p50_ms"] > 0 and measured["p90_ms"] <= report["budget_ms"]
    assert measured["accuracy"] is not None and measured["peak_rss_bytes"] > 0
    assert report["teacher"]["source"] == "measured" and report["teacher"]["p50_ms"] > 0
    assert (deployed["root"] / "bundle" / "bundle.json").is_file()
    sec = latency_section(Profile.load(profile))
    text_key = model_key("onnxruntime", "fp32", 1, 1, (MAX_LEN,))
    assert text_key in sec["models"], sorted(sec["models"])
    # the image side is untouched: same default input, same fitted models
    assert sec["input_shape"] == before["input_shape"] and sec["num_classes"] == before["num_classes"]
    for key, model in before["models"].items():
        # fitted on exactly the same image samples as before: no text point mixed into an image fit. (Not
        # the coefficients: a refit on the same samples is not bit-stable since the fit has nearly
        # collinear terms — conv_macs and branch_conv_macs on these small models traded 2 % here.)
        after = sec["models"][key]
        assert after.get("samples") == model.get("samples") and after.get("n_samples") == model.get("n_samples"), key
        assert not any(str(x).startswith("tinybert") for x in after.get("samples") or []), key
    assert sec["text"]["input_shape"] == [MAX_LEN] and sec["text"]["vocab"] > 0


@pytest.mark.slow
def test_select_on_a_profile_with_text_rows(deployed):
    profile = str(deployed["profile"])
    sel = api.select(profile, budget_ms=5.0, percentile=90, task="text", threads=1)
    assert sel["input_shape"] == [MAX_LEN]
    assert sel["chosen"] is not None
    assert all(k.endswith(f"/seq{MAX_LEN}") for k in sel["latency_models"]), sel["latency_models"]
    students = [c for c in sel["candidates"] if c["spec"].startswith("tinybert:")]
    assert students and all("vocab=" in c["spec"] for c in students)
    assert any(c["latency_source"] == "measured" for c in students)
    assert any(c["latency_source"] == "predicted" for c in students)  # the rest of the text search space
    assert not any(c["spec"].startswith(("cnn", "mlp", "mobilenet")) for c in sel["candidates"])
    # the image selection on the same profile is still the image one
    img = api.select(profile, budget_ms=5.0, percentile=90, threads=1)
    assert len(img["input_shape"]) == 3 and not any(c["spec"].startswith("tinybert") for c in img["candidates"])
    out = CliRunner().invoke(main, ["select", "--profile", profile, "--budget-ms", "5", "--task", "text",
                                    "--threads", "1", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["chosen"]["spec"] == sel["chosen"]["spec"]
