"""Saved models: round trip through torch.load(weights_only=True), every broken file -> ModelError,
and structural surgery (resize) replayed on load."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.errors import ModelError
from edgekd.models import MODELS, ModelInfo, create_model, load_model, save_model
from edgekd.models.checkpoint import FORMAT
from edgekd.models.surgery import SURGERY, replay, resize_record

IMAGE_FAMILIES = [n for n in MODELS.names() if MODELS.get(n).task == "image"]


def _info(spec: str, shape=(1, 8, 8), **kw) -> ModelInfo:
    return ModelInfo(spec=spec, input_shape=shape, num_classes=10,
                     normalization={"mean": [0.3], "std": [0.4]}, **kw)


def _randomize_bn(model: nn.Module) -> None:
    # fresh BN stats are 0/1; random ones prove the buffers are saved too
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_round_trip(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    spec = MODELS.get(name).search_space()[0]
    model = create_model(spec, (1, 8, 8), 10).eval()
    _randomize_bn(model)
    path = tmp_path / "m.pt"
    save_model(path, model, _info(spec, meta={"test_acc": 0.97, "note": "x"}))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["spec"] == spec and raw["input_shape"] == [1, 8, 8]
    assert raw["class_names"] == [str(i) for i in range(10)]
    loaded, info = load_model(path)
    assert not loaded.training
    assert info.spec == spec and info.input_shape == (1, 8, 8) and info.num_classes == 10
    assert info.normalization == {"mean": [0.3], "std": [0.4]} and info.meta["test_acc"] == 0.97
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob(".*.tmp")), "atomic write leaves no temp file"


def test_spec_is_stored_canonical(tmp_path: Path) -> None:
    model = create_model("cnn:width=4", (1, 8, 8), 10)
    save_model(tmp_path / "m.pt", model, _info("cnn:width=4"))
    assert load_model(tmp_path / "m.pt")[1].spec == "cnn:depth=2,width=4"


def test_meta_must_be_plain_data(tmp_path: Path) -> None:
    model = create_model("cnn", (1, 8, 8), 10)
    with pytest.raises(ModelError, match="JSON"):
        save_model(tmp_path / "m.pt", model, _info("cnn", meta={"bad": object()}))
    assert not (tmp_path / "m.pt").exists()


class _Evil:
    def __reduce__(self):  # would run code if unpickled without weights_only
        return (print, ("pwned",))


def _write_bad_files(tmp_path: Path, good: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    blob = good.read_bytes()
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(blob[: len(blob) // 2])
    files["corrupt"] = tmp_path / "corrupt.pt"
    mangled = bytearray(blob)
    mid = len(mangled) // 2
    mangled[mid:mid + 64] = b"\xff" * 64
    files["corrupt"].write_bytes(bytes(mangled))
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("hello, not a model\n")
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    files["pickle"] = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "x": _Evil()}, files["pickle"])
    files["state_dict"] = tmp_path / "bare.pt"
    torch.save(create_model("cnn", (1, 8, 8), 10).state_dict(), files["state_dict"])
    files["list"] = tmp_path / "list.pt"
    torch.save([1, 2, 3], files["list"])
    files["missing_keys"] = tmp_path / "missing.pt"
    torch.save({"format": FORMAT, "spec": "cnn"}, files["missing_keys"])
    files["wrong_spec"] = tmp_path / "wrong_spec.pt"
    raw = torch.load(good, weights_only=True)
    torch.save({**raw, "spec": "cnn:width=16"}, files["wrong_spec"])
    files["unknown_family"] = tmp_path / "unknown_family.pt"
    torch.save({**raw, "spec": "cnnx:width=16"}, files["unknown_family"])
    files["bad_surgery"] = tmp_path / "bad_surgery.pt"
    torch.save({**raw, "surgery": [{"op": "resise"}]}, files["bad_surgery"])
    files["directory"] = tmp_path / "adir"
    files["directory"].mkdir()
    files["missing"] = tmp_path / "nope.pt"
    return files


def test_broken_files_raise_model_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.pt"
    save_model(good, create_model("cnn", (1, 8, 8), 10), _info("cnn"))
    files = _write_bad_files(tmp_path, good)
    expected = {
        "wrong_spec": "do not fit", "unknown_family": "Did you mean", "bad_surgery": "Did you mean 'resize'",
        "state_dict": "format", "missing_keys": "lacks", "missing": "does not exist", "list": "not an edgekd",
    }
    for kind, path in files.items():
        with pytest.raises(ModelError) as err:
            load_model(path)
        message = str(err.value)
        assert path.name in message, (kind, message)
        assert "\n" not in message, (kind, message)
        assert expected.get(kind, "") in message, (kind, message)
    assert "pwned" not in capsys.readouterr().out


def _shrink_first_block(model: nn.Module, keep: int) -> None:
    """Prune the first conv block of a cnn in place the way a pruning tool does: slice the conv's
    output channels, its BN, and the next conv's input channels."""
    conv, bn = model.features[0][0], model.features[0][1]
    nxt = model.features[1][0]
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight[:keep].clone())
        conv.out_channels = keep
        bn.weight = nn.Parameter(bn.weight[:keep].clone())
        bn.bias = nn.Parameter(bn.bias[:keep].clone())
        bn.running_mean = bn.running_mean[:keep].clone()
        bn.running_var = bn.running_var[:keep].clone()
        bn.num_features = keep
        nxt.weight = nn.Parameter(nxt.weight[:, :keep].clone())
        nxt.in_channels = keep


@pytest.mark.parametrize("with_reference", [True, False])
def test_resize_surgery_round_trip(tmp_path: Path, with_reference: bool) -> None:
    torch.manual_seed(0)
    spec = "cnn:width=8,depth=2"
    model = create_model(spec, (1, 8, 8), 10).eval()
    _randomize_bn(model)
    _shrink_first_block(model, keep=5)
    record = resize_record(model, create_model(spec, (1, 8, 8), 10) if with_reference else None)
    if with_reference:
        assert record == {"op": "resize", "modules": {
            "features.0.0": {"type": "Conv2d", "in": 1, "out": 5, "groups": 1},
            "features.0.1": {"type": "BatchNorm2d", "in": 5, "out": 5, "groups": 1},
            "features.1.0": {"type": "Conv2d", "in": 5, "out": 16, "groups": 1},
        }}
    else:
        assert "classifier" in record["modules"]
    path = tmp_path / "pruned.pt"
    save_model(path, model, _info(spec, surgery=[record]))
    loaded, info = load_model(path)
    assert info.surgery == [record]
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert loaded.features[0][0].out_channels == 5
    # without its surgery the pruned weights do not fit the spec: a clear error, not a traceback
    raw = torch.load(path, weights_only=True)
    torch.save({**raw, "surgery": []}, tmp_path / "no_surgery.pt")
    with pytest.raises(ModelError, match="surgery"):
        load_model(tmp_path / "no_surgery.pt")


def test_resize_depthwise_and_linear() -> None:
    model = create_model("mobilenet:width=0.25,depth=1,blocks=1", (1, 8, 8), 10)
    record = {"op": "resize", "modules": {
        "features.1.block.1.0": {"type": "Conv2d", "in": 6, "out": 6, "groups": 6},
        "classifier": {"type": "Linear", "in": 4, "out": 10, "groups": 1},
    }}
    replay(model, [record])
    dw = model.features[1].block[1][0]
    assert (dw.groups, dw.in_channels, dw.out_channels, dw.kernel_size, dw.stride) == (6, 6, 6, (3, 3), (1, 1))
    assert tuple(model.classifier.weight.shape) == (10, 4)


def test_replay_errors() -> None:
    model = create_model("cnn", (1, 8, 8), 10)
    bad = [
        ["not a dict"],
        [{"op": "resise", "modules": {}}],
        [{"op": "resize"}],
        [{"op": "resize", "modules": {"features.9": {"type": "Conv2d", "in": 1, "out": 2}}}],
        [{"op": "resize", "modules": {"features.0.0": {"type": "Linear", "in": 1, "out": 2}}}],
        [{"op": "resize", "modules": {"features.0.0": {"type": "Conv2d", "in": 0, "out": 2}}}],
    ]
    for records in bad:
        with pytest.raises(ModelError):
            replay(model, records)


def test_surgery_registry_is_open() -> None:
    assert "resize" in SURGERY
    with pytest.raises(ValueError, match="already registered"):
        SURGERY.add("resize", lambda model, record: None)


def test_weights_only_refuses_pickled_objects(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": FORMAT, "x": _Evil()}, fh)
    with pytest.raises(ModelError, match="evil.pt"):
        load_model(path)
