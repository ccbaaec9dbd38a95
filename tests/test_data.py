"""Data loading: built-in digits, user .npz and image folders, splits, fingerprints, and bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekd.cli import main
from edgekd.data import load_dataset, source_task
from edgekd.data.dataset import resample_square
from edgekd.errors import DataError


def test_digits_split_is_deterministic_and_stratified():
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert np.array_equal(a.train.y, b.train.y) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    # every class appears in every split
    for split in (a.train, a.val, a.test):
        assert set(np.unique(split.y)) == set(range(10))
    # normalized with train statistics
    assert abs(float(a.train.x.mean())) < 1e-4 and abs(float(a.train.x.std()) - 1) < 1e-3


@pytest.mark.parametrize("source,task", [("digits", "image"), ("x.npz", "image"), ("imgs/", "image"),
                                         ("reviews", "text"), ("a.csv", "text"), ("a.TSV", "text"),
                                         ("a.jsonl", "text")])
def test_source_task_without_loading(source: str, task: str):
    assert source_task(source) == task  # none of these paths exists: nothing is read


def test_resample_changes_shape_and_fingerprint():
    small = load_dataset("digits")
    big = load_dataset("digits", image_size=32)
    assert big.input_shape == (1, 32, 32)
    assert big.train.x.shape[1:] == (1, 32, 32)
    assert big.fingerprint != small.fingerprint
    assert big.preprocess["image_size"] == 32
    # asking for the size the images already have is the same dataset (bench and deploy agree on it)
    assert load_dataset("digits", image_size=8).fingerprint == small.fingerprint


def test_resample_preserves_constant_and_mean():
    x = np.full((2, 1, 8, 8), 0.25, dtype=np.float32)
    assert np.allclose(resample_square(x, 32), 0.25)
    ramp = np.tile(np.linspace(0, 1, 8, dtype=np.float32), (1, 1, 8, 1))
    up = resample_square(ramp, 16)
    assert np.all(np.diff(up[0, 0, 0]) >= -1e-7)  # monotone stays monotone


@pytest.mark.parametrize(
    "layout",
    ["nhw", "nhwc", "nchw"],
)
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_npz_layouts(tmp_path: Path, layout: str, dtype: str):
    rng = np.random.default_rng(0)
    n = 60
    base = rng.random((n, 3, 6, 6)).astype(np.float32)
    if layout == "nhw":
        x = base[:, 0]
    elif layout == "nhwc":
        x = base.transpose(0, 2, 3, 1)
    else:
        x = base
    if dtype == "uint8":
        x = (x * 255).astype(np.uint8)
    y = np.arange(n) % 3
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(path))
    assert ds.input_shape == ((1, 6, 6) if layout == "nhw" else (3, 6, 6))
    assert ds.class_names == ["a", "b", "c"]
    assert ds.train.x.dtype == np.float32


def _write_npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(x=np.zeros((10, 4, 4), np.uint8)), "missing array(s) y"),
        (dict(x=np.zeros((10, 4, 4), np.uint8), y=np.zeros(9, int)), "10 images but 'y' has shape (9,)"),
        (dict(x=np.zeros((10, 4), np.uint8), y=np.zeros(10, int)), "images must be"),
        (dict(x=np.zeros((4, 4, 4), np.uint8), y=np.array([0, 1, -1, 0])), "out of range"),
        (dict(x=np.zeros((4, 4, 4), np.uint8), y=np.array([0, 2, 2, 0])), "class 1 has no samples"),
        (dict(x=np.zeros((4, 4, 4), np.uint8), y=np.array([0, 1, 5, 0]), class_names=np.array(["a", "b"])), "out of range"),
        (dict(x=np.zeros((4, 4, 4), np.int32), y=np.array([0, 1, 0, 1])), "dtype int32"),
        (dict(x=np.zeros((4, 4, 4), np.float32), y=np.array([0.5, 1, 0, 1])), "integer class indices"),
    ],
)
def test_npz_bad_input(tmp_path: Path, arrays, message):
    with pytest.raises(DataError) as err:
        load_dataset(_write_npz(tmp_path, **arrays))
    assert message in str(err.value) and "bad.npz" in str(err.value)


def test_npz_object_array_is_refused_without_pickle(tmp_path: Path):
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([object(), object()], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="without pickle"):
        load_dataset(str(path))


def test_corrupt_npz(tmp_path: Path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset(str(path))


def _image_folder(tmp_path: Path, sizes=(8, 8), n=6) -> Path:
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = (rng.random(sizes) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return root


def test_image_folder(tmp_path: Path):
    root = _image_folder(tmp_path)
    ds = load_dataset(str(root), val_fraction=0.2, test_fraction=0.2)
    assert ds.class_names == ["cat", "dog"] and ds.input_shape == (1, 8, 8)
    resized = load_dataset(str(root), image_size=16)
    assert resized.input_shape == (1, 16, 16)


def test_image_folder_bad_image_and_empty_class(tmp_path: Path):
    root = _image_folder(tmp_path)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: image does not decode"):
        load_dataset(str(root))
    (root / "dog" / "broken.png").unlink()
    (root / "bird").mkdir()
    with pytest.raises(DataError, match="class 'bird' has no images"):
        load_dataset(str(root))


def test_missing_path_and_unknown_suffix(tmp_path: Path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(str(tmp_path / "nope.npz"))
    other = tmp_path / "data.xyz"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported data file"):
        load_dataset(str(other))


def test_cli_data_info_and_bad_input(tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(main, ["data", "digits", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"num_classes": 10' in ok.output
    bad = runner.invoke(main, ["data", str(tmp_path / "missing.npz")])
    assert bad.exit_code == 2
    assert bad.output.count("\n") == 1 and "missing.npz" in bad.output


def test_cli_bad_input_real_subprocess(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "edgekd", "data", str(tmp_path / "missing.npz")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error:") and "missing.npz" in proc.stderr
