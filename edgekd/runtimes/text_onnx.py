"""The text side of ONNX export, shared by the runtime adapters that take text models (ONNX Runtime,
OpenVINO): two int64 inputs with dynamic batch and sequence axes.

Host side (torch, onnx imported inside functions). An adapter builds its model file from
`export_text_onnx` when a checkpoint's task is "text" (its own precision step in between: ONNX
Runtime's INT8 is `onnxruntime.quantize_text_int8`, OpenVINO's is NNCF fed by `calibration_ids`)
and finishes with `finish_text_artifact`; everything else (manifest, parity gate, agent, profiles)
is shared with images.

    input_ids       int64 (batch, seq)   token ids, [CLS] ... [SEP] then pad ids
    attention_mask  int64 (batch, seq)   1 for real tokens, 0 for padding
    logits          float32 (batch, K)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from edgekd.errors import ExportError

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TEXT_INPUTS = (INPUT_IDS, ATTENTION_MASK)
OUTPUT_NAME = "logits"
TOKENIZER_FILE = "tokenizer.json"


def text_feeds(ids: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """{input_ids, attention_mask} (both int64) from an (N, L) id array (floats are rounded)."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "f":
        ids = np.rint(ids)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    return {INPUT_IDS: ids, ATTENTION_MASK: (ids != int(pad_id)).astype(np.int64)}


class _Wrapped:
    """(input_ids, attention_mask) -> logits, the signature every text artifact has."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class TextExportWrapper(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.inner(input_ids, attention_mask)

        return TextExportWrapper(model)


def export_text_onnx(model: Any, path: Path, *, max_len: int, opset: int = 18, batch: int = 1,
                     seq_len: int | None = None, dynamic: bool = True) -> Path:
    """torch.onnx.export (dynamo) of a text classifier with dynamic batch and sequence axes.

    The sequence axis may take any length up to `max_len` (the position table); with
    `dynamic=False` the model is fixed at (batch, seq_len or max_len).
    """
    import torch

    from edgekd.runtimes.host import quiet
    from edgekd.runtimes.onnx_registry import reused_registry
    from edgekd.models.bert import example_ids

    model = model.eval()
    length = int(seq_len or max_len)
    ids = example_ids(model, batch=max(2, batch) if dynamic else batch, length=length)
    mask = torch.ones_like(ids)
    dynamic_shapes = None
    if dynamic:
        b = torch.export.Dim("batch", min=1, max=4096)
        s = torch.export.Dim("seq", min=2, max=int(max_len))
        dynamic_shapes = ({0: b, 1: s}, {0: b, 1: s})
    try:
        with quiet(), torch.no_grad(), reused_registry():
            torch.onnx.export(_Wrapped(model), (ids, mask), str(path), dynamo=True, opset_version=opset,
                              input_names=list(TEXT_INPUTS), output_names=[OUTPUT_NAME], external_data=False,
                              dynamic_shapes=dynamic_shapes, optimize=True, verbose=False)
    except Exception as err:  # the exporter raises many types; the export row records the reason
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"torch.onnx.export of the text model failed: {type(err).__name__}: {first}") from err
    return path


def calibration_ids(calibration: Iterable[Mapping[str, np.ndarray]] | None, limit: int) -> list[np.ndarray]:
    """Token-id rows from a calibration iterable whose items hold `input_ids` (or the generic `input`)."""
    if calibration is None:
        raise ExportError("static int8 needs calibration data (real training texts); pass --data")
    rows: list[np.ndarray] = []
    for item in calibration:
        arr = item.get(INPUT_IDS, item.get("input"))
        if arr is None:
            raise ExportError(f"calibration item has inputs {sorted(item)}, expected {INPUT_IDS!r}")
        rows.extend(np.asarray(arr).reshape(-1, np.asarray(arr).shape[-1]))
        if len(rows) >= limit:
            break
    if not rows:
        raise ExportError("calibration data is empty; static int8 needs real training texts")
    return rows[:limit]


def text_manifest_fields(info: Any, *, batch: int | None, seq_len: int | None) -> dict[str, Any]:
    """The manifest entries that differ for text: two int64 inputs, and a `text` section with the
    pad id, the position-table size and the tokenizer file (when the checkpoint carries one).
    A None batch / seq_len is dynamic (-1)."""
    b = -1 if batch is None else int(batch)
    s = -1 if seq_len is None else int(seq_len)
    meta = getattr(info, "meta", {}) or {}
    return {
        "inputs": [{"name": INPUT_IDS, "shape": [b, s], "dtype": "int64", "layout": "NL"},
                   {"name": ATTENTION_MASK, "shape": [b, s], "dtype": "int64", "layout": "NL"}],
        "outputs": [{"name": OUTPUT_NAME, "shape": [b, int(info.num_classes)], "dtype": "float32"}],
        "normalization": None,
        "text": {"pad_id": int(meta.get("pad_id", 0)), "max_len": int(info.input_shape[0]),
                 "vocab_size": _vocab_size(info),
                 "tokenizer_file": TOKENIZER_FILE if meta.get("tokenizer_json") else None,
                 "tokenizer_sha256": meta.get("tokenizer_sha256")},
    }


def _vocab_size(info: Any) -> int | None:
    from edgekd.models.spec import parse_spec

    vocab = parse_spec(info.spec)[1].get("vocab")
    return int(vocab) if vocab else None


def write_tokenizer(info: Any, out_dir: Path) -> list[str]:
    """Put the checkpoint's tokenizer.json into the artifact (so a device can tokenize raw text)."""
    from edgekd.fileio import atomic_write_text

    text = (getattr(info, "meta", {}) or {}).get("tokenizer_json")
    if not text:
        return []
    atomic_write_text(Path(out_dir) / TOKENIZER_FILE, text)
    return [TOKENIZER_FILE]


def text_export_setup(info: Any, out_dir: Path, opset: int | None) -> tuple[Path, int, int, dict[str, Any]]:
    """(the artifact dir, created if missing; max_len; pad id; the manifest options every text
    artifact records)."""
    from edgekd.runtimes.host import DEFAULT_OPSET

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    max_len = int(info.input_shape[0])
    pad_id = int((getattr(info, "meta", {}) or {}).get("pad_id", 0))
    options: dict[str, Any] = {"opset": opset or DEFAULT_OPSET, "dynamic_batch": True, "dynamic_seq": True,
                               "max_len": max_len}
    return out_dir, max_len, pad_id, options


def finish_text_artifact(model: Any, info: Any, out_dir: Path, *, runtime: str, fmt: str, precision: str,
                         model_file: str, files: list[str], versions: dict[str, Any],
                         options: dict[str, Any]) -> Path:
    """The part of a text export every runtime shares, after its adapter wrote the model file(s):
    `tokenizer.json` when the checkpoint has one, and the manifest (two int64 inputs with dynamic
    batch and sequence axes; parity empty — the shared parity gate fills it in)."""
    from edgekd.runtimes.base import hash_files, write_manifest
    from edgekd.runtimes.host import build_manifest

    files = [*files, *write_tokenizer(info, out_dir)]
    manifest = build_manifest(model, info, out_dir, fmt=fmt, runtime=runtime, precision=precision,
                              model_file=model_file, files=files, shape=[-1, -1], versions=versions, options=options)
    manifest.update(text_manifest_fields(info, batch=None, seq_len=None))
    manifest["files"] = hash_files(out_dir, files)
    manifest["source"]["macs"] = _text_macs(model)
    write_manifest(out_dir, manifest)
    return out_dir


def _text_macs(model: Any) -> int | None:
    try:
        from edgekd.models.counting import count_macs
        from edgekd.models.bert import example_ids

        return int(count_macs(model, example=example_ids(model)))
    except Exception:  # informative only, as for images
        return None
