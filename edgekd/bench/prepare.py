"""`edgekd bench --data`: turn what the user gives into the evaluation set an artifact is fed, the way
the artifact's manifest says. Host side (it may load a dataset with edgekd.data).

Two kinds of `.npz` arrive here:

  * an *evaluation set* edgekd wrote (`write_eval_npz`: it carries a `normalized` flag), one with
    an array per model input, or float `x` already normalised (negative values): used whole, as it is;
  * a *dataset* file like the one `edgekd deploy --data` takes (raw images `x` as uint8 0..255 or
    float 0..1 in any of N×H×W, N×H×W×C, N×C×H×W, labels `y`): loaded as deploy loads it, its
    TEST split kept (the same seeded split deploy verified on, so the figures compare), scaled to
    [0, 1] and resized to the artifact's input size; the per-channel normalisation is left to the
    harness, which applies the manifest's own mean/std (`normalized=False`).

A dataset name or folder (digits, a class-per-folder directory) goes the second way too.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np



def is_eval_npz(path: Path) -> bool:
    """True when `path` is an evaluation set to use whole (it has a `normalized` flag, or arrays named
    after model inputs such as `input_ids`), False for a dataset file (`x`, `y` raw images)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = set(npz.files)
            if "normalized" in names or not ({"x", "y"} <= names) or names - {"x", "y", "class_names"}:
                return True
            x = npz["x"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return True  # unreadable: the evaluation-set check says why (edgekd.bench.eval_check), exit 2
    if x.dtype == np.uint8 or x.ndim == 3:
        return False  # raw pixels, or N×H×W images without a channel axis: a dataset as deploy takes it
    # float x: already normalised (negative values) is an evaluation set; 0..1 images are a dataset
    return bool(np.issubdtype(x.dtype, np.floating) and x.size and float(np.min(x)) < 0.0)


def image_size_of(artifacts: list[Path]) -> int | None:
    """The square input size (H) of the first image artifact, or None."""
    from edgekd.bench.inputs import read_manifest

    for art in artifacts:
        entry = read_manifest(art)["inputs"][0]
        shape = entry.get("shape") or []
        if len(shape) == 4:
            return int(shape[1] if str(entry.get("layout") or "NCHW").upper() == "NHWC" else shape[2])
    return None


def dataset_eval_npz(source: str, artifacts: list[Path], workdir: Path) -> tuple[Path, str]:
    """Load `source` as a dataset (as deploy does, at the artifact's input size), keep its test split,
    and write it un-normalised (values in [0, 1]) for the harness to normalise with each artifact's
    manifest. Returns (the .npz, the dataset fingerprint of that split)."""
    from edgekd.bench.accuracy import write_eval_npz
    from edgekd.data import load_dataset
    from edgekd.data.text import options_for_artifacts  # text: the artifact's own tokenizer and length

    ds = load_dataset(source, image_size=image_size_of(artifacts), **options_for_artifacts(artifacts))
    out = workdir / f"{Path(str(ds.name)).name}-test.npz"
    if getattr(ds, "task", "image") != "image":
        return write_eval_npz(out, ds.test.x, ds.test.y, normalized=True), f"{ds.fingerprint}:test"
    raw = unnormalize(ds.test.x, ds.normalization)
    return write_eval_npz(out, raw, ds.test.y, normalized=False), f"{ds.fingerprint}:test"


def unnormalize(x: np.ndarray, normalization: dict[str, Any]) -> np.ndarray:
    """Back from the dataset's own normalisation to the [0, 1] scale (N×C×H×W)."""
    mean = np.asarray(normalization["mean"], dtype=np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(normalization["std"], dtype=np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(x * std + mean, dtype=np.float32)
