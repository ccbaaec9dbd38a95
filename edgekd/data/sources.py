"""Where images come from: the built-in `digits` set and user files (.npz, image folders).

Each loader returns `RawImages` (float32 N×C×H×W in [0, 1], int64 labels, class names) and checks its
input thoroughly, because this is where a user's file first meets edgekd: every problem is one line that
names the file and says what to fix.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from edgekd.data.dataset import RawImages, validate_labels
from edgekd.errors import DataError
from edgekd.registry import Registry

#: built-in datasets by name (no download ever)
BUILTIN: Registry = Registry("built-in dataset")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"}
CHANNEL_COUNTS = (1, 3, 4)


@BUILTIN.register("digits")
def load_digits() -> RawImages:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes, values 0..16)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    return RawImages(x=x, y=y, class_names=[str(c) for c in bunch.target_names], source="sklearn:digits")


def load_npz(path: Path) -> RawImages:
    """`.npz` with `x` (N×H×W, N×H×W×C or N×C×H×W; uint8 0..255 or float 0..1) and `y` (N integer labels);
    optional `class_names` (string array)."""
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = {"x", "y"} - keys
            if missing:
                raise DataError(
                    f"{where}: missing array(s) {', '.join(sorted(missing))}; an .npz dataset needs 'x' (images) and 'y' (labels), found {sorted(keys) or 'none'}"
                )
            x = npz["x"]
            y = npz["y"]
            names = [str(s) for s in npz["class_names"].tolist()] if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as err:  # object arrays need pickle, which we refuse
        raise DataError(f"{where}: cannot read without pickle ({err}); save plain numeric arrays with np.savez") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{where}: not a readable .npz file ({err.__class__.__name__}); re-save it with np.savez") from None
    x = _to_nchw(x, where)
    if y.shape[:1] != x.shape[:1]:
        raise DataError(f"{where}: 'x' has {x.shape[0]} images but 'y' has shape {tuple(y.shape)}; they must match")
    num_classes = len(names) if names is not None else (int(np.max(y)) + 1 if y.size and np.issubdtype(y.dtype, np.number) else 0)
    y = validate_labels(np.asarray(y), max(num_classes, 1), where)
    return RawImages(x=x, y=y, class_names=names or [str(i) for i in range(num_classes)], source=os.fspath(path))


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype == np.uint8:
        xf = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        xf = x.astype(np.float32)
        if not np.all(np.isfinite(xf)):
            raise DataError(f"{where}: 'x' contains NaN or inf; clean the images first")
    else:
        raise DataError(f"{where}: 'x' has dtype {x.dtype}; use uint8 (0..255) or float (0..1) images")
    if xf.ndim == 3:
        return xf[:, None, :, :]
    if xf.ndim == 4:
        c_first, c_last = xf.shape[1] in CHANNEL_COUNTS, xf.shape[-1] in CHANNEL_COUNTS
        if c_first:
            return np.ascontiguousarray(xf)
        if c_last:
            return np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
    raise DataError(
        f"{where}: 'x' has shape {tuple(x.shape)}; images must be N×H×W, N×H×W×C or N×C×H×W with C in {CHANNEL_COUNTS}"
    )


def load_image_folder(root: Path, image_size: int | None) -> RawImages:
    """One sub-folder per class (sorted names = class order), images read with Pillow."""
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; put each class's images in its own sub-folder")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        found = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"{root / cls}: class {cls!r} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        files += [(p, label) for p in found]
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{path}: image does not decode ({err.__class__.__name__}); fix or remove the file") from None
    gray = all(im.mode in ("1", "L", "I", "I;16", "F") for im in images)
    mode = "L" if gray else "RGB"
    sizes = {im.size for im in images}
    if image_size is None and len(sizes) > 1:
        raise DataError(f"{root}: images have different sizes {sorted(sizes)[:3]}...; pass --image-size N to resize them all")
    arrays = []
    for im in images:
        im = im.convert(mode)
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    x = np.stack(arrays).astype(np.float32)
    y = np.array([label for _, label in files], dtype=np.int64)
    return RawImages(x=x, y=y, class_names=classes, source=os.fspath(root))
