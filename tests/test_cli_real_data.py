"""`edgekd models` and `edgekd data` on a real image .npz that is not digits (photo patches, 3x12x12,
two classes): counts at the data's shape, a default-student header that agrees with the rows, and the
normalisation shown in the text output."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from real_images import make_photo_patches_npz

from edgekd.cli import main
from edgekd.latency.features import spec_features
from edgekd.models import DEFAULT_STUDENT, MODELS


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_photo_patches_npz(tmp_path_factory.mktemp("photos") / "photos.npz", n_per_class=40)


def _sizes(out: str) -> dict[str, dict]:
    data = json.loads(out)
    return data, {e["spec"]: e for fam in data["families"] for e in fam["search_space"]}


def test_models_counts_at_the_datas_shape(photos):
    res = CliRunner().invoke(main, ["models", "--data", str(photos), "--json"])
    assert res.exit_code == 0, res.output
    data, sizes = _sizes(res.output)
    assert data["input_shape"] == [3, 12, 12] and data["num_classes"] == 2
    assert {fam["task"] for fam in data["families"]} == {"image"}  # a text family cannot take images
    mlp = "mlp:hidden=256x256"
    assert sizes[mlp]["params"] == spec_features(mlp, (3, 12, 12), 2)["params"]
    # the default (1x8x8, 10 classes) counts differently: the shape matters
    # (the rest about the MLP alone: listing every family at 96-224 px again costs ~6 s a call)
    default = _sizes(CliRunner().invoke(main, ["models", "--family", "mlp", "--json"]).output)[1]
    assert default[mlp]["params"] != sizes[mlp]["params"]
    # --image-size alone: the MNIST shape, 28x28 (issue 17: 269k params there, 85k at 8x8)
    res = CliRunner().invoke(main, ["models", "--family", "mlp", "--image-size", "28", "--json"])
    data28, sizes28 = _sizes(res.output)
    assert data28["input_shape"] == [1, 28, 28] and sizes28[mlp]["params"] == spec_features(mlp, (1, 28, 28), 10)["params"]
    assert sizes28[mlp]["params"] > 250_000
    # --data with --image-size: the data resampled
    res = CliRunner().invoke(main, ["models", "--family", "mlp", "--data", str(photos), "--image-size", "16", "--json"])
    assert json.loads(res.output)["input_shape"] == [3, 16, 16]


def test_models_header_names_the_default_student_consistently(photos):
    res = CliRunner().invoke(main, ["models", "--data", str(photos), "--family", "cnn"])
    assert res.exit_code == 0, res.output
    assert f"default student (`edgekd distill` without --student): {DEFAULT_STUDENT}" in res.output
    assert f"bare `cnn` means {MODELS.get('cnn').default_spec}" in res.output
    assert "counted at 3x12x12, 2 classes" in res.output


def test_models_on_text_data_lists_the_text_families_at_their_own_length():
    from edgekd.models import default_specs

    res = CliRunner().invoke(main, ["models", "--data", "reviews", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert {fam["task"] for fam in data["families"]} == {"text"}
    assert (data["default_teacher"], data["default_student"]) == default_specs("text")
    table = CliRunner().invoke(main, ["models", "--data", "reviews"]).output
    assert "own vocabulary and sequence length" in table and " tokens" in table and "1x8x8" not in table


def test_data_text_output_shows_the_normalisation(photos):
    res = CliRunner().invoke(main, ["data", str(photos)])
    assert res.exit_code == 0, res.output
    info = json.loads(CliRunner().invoke(main, ["data", str(photos), "--json"]).output)
    mean = ", ".join(f"{v:.4f}" for v in info["normalization"]["mean"])
    assert f"mean [{mean}]" in res.output and "std [" in res.output
    assert "uint8 / 255" in res.output
