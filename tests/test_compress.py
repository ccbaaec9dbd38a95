"""Compression passes: pruning and low-rank round trips, hardware-friendly channel counts, SVD
exactness, and the pass chain with KD fine-tuning on a tiny distilled student."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.compress import PASSES, PassData
from edgekd.compress.lowrank import factorize, lowrank_pass, rank_for
from edgekd.compress.prune import kept_channels, prune_pass
from edgekd.errors import ConfigError, ModelError
from edgekd.models import ModelInfo, count_params, create_model, load_model, save_model

SHAPE = (1, 8, 8)
# one spec per family the pruner must handle: plain convs, depthwise + residual, residual + shortcut
FAMILY_SPECS = ["cnn:width=16,depth=3", "mobilenet:width=0.5,depth=2", "resnet:width=8,depth=2", "mlp"]


def _model(spec: str) -> nn.Module:
    torch.manual_seed(0)
    return create_model(spec, SHAPE, 10).eval()


def _roundtrip(tmp_path: Path, model: nn.Module, spec: str, records: list[dict]) -> nn.Module:
    path = tmp_path / "m.pt"
    save_model(path, model, ModelInfo(spec=spec, input_shape=SHAPE, num_classes=10, surgery=records))
    raw = torch.load(path, weights_only=True)  # the file is plain data: no pickle needed
    assert raw["surgery"] == json.loads(json.dumps(records))
    loaded, info = load_model(path)
    assert info.surgery == raw["surgery"]
    return loaded


def _x(n: int = 4) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(1))


# ---- pruning -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "ratio", "kept"), [
    (16, 0.5, 8), (32, 0.5, 16), (24, 0.5, 16), (64, 0.7, 16), (8, 0.5, 8), (12, 0.9, 8),
    (4, 0.5, 2), (3, 0.5, 2), (1, 0.9, 1), (16, 0.0, 16), (40, 0.5, 24),
])
def test_kept_channels_round_to_multiples_of_8(n: int, ratio: float, kept: int) -> None:
    assert kept_channels(n, ratio) == kept


@pytest.mark.parametrize("spec", FAMILY_SPECS)
def test_prune_round_trip_multiples_of_8_and_classifier_kept(tmp_path: Path, spec: str) -> None:
    model = _model(spec)
    before = {p: m.weight.shape[0] for p, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    p0 = count_params(model)
    records, details = prune_pass(model, _x(2), ratio=0.5)
    assert records and records[0]["op"] == "resize"
    assert count_params(model) < 0.6 * p0
    assert model.classifier.out_features == 10
    for path, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and path != "classifier":
            out = module.weight.shape[0]
            if before[path] >= 8:
                assert out % 8 == 0, f"{spec}: {path} has {out} channels"
            if isinstance(module, nn.Conv2d) and module.groups > 1:  # depthwise stays depthwise
                assert module.groups == module.in_channels == module.out_channels
    assert details["groups"] and all(v["after"] <= v["before"] for v in details["groups"].values())
    x = _x()
    expected = model(x)
    loaded = _roundtrip(tmp_path, model, spec, records)
    assert torch.equal(loaded(x), expected)


def test_prune_ratio_is_checked() -> None:
    with pytest.raises(ConfigError, match="ratio"):
        prune_pass(_model("cnn"), _x(2), ratio=1.0)
    with pytest.raises(ConfigError, match="unknown field 'ratoi'.*'ratio'"):
        PASSES.get("prune").config({"ratoi": 0.5})


# ---- low-rank ------------------------------------------------------------------------------------
def test_svd_is_exact_at_full_rank() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(20, 12)
    x = torch.randn(5, 20)
    assert torch.allclose(factorize(linear, 12)(x), linear(x), atol=1e-5)
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1)
    xc = torch.randn(2, 6, 9, 9)
    pair = factorize(conv, 10)
    assert pair[0].kernel_size == (3, 3) and pair[1].kernel_size == (1, 1) and pair[0].stride == (2, 2)
    assert torch.allclose(pair(xc), conv(xc), atol=1e-5)


def test_low_rank_reduces_params_and_is_the_best_approximation() -> None:
    torch.manual_seed(0)
    u, v = torch.randn(64, 4), torch.randn(4, 48)
    linear = nn.Linear(48, 64)
    with torch.no_grad():
        linear.weight.copy_(u @ v)  # a rank-4 weight: rank 4 reproduces it
    pair = factorize(linear, 4)
    assert count_params(pair) < count_params(linear) / 5
    x = torch.randn(3, 48)
    assert torch.allclose(pair(x), linear(x), atol=1e-3)
    s = torch.linalg.svdvals(linear.weight.detach().double())
    assert rank_for(s, energy=0.999) == 4
    assert rank_for(torch.tensor([3.0, 2.0, 1.0]), energy=0.9) == 2  # 9+4 = 13/14 >= 0.9, 9/14 < 0.9
    assert rank_for(torch.tensor([3.0, 2.0, 1.0]), ratio=0.5) == 2


def test_lowrank_pass_only_factorizes_when_it_saves(tmp_path: Path) -> None:
    model = _model("cnn:width=16,depth=3")
    p0 = count_params(model)
    records, details = lowrank_pass(model, _x(2), ratio=0.25)
    assert records[0]["op"] == "factorize"
    assert count_params(model) < p0
    for path, layer in details["layers"].items():
        saves = layer["weights_after"] <= 0.9 * layer["weights_before"]
        assert layer["factorized"] == saves, path
        if layer["factorized"]:
            assert isinstance(model.get_submodule(path), nn.Sequential)
    # full rank never saves anything: nothing is factorized
    untouched = _model("cnn:width=16,depth=3")
    assert lowrank_pass(untouched, _x(2), ratio=1.0)[0] == []
    with pytest.raises(ConfigError, match="not both"):
        lowrank_pass(untouched, _x(2), ratio=0.5, energy=0.9)


@pytest.mark.parametrize("spec", FAMILY_SPECS)
def test_factorize_round_trip(tmp_path: Path, spec: str) -> None:
    model = _model(spec)
    records, _ = lowrank_pass(model, _x(2), ratio=0.5)
    assert records, f"{spec}: nothing was factorized"
    x = _x()
    expected = model(x)
    loaded = _roundtrip(tmp_path, model, spec, records)
    assert torch.equal(loaded(x), expected)


def test_prune_after_lowrank_round_trip(tmp_path: Path) -> None:
    """Surgery records replay in order: factorize, then resize the factor layers pruning shrank."""
    model = _model("cnn:width=16,depth=3")
    r1, _ = lowrank_pass(model, _x(2), ratio=0.5)
    r2, _ = prune_pass(model, _x(2), ratio=0.5)
    assert any(".0" in path for path in r2[0]["modules"])  # a factor layer was resized
    x = _x()
    expected = model(x)
    assert torch.equal(_roundtrip(tmp_path, model, "cnn:width=16,depth=3", r1 + r2)(x), expected)


def test_bad_factorize_record_is_a_model_error(tmp_path: Path) -> None:
    model = _model("cnn")
    path = tmp_path / "bad.pt"
    bad = [{"op": "factorize", "modules": {"features.0.0": {"type": "Conv2d", "rank": 999}}}]
    save_model(path, model, ModelInfo(spec="cnn", input_shape=SHAPE, num_classes=10, surgery=bad))
    with pytest.raises(ModelError, match="rank 999"):
        load_model(path)


# ---- every registered pass -----------------------------------------------------------------------
@pytest.mark.parametrize("name", PASSES.names())
def test_every_pass_with_defaults_round_trips_on_a_trained_model(tmp_path: Path, name: str, tiny_teacher_ckpt: Path) -> None:
    model, info = load_model(tiny_teacher_ckpt)
    p0 = count_params(model)
    x = _x()
    compress_pass = PASSES.get(name)
    result = compress_pass().run(model, PassData(example=x[:2]), compress_pass.config({}))
    model, records, details = result.model, result.records, result.details
    json.dumps(details)  # the report is plain JSON
    assert records, f"pass {name} changed nothing on a trained model with its defaults"
    assert count_params(model) < p0
    expected = model.eval()(x)
    loaded = _roundtrip(tmp_path, model, info.spec, info.surgery + records)
    assert torch.equal(loaded(x), expected)


# ---- the chain with KD fine-tuning ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_ckpt: Path) -> Path:
    """A distill run directory of a small student (1 epoch)."""
    from edgekd import api

    run = tmp_path_factory.mktemp("student") / "run"
    api.distill({"teacher": str(tiny_teacher_ckpt), "student": "cnn:width=16,depth=2", "output": str(run),
                 "train": {"epochs": 1, "lr": 1e-2}}, progress=False)
    return run


def test_pipeline_prune_then_lowrank_with_kd_finetuning(tmp_path: Path, tiny_run: Path) -> None:
    from edgekd import api

    out = tmp_path / "compressed"
    summary = api.compress({"source": str(tiny_run), "output": str(out), "finetune_epochs": 1,
                            "passes": [{"key": "prune", "kwargs": {"ratio": 0.5}},
                                       {"key": "lowrank", "kwargs": {"ratio": 0.5}}]}, progress=False)
    for name in ("student.pt", "summary.json", "config.yaml", "compress.yaml", "metrics.jsonl"):
        assert (out / name).is_file(), name
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert [s["pass"] for s in summary["stages"]] == ["prune", "lowrank"]
    for stage in summary["stages"]:
        for key in ("params", "macs", "file_bytes", "test_acc", "val_acc"):
            assert key in stage["before"] and key in stage["after"]
        assert stage["after"]["params"] < stage["before"]["params"]
        # the teacher's soft targets came from the cache the distill run filled
        assert stage["finetune"]["soft_target_cache"]["train"] == "hit"
        assert Path(stage["student_path"]).is_file()
    assert summary["stages"][1]["before"] == summary["stages"][0]["after"]
    assert summary["params"] < summary["before"]["params"] * 0.5
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["pass"]) for r in rows] == [(1, "prune"), (2, "lowrank")]
    model, info = load_model(out / "student.pt")
    assert [r["op"] for r in info.surgery] == ["resize", "factorize"]
    assert count_params(model) == summary["params"]
    # the output is a run directory itself: compress it again (no fine-tuning, so no teacher run)
    again = api.compress({"source": str(out), "output": str(tmp_path / "again"), "finetune_epochs": 0,
                          "passes": ["prune"]}, progress=False)
    assert again["before"]["params"] == summary["params"]
    assert again["stages"][0]["finetune"] is None


def test_pipeline_failure_leaves_no_output(tmp_path: Path, tiny_run: Path) -> None:
    """A teacher that does not fit the data fails inside the first fine-tuning: the output goes."""
    from edgekd import api

    wrong = tmp_path / "wrong-teacher.pt"
    save_model(wrong, create_model("cnn", (1, 16, 16), 10), ModelInfo(spec="cnn", input_shape=(1, 16, 16), num_classes=10))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="expects inputs"):
        api.compress({"source": str(tiny_run), "output": str(out), "finetune_epochs": 1,
                      "teacher": str(wrong), "passes": ["prune"]}, progress=False)
    assert not out.exists()


def test_pipeline_config_errors(tmp_path: Path, tiny_run: Path) -> None:
    from edgekd import api

    base = {"source": str(tiny_run), "output": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match="Did you mean 'prune'"):
        api.compress({**base, "passes": [{"key": "prun"}]})
    with pytest.raises(ConfigError, match="at least one pass"):
        api.compress({**base, "passes": []})
    with pytest.raises(ConfigError, match="energy must be"):
        api.compress({**base, "passes": [{"key": "lowrank", "kwargs": {"energy": 2}}]})
    with pytest.raises(ConfigError, match="finetune_epochs"):
        api.compress({**base, "passes": ["prune"], "finetune_epochs": -1})
    with pytest.raises(ConfigError, match="does not exist"):
        api.compress({**base, "passes": ["prune"], "teacher": str(tmp_path / "none.pt")})
    assert not (tmp_path / "o").exists()


def test_load_model_finds_factorize_without_importing_compress(tmp_path: Path) -> None:
    """A factorized checkpoint loads in a fresh process that imports only edgekd.models: the op is
    part of the models layer, loading never reaches up into edgekd.compress."""
    import subprocess
    import sys

    model = _model("cnn:width=16,depth=2")
    records, _ = lowrank_pass(model, _x(2), ratio=0.5)
    path = tmp_path / "f.pt"
    save_model(path, model, ModelInfo(spec="cnn:width=16,depth=2", input_shape=SHAPE, num_classes=10, surgery=records))
    code = ("import sys; from edgekd.models import load_model; "
            f"m, info = load_model({str(path)!r}); assert 'edgekd.compress' not in sys.modules, 'loaded compress'; "
            "print(info.surgery[0]['op'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "factorize"
