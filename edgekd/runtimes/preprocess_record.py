"""What an artifact's manifest says about preparing a raw image for it (`manifest["preprocess"]`).

Host side, but plain data only: built from the checkpoint's `ModelInfo` (input shape, normalization,
spec), read by the bundle and by anyone writing their own client. The steps are the ones edgekd
applied in training: scale to [0, 1], bilinear resize with half-pixel centres (no antialiasing) to the
model's H x W, ``(x - mean) / std`` per channel, batch in the input's layout. `resolution` is the
spec's ``resolution=r`` when the spec fixes one (None: the model takes the data's own size).
"""
from __future__ import annotations

from typing import Any

PREPROCESS_SCHEMA = "edgekd.preprocess/1"


def image_preprocess(info: Any, layout: str = "NCHW") -> dict[str, Any] | None:
    """The preprocessing record of an image model (None for text models: their tokenizer is in the
    manifest's ``text`` section)."""
    if getattr(info, "task", "image") != "image":
        return None
    shape = [int(d) for d in getattr(info, "input_shape", ())]
    if len(shape) != 3:
        return None
    resolution = None
    try:
        from edgekd.models.spec import MODELS, RESOLUTION_KEY, parse_spec

        name, kwargs = parse_spec(str(info.spec))
        family = MODELS.get(name)
        if RESOLUTION_KEY in family.defaults:
            resolution = int(family.resolve(kwargs)[RESOLUTION_KEY]) or None
    except Exception:  # noqa: BLE001 - a spec of a family not registered here: the shape still says it all
        resolution = None
    norm = dict(getattr(info, "normalization", None) or {})
    return {
        "schema": PREPROCESS_SCHEMA,
        "scale": {"uint8": 1 / 255, "range": [0.0, 1.0]},
        "resize": {"to": shape[1:], "method": "bilinear", "align_corners": False, "antialias": False},
        "normalize": {"mean": list(norm.get("mean", [])), "std": list(norm.get("std", []))},
        "channels": shape[0],
        "layout": layout,
        "resolution": resolution,
    }
