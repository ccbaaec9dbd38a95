"""Saved models: a plain dict that `torch.load(weights_only=True)` reads, so nothing is unpickled.

Layout (format ``edgekd.model/1``)::

    {"format": "edgekd.model/1", "spec": "cnn:depth=2,width=8", "task": "image",
     "input_shape": [1, 8, 8], "num_classes": 10, "class_names": ["0", ...],
     "normalization": {"mean": [...], "std": [...]}, "surgery": [{"op": ..., ...}],
     "meta": {...}, "state_dict": {name: tensor}, "state_sha256": "..."}

`state_sha256` hashes every tensor's name, dtype, shape and bytes: torch's zip reader does not check
the stored data, so without it a flipped byte in the weights would load silently.

Loading rebuilds the model from `spec`, replays `surgery` (structural edits made by compression),
then loads the state dict strictly. Every field but the state dict is plain JSON-able data.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgeKDError, ModelError
from edgekd.fileio import atomic_write_with
from edgekd.models import surgery
from edgekd.models.spec import MODELS, canonical_spec, create_model

FORMAT = "edgekd.model/1"
_REQUIRED = ("format", "spec", "input_shape", "num_classes", "state_dict")


@dataclass
class ModelInfo:
    """Everything besides the weights that is needed to rebuild and use a model.

    `spec` is a model spec string (stored canonical), `input_shape` excludes the batch dimension,
    `normalization` holds per-channel ``mean``/``std`` already applied to the training inputs,
    `surgery` the structural edits to replay on load, `meta` free JSON-able data (metrics, provenance).
    """

    spec: str
    task: str = "image"
    input_shape: tuple[int, ...] = (1, 8, 8)
    num_classes: int = 10
    class_names: list[str] = field(default_factory=list)
    normalization: dict[str, list[float]] = field(default_factory=lambda: {"mean": [0.0], "std": [1.0]})
    surgery: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields (tuples become lists)."""
        d = asdict(self)
        d["input_shape"] = [int(v) for v in self.input_shape]
        return d


def save_model(path: str | os.PathLike[str], model: nn.Module, info: ModelInfo) -> None:
    """Write `model` with `info` to `path` atomically (a reader never sees a torn file)."""
    fields = info.to_dict()
    fields["spec"] = canonical_spec(info.spec)
    if not fields["class_names"]:
        fields["class_names"] = [str(i) for i in range(int(info.num_classes))]
    try:
        # round-trip through JSON: proves the metadata is plain data that weights_only will accept
        fields = json.loads(json.dumps(fields, allow_nan=True))
    except (TypeError, ValueError) as err:
        raise ModelError(f"cannot save {path}: model info must be plain JSON-able data ({err})") from None
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, **fields, "state_dict": state, "state_sha256": state_digest(state)}
    # serialize in memory first: the archive's inner name is then fixed ("archive"), not the temp name
    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_with(path, lambda tmp: tmp.write_bytes(buf.getvalue()))


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over each tensor's name, dtype, shape and raw bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict entry {name!r} is a {type(t).__name__}, not a tensor")
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # view as bytes so every dtype (bf16, bool, quantized ints) hashes without a numpy round trip
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, checked for format and required keys; ModelError otherwise."""
    p = Path(path)
    hint = "re-create it with `edgekd teacher` / `edgekd distill`, or pass another file"
    if not p.exists():
        raise ModelError(f"model file {p} does not exist; check the path or {hint}")
    if not p.is_file():
        raise ModelError(f"model file {p} is not a file; pass the .pt checkpoint itself")
    try:
        with warnings.catch_warnings():
            # a foreign pickle makes torch warn about its protocol before refusing it: one error is enough
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, KeyError, IndexError, TypeError) as err:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
        if "Weights only load failed" in text:
            raise ModelError(
                f"model file {p} holds pickled Python objects, which edgekd never loads (it was not "
                f"written by edgekd.models.save_model); {hint}"
            ) from None
        first = text.splitlines()[0] if text else type(err).__name__
        raise ModelError(
            f"model file {p} is not a readable edgekd checkpoint (truncated, corrupt or not a torch "
            f"file: {first[:160]}); {hint}"
        ) from None
    if not isinstance(data, dict):
        raise ModelError(f"model file {p} holds a {type(data).__name__}, not an edgekd checkpoint dict; {hint}")
    if data.get("format") != FORMAT:
        got = data.get("format")
        raise ModelError(
            f"model file {p} has format {got!r}, expected {FORMAT!r} (a bare state_dict or another "
            f"tool's checkpoint); save it with edgekd.models.save_model"
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ModelError(f"model file {p} lacks {', '.join(missing)}; {hint}")
    if not isinstance(data["state_dict"], dict):
        raise ModelError(f"model file {p}: state_dict is not a mapping of tensors; {hint}")
    expected = data.get("state_sha256")
    if expected is not None:
        try:
            actual = state_digest(data["state_dict"])
        except TypeError as err:
            raise ModelError(f"model file {p}: {err}; {hint}") from None
        if actual != expected:
            raise ModelError(f"model file {p} is corrupt: its weights do not match their stored checksum; {hint}")
    return data


def load_model(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model saved at `path`: spec -> `surgery.replay` -> `load_state_dict(strict=True)`.

    Returns the model in eval mode and its ModelInfo. Any problem with the file raises ModelError
    naming the file and what to do.
    """
    data = read_checkpoint(path, map_location)
    try:
        info = ModelInfo(
            spec=str(data["spec"]),
            task=str(data.get("task", "image")),
            input_shape=tuple(int(v) for v in data["input_shape"]),
            num_classes=int(data["num_classes"]),
            class_names=[str(c) for c in data.get("class_names", [])],
            normalization=dict(data.get("normalization") or {}),
            surgery=list(data.get("surgery") or []),
            meta=dict(data.get("meta") or {}),
        )
    except (TypeError, ValueError) as err:
        raise ModelError(f"model file {path}: malformed metadata ({err}); re-save the model") from None
    user = info.meta.get("user_family") if isinstance(info.meta.get("user_family"), dict) else None
    if user and str(info.spec).split(":")[0] not in MODELS:
        # never import code a file names: the user registers their family again, knowingly
        raise ModelError(f"model file {path} was built by the user family {str(info.spec).split(':')[0]!r} "
                         f"(builder {user.get('builder')!s:.120}); register it first with --family "
                         f"{user.get('builder')!s:.120} (and its --family-grid)")
    family_name = str(info.spec).split(":")[0]
    registered = getattr(MODELS.get(family_name), "user_family", None) if family_name in MODELS else None
    if user and registered and registered.get("builder") != user.get("builder"):
        raise ModelError(f"model file {path} was built by {user.get('builder')!s:.120}, but family {family_name!r} "
                         f"is registered here with {registered.get('builder')!s:.120}; pass --family "
                         f"{user.get('builder')!s:.120}")
    try:
        model = create_model(info.spec, info.input_shape, info.num_classes)
        surgery.replay(model, info.surgery)
    except EdgeKDError as err:
        raise ModelError(f"model file {path}: cannot rebuild the model: {err}") from None
    try:
        model.load_state_dict(data["state_dict"], strict=True)
    except (RuntimeError, TypeError, KeyError) as err:
        first = str(err).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])[:300]
        raise ModelError(
            f"model file {path}: weights do not fit spec {info.spec!r} with its surgery ({detail}); "
            f"the file was edited or saved without its surgery records"
        ) from None
    model.to(map_location)
    model.eval()
    return model, info
