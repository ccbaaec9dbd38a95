"""Datasets: the built-in `digits`, user `.npz` files and image folders, all turned into one `Dataset`.

    from edgekd.data import load_dataset
    ds = load_dataset("digits", image_size=32, seed=0)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.data.dataset import Dataset, RawImages, Split, build_image_dataset, fingerprint_arrays
from edgekd.data.sources import BUILTIN, load_image_folder, load_npz
from edgekd.errors import DataError

__all__ = ["Dataset", "Split", "RawImages", "load_dataset", "load_for_model", "source_task", "BUILTIN",
           "fingerprint_arrays"]


def source_task(source: str) -> str:
    """The task of the Dataset `load_dataset(source)` gives, without loading it: "text" for a built-in
    text task or a .csv/.tsv/.jsonl file, "image" for everything else (no torch, no file read)."""
    from edgekd.data.text import is_text_source

    return "text" if is_text_source(str(source)) else "image"


def load_dataset(
    source: str = "digits",
    *,
    image_size: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    max_len: int | None = None,
    tokenizer: str | None = None,
) -> Dataset:
    """Load a dataset by built-in name (`digits`), `.npz` path or image-folder path.

    Images are scaled to [0, 1], optionally resampled to `image_size`×`image_size`, split
    train/val/test deterministically from `seed` (stratified by class), normalized per channel with
    the train split's mean/std, and fingerprinted.

    Text sources (a built-in text task such as `reviews`, or a .csv/.tsv/.jsonl file with `text`
    and `label`) give a `task="text"` Dataset of int64 token ids of length `max_len` (default 32),
    tokenized with `tokenizer` (a local tokenizer directory/file) or a WordPiece vocabulary trained
    on the training split (`edgekd.data.text.load_text_dataset`).
    """
    source = str(source)
    if source_task(source) == "text":  # int64 token ids, see edgekd.data.text
        from edgekd.data.text import load_text_dataset

        return load_text_dataset(source, tokenizer=tokenizer, max_len=max_len or 32, seed=seed,
                                 val_fraction=val_fraction, test_fraction=test_fraction)
    if source in BUILTIN:
        raw: RawImages = BUILTIN.get(source)()
        name = source
    else:
        path = Path(source).expanduser()
        if not path.exists():
            from edgekd.data.text_builtin import TEXT_BUILTIN

            names = ", ".join(BUILTIN.names() + TEXT_BUILTIN.names())
            raise DataError(
                f"{source}: no such file or folder; give an .npz file, an image folder, a .csv/.tsv/.jsonl text "
                f"file, or a built-in dataset ({names})"
            )
        if path.is_dir():
            raw = load_image_folder(path, image_size)
        elif path.suffix.lower() == ".npz":
            raw = load_npz(path)
        else:
            raise DataError(f"{source}: unsupported data file {path.suffix or '(no suffix)'}; use .npz or an image folder (images), .csv/.tsv/.jsonl (text)")
        name = path.stem if path.is_file() else path.name
    return build_image_dataset(
        raw, name=name, image_size=image_size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )


def load_for_model(settings: dict[str, Any], info: Any) -> Dataset:
    """The dataset a saved model is checked and calibrated on, prepared the way that model reads it.

    `settings`: `source`, `image_size`, `seed` and optionally `val_fraction` / `test_fraction`;
    `info`: the checkpoint's ModelInfo. A text model's data is tokenized with the checkpoint's own
    tokenizer at its sequence length (`edgekd.data.text.load_for_model`); an image model's is loaded
    at `settings["image_size"]`.
    """
    if getattr(info, "task", "image") == "text":
        from edgekd.data.text import load_for_model as load_text_for_model

        return load_text_for_model(settings, info)
    return load_dataset(settings["source"], image_size=settings["image_size"], seed=int(settings.get("seed", 0)),
                        **{k: settings[k] for k in ("val_fraction", "test_fraction") if k in settings})
