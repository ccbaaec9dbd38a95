"""Check an evaluation `.npz` on the host before any row is measured.

`edgekd bench --data FILE.npz` used to hand the file to the device and turn any problem into a
warning on an otherwise ✅ row. Bad input is a usage error: this check loads the file the way the
device will (`allow_pickle=False`), requires numeric arrays with one label per sample, and fits
the samples to every artifact's inputs; anything wrong raises DataError (one line, exit 2).

Host side (numpy only), but nothing here needs torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from edgekd.errors import DataError, EdgeKDError

_NUMERIC = "biuf"
_TEXT = "US"


def check_eval_npz(path: str | Path, artifacts: Iterable[Path] = ()) -> None:
    """DataError unless `path` is a readable .npz of numeric arrays with labels `y` that fits every artifact."""
    from edgekd.bench.inputs import input_specs, load_eval_data, read_eval_arrays, read_manifest

    path = Path(path)
    arrays = read_eval_arrays(path)
    for name, arr in arrays.items():
        # text arrays (class names, notes) may ride along; samples and labels must be numbers
        if arr.dtype.kind not in _NUMERIC and (name in ("x", "y") or arr.dtype.kind not in _TEXT):
            raise DataError(f"evaluation data {path}: array {name!r} has dtype {arr.dtype}, not numbers; "
                            "save numeric arrays only")
    y = arrays["y"]
    if y.ndim != 1 or y.shape[0] == 0 or y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise DataError(f"evaluation data {path}: 'y' must be a non-empty 1-D array of integer labels, got shape {y.shape}")
    for name, arr in arrays.items():
        if name in ("y", "normalized") or arr.dtype.kind in _TEXT:
            continue
        if arr.ndim == 0 or arr.shape[0] != y.shape[0]:
            raise DataError(f"evaluation data {path}: array {name!r} of shape {arr.shape} does not hold one sample "
                            f"per label ({y.shape[0]} labels)")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise DataError(f"evaluation data {path}: array {name!r} holds NaN or infinite values")
    for art in artifacts:
        manifest = read_manifest(art)
        try:
            load_eval_data(path, input_specs(manifest), manifest)
        except EdgeKDError as err:
            raise DataError(f"{err} (artifact {art})") from None
