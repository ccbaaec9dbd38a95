"""Model families, spec strings, counting, ONNX export and parity. Parametrized over the MODELS
registry, so a new family is tested with no new test code."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models import (
    DEFAULT_STUDENT,
    DEFAULT_TEACHER,
    MODELS,
    canonical_spec,
    count_macs,
    count_params,
    create_model,
    model_features,
    parse_spec,
)
from edgekd.models.common import downsample_count, stride_plan

ALL_FAMILIES = MODELS.names()
IMAGE_FAMILIES = [n for n in ALL_FAMILIES if MODELS.get(n).task == "image"]
# the ImageNet-scale families (scale "real"): their largest members (up to 22 M parameters) are
# counted on the meta device and exported through every runtime in test_scaled_families.py
MICRO_IMAGE_FAMILIES = [n for n in IMAGE_FAMILIES if MODELS.get(n).scale == "micro"]
# the two ends of every micro image family's search space (or its default spec when it has none),
# the smallest member of each real-scale one
ENDS = [
    pytest.param(spec, id=spec)
    for name in IMAGE_FAMILIES
    for spec in dict.fromkeys(
        ([MODELS.get(name).search_space()[0]] if MODELS.get(name).scale == "real"
         else [MODELS.get(name).search_space()[0], MODELS.get(name).search_space()[-1]])
        if MODELS.get(name).search_space()
        else [MODELS.get(name).default_spec]
    )
]


def _largest(name: str) -> str:
    family = MODELS.get(name)
    return family.search_space()[-1] if family.search_space() else family.default_spec


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_family_contract(name: str) -> None:
    family = MODELS.get(name)
    assert family.name == name
    assert family.role in ("student", "teacher")
    assert family.task
    assert (family.__doc__ or "").strip(), "every family documents itself"
    assert family.default_spec == canonical_spec(family.default_spec)
    assert canonical_spec(name) == family.default_spec
    space = family.search_space()
    if family.role == "student":
        assert 6 <= len(space) <= 12, "a student family spans small..large"
    for spec in space:
        assert canonical_spec(spec) == spec
        assert parse_spec(spec)[0] == name
    assert len(set(space)) == len(space), "no duplicate specs in a search space"


@pytest.mark.parametrize("spec", ENDS)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32), (1, 28, 28)], ids=["8x8", "3x32x32", "28x28"])
def test_build_forward_and_counts(spec: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = create_model(spec, shape, 10).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    assert count_params(model) > 0
    assert count_macs(model, shape) > 0
    assert isinstance(model.features, nn.Module) and isinstance(model.classifier, nn.Linear)


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 32, 32)], ids=["8x8", "32x32"])
def test_search_space_grows(name: str, shape: tuple[int, int, int]) -> None:
    """Small -> large by MACs (at each spec's own input: a spec with resolution=r is counted at r x r)
    and, for families whose specs do not fix a resolution, by parameters too. Built on the meta
    device: shapes only, so the ImageNet-scale families cost no weights."""
    from edgekd.models import spec_input_shape

    sizes = []
    for spec in MODELS.get(name).search_space():
        with torch.device("meta"):
            model = create_model(spec, shape, 10)
        sizes.append((count_params(model), count_macs(model, spec_input_shape(spec, shape))))
    params, macs = [p for p, _ in sizes], [m for _, m in sizes]
    if "resolution" not in MODELS.get(name).defaults:  # else width and resolution trade places
        assert params == sorted(params) and len(set(params)) == len(params), (name, params)
    assert macs == sorted(macs) and len(set(macs)) == len(macs), (name, macs)


def test_default_pair_ratio() -> None:
    assert MODELS.get(parse_spec(DEFAULT_TEACHER)[0]).role == "teacher"
    assert MODELS.get(parse_spec(DEFAULT_STUDENT)[0]).role == "student"
    for shape in [(1, 8, 8), (1, 32, 32)]:
        teacher = count_params(create_model(DEFAULT_TEACHER, shape, 10))
        student = count_params(create_model(DEFAULT_STUDENT, shape, 10))
        assert student * 10 <= teacher, (shape, student, teacher)


@pytest.mark.parametrize("task", ["image", "text"])
def test_default_specs_per_task_name_a_teacher_and_a_student_of_that_task(task: str) -> None:
    from edgekd.models import default_specs

    teacher, student = default_specs(task)
    for spec, role in ((teacher, "teacher"), (student, "student")):
        family = MODELS.get(parse_spec(spec)[0])
        assert (family.role, family.task) == (role, task), spec
    with pytest.raises(ConfigError, match="no default models for task 'audio'"):
        default_specs("audio")


class _Tiny(nn.Module):
    """conv 2->4 (3x3, pad 1) on 5x5, depthwise 4 (3x3, stride 2, pad 1), grouped 1x1 4->6 (2 groups),
    Linear 54->7: MACs by hand below."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.dw = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4)
        self.grouped = nn.Conv2d(4, 6, 1, groups=2)
        self.fc = nn.Linear(54, 7)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.fc(self.grouped(self.dw(self.conv(x))).flatten(1))


def test_macs_exact_hand_computed() -> None:
    model = _Tiny()
    conv = 4 * 5 * 5 * (2 * 3 * 3)  # 100 outputs x 18
    dw = 4 * 3 * 3 * (1 * 3 * 3)  # 36 outputs x 9
    grouped = 6 * 3 * 3 * (2 * 1 * 1)  # 54 outputs x (4/2)
    fc = 7 * 54
    assert count_macs(model, (2, 5, 5)) == conv + dw + grouped + fc == 2610
    assert count_params(model) == (2 * 9 * 4 + 4) + (9 * 4 + 4) + (2 * 6 + 6) + (54 * 7 + 7)
    # batch size and dilation: MACs are per sample of the given example
    assert count_macs(nn.Conv1d(3, 5, 3, dilation=2), example=torch.zeros(1, 3, 10)) == 5 * 6 * 9
    # attention: q/k/v/out projections (4 x L x E x E) plus Q K^T and A V (2 x L x L x E)
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.mha(x, x, x, need_weights=False)[0]

    assert count_macs(Attn(), (5, 8)) == 4 * 5 * 8 * 8 + 2 * 5 * 5 * 8


def test_model_features_hand_computed() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
        nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3),
    )
    model.train()
    feats = model_features(model, (1, 4, 4))
    assert model.training, "the model's mode is restored"
    assert feats["macs"] == 32 * 9 + 32 * 9 + 3 * 2
    assert feats["params"] == count_params(model)
    # outputs: conv 32, bn 32, relu 32, dw 32, relu6 32, pool 2, flatten 2, linear 3 (float32)
    assert feats["activation_bytes"] == (32 * 5 + 2 + 2 + 3) * 4
    assert {k: feats[k] for k in ("conv", "depthwise_conv", "linear", "bn", "act", "pool")} == {
        "conv": 1, "depthwise_conv": 1, "linear": 1, "bn": 1, "act": 2, "pool": 1,
    }


def test_mobilenet_has_depthwise_and_residuals() -> None:
    model = create_model("mobilenet:width=0.5,depth=2", (1, 8, 8), 10)
    feats = model_features(model, (1, 8, 8))
    assert feats["depthwise_conv"] == 4  # 2 stages x 2 blocks
    assert any(getattr(m, "use_residual", False) for m in model.modules())


def test_stride_plan() -> None:
    assert [downsample_count(s, s) for s in (4, 7, 8, 16, 28, 32, 64)] == [0, 0, 1, 2, 2, 3, 4]
    assert stride_plan(3, 8, 8) == [1, 2, 1]  # one step: the second block
    assert stride_plan(3, 32, 32) == [2, 2, 2]  # three steps: every place
    assert stride_plan(1, 32, 32) == [2]  # only the stem can stride; the pool does the rest


def _export_quietly(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    # the dynamo exporter logs and warns a lot (e.g. "torchvision is not installed"); keep tests quiet
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18, external_data=False,
                              input_names=["input"], output_names=["logits"], verbose=False)
    finally:
        logger.setLevel(level)


@pytest.mark.parametrize("name", MICRO_IMAGE_FAMILIES)
def test_onnx_export_matches_torch(name: str, tmp_path: Path) -> None:
    """The largest spec of each family (a structural superset of the small ones) at 1x8x8 (the
    ImageNet-scale families go through every runtime's parity gate in test_scaled_families.py)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    model = create_model(_largest(name), (1, 8, 8), 10).eval()
    # non-trivial BN statistics, so a folded or skipped BN would show
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 1, 8, 8)
    path = tmp_path / f"{name}.onnx"
    _export_quietly(model, x, path)
    assert not list(tmp_path.glob("*.data")), "single-file ONNX"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


# ---- spec strings ---------------------------------------------------------------------------------


def test_parse_spec_examples() -> None:
    assert parse_spec("cnn:width=16,depth=3") == ("cnn", {"width": 16, "depth": 3})
    assert parse_spec("mlp:hidden=128x2") == ("mlp", {"hidden": [128, 128]})
    assert parse_spec("mlp:hidden=256x128") == ("mlp", {"hidden": [256, 128]})
    assert parse_spec("mlp:hidden=64") == ("mlp", {"hidden": [64]})
    assert parse_spec("cnn") == ("cnn", {})
    assert parse_spec(" cnn : width = 4 ") == ("cnn", {"width": 4})
    assert parse_spec("mobilenet:width=1") == ("mobilenet", {"width": 1.0})


def test_canonical_spec_is_one_spelling() -> None:
    a = canonical_spec("cnn:depth=2,width=8")
    assert a == canonical_spec("cnn:width=8, depth=2") == canonical_spec("cnn") == "cnn:depth=2,width=8"
    assert canonical_spec("mlp:hidden=128x2") == canonical_spec("mlp:hidden=128x128") == "mlp:hidden=128x128"
    assert canonical_spec("mobilenet:width=1") == canonical_spec("mobilenet:width=1.0")
    for spec in ["mlp:hidden=256x128", "mlp:hidden=32x2", "resnet:width=16,blocks=2"]:
        canon = canonical_spec(spec)
        assert canonical_spec(canon) == canon
        name, kw = parse_spec(canon)
        assert kw == MODELS.get(name).resolve(parse_spec(spec)[1])


@pytest.mark.parametrize(
    "spec, words",
    [
        ("", ["empty"]),
        ("cnn:", ["nothing after"]),
        ("cnn:width", ["key=value"]),
        ("cnn:width=", ["key=value"]),
        ("cnn:=8", ["key=value"]),
        ("cnn:colour=3", ["'colour'", "valid keys", "width", "depth"]),
        ("cnn:width=abc", ["width", "integer"]),
        ("cnn:width=1.5", ["width", "integer"]),
        ("cnn:width=8,width=4", ["twice"]),
        ("cnn:depth=0", ["depth"]),
        ("mobilenet:width=-1", ["width"]),
        ("mlp:hidden=12xa", ["hidden", "list"]),
        ("mlp:hidden=4x4", ["hidden", "> 8"]),
        ("mlp:hidden=true", ["hidden", "list"]),
        ("CNN:width=8", ["family name"]),
        ("cnn:width=8;depth=2", ["width"]),
    ],
)
def test_bad_spec_strings(spec: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        canonical_spec(spec)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (spec, message)


def test_unknown_family_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'resnet'"):
        create_model("resnte:width=8", (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="valid|Valid"):
        parse_spec("transformerxl")


def test_registry_duplicate_is_an_error() -> None:
    before = MODELS.names()
    with pytest.raises(ValueError, match="already registered"):
        MODELS.add("cnn", MODELS.get("cnn"))
    assert MODELS.names() == before


def test_bad_build_arguments() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        create_model("cnn", (8, 8), 10)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("cnn", (1, 8, 8), 1)


def test_import_edgekd_does_not_import_models() -> None:
    code = "import sys, edgekd; print('edgekd.models' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_cli_models_json_and_errors() -> None:
    from click.testing import CliRunner

    from edgekd.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["models", "--json", "--family", "cnn", "--input-shape", "1x8x8"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["default_student"] == DEFAULT_STUDENT and data["default_teacher"] == DEFAULT_TEACHER
    [cnn] = data["families"]
    assert cnn["role"] == "student" and cnn["defaults"] == {"width": 8, "depth": 2}
    assert [row["spec"] for row in cnn["search_space"]] == MODELS.get("cnn").search_space()
    first = create_model(cnn["search_space"][0]["spec"], (1, 8, 8), 10)
    assert cnn["search_space"][0]["macs"] == count_macs(first, (1, 8, 8))
    table = runner.invoke(main, ["models", "--family", "mlp", "--input-shape", "1x32x32"])
    assert table.exit_code == 0 and "mlp:hidden=16" in table.output
    bad = runner.invoke(main, ["models", "--family", "cnnn"])
    assert bad.exit_code == 2 and "Did you mean 'cnn'" in bad.output
    bad_shape = runner.invoke(main, ["models", "--input-shape", "8x8"])
    assert bad_shape.exit_code == 2


# ---- property: canonical specs round-trip ---------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edgekd.models import format_spec  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    hidden=st.lists(st.integers(min_value=9, max_value=4096), min_size=1, max_size=8),
    width=st.integers(min_value=1, max_value=1024),
    depth=st.integers(min_value=1, max_value=16),
    mult=st.sampled_from([0.05, 0.25, 0.3, 0.5, 0.75, 1.0, 1.25, 3.9]),
)
def test_canonical_round_trip(hidden: list[int], width: int, depth: int, mult: float) -> None:
    for name, kwargs in [("mlp", {"hidden": hidden}), ("cnn", {"width": width, "depth": depth}),
                         ("mobilenet", {"width": mult, "depth": min(depth, 8)})]:
        canon = canonical_spec(format_spec(name, kwargs))
        assert canonical_spec(canon) == canon
        parsed = parse_spec(canon)[1]
        assert {k: parsed[k] for k in kwargs} == kwargs
