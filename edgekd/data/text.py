"""Text datasets: CSV / JSONL files with `text` and `label`, or the built-in `reviews` task.

    from edgekd.data.text import load_text_dataset
    ds = load_text_dataset("reviews", max_len=32)          # or "my.csv", "my.jsonl"

The result is the same `edgekd.data.Dataset` the image pipeline uses, with `task="text"`:
`train/val/test.x` are int64 `N x max_len` token ids (`[CLS] ... [SEP]`, right-padded with the pad id;
the attention mask is `x != pad_id`), `input_shape == (max_len,)`, `normalization == {}`, and
`extra` carries the tokenizer (`tokenizer_json`, `vocab_size`, `pad_id`, `max_len`) so checkpoints
and artifacts can tokenize raw text later. The fingerprint covers the token arrays, the raw text
(sha256), the tokenizer and every preprocessing choice.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekd.data.dataset import Dataset, Split, fingerprint_arrays, stratified_split
from edgekd.errors import DataError
from edgekd.data.text_builtin import TEXT_BUILTIN
from edgekd.data.tokenizer import TextTokenizer, load_tokenizer, train_wordpiece

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")
MAX_REPORTED_ROWS = 5


def is_text_source(source: str) -> bool:
    """True for a built-in text task name or a path with a text-file suffix."""
    return source in TEXT_BUILTIN or Path(source).suffix.lower() in TEXT_SUFFIXES


def read_labeled_text(path: str | Path) -> tuple[list[str], list[Any], list[int]]:
    """Rows of a CSV/TSV (header with `text` and `label`) or JSONL file (objects with `text`, `label`).

    Returns texts, raw labels and each row's 1-based line number. Every bad row (missing field, empty
    text, unparsable line) is collected; a DataError lists the first few with their line numbers.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{path}: no such file; give a .csv/.tsv with 'text' and 'label' columns or a .jsonl file")
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{p}: not UTF-8 text (byte {err.start}); save the file as UTF-8") from None
    except OSError as err:
        raise DataError(f"{p}: cannot read ({err.strerror}); check the path and permissions") from None
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        texts, labels, lines, bad = _read_jsonl(raw)
    else:
        texts, labels, lines, bad = _read_csv(raw, p, "\t" if p.suffix.lower() == ".tsv" else ",")
    if bad:
        shown = "; ".join(f"line {ln}: {why}" for ln, why in bad[:MAX_REPORTED_ROWS])
        more = f" (and {len(bad) - MAX_REPORTED_ROWS} more)" if len(bad) > MAX_REPORTED_ROWS else ""
        raise DataError(f"{p}: {len(bad)} bad row(s): {shown}{more}; fix or remove them")
    if not texts:
        raise DataError(f"{p}: no rows; the file needs a 'text' and a 'label' per row")
    return texts, labels, lines


def _read_csv(raw: str, path: Path, delimiter: str) -> tuple[list[str], list[Any], list[int], list[tuple[int, str]]]:
    reader = csv.reader(io.StringIO(raw, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{path}: empty file; the first line must be a header with 'text' and 'label'") from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in ("text", "label") if c not in names]
    if missing:
        raise DataError(f"{path}: line 1: header {header} has no {' or '.join(repr(m) for m in missing)} column; "
                        "name the columns 'text' and 'label'")
    ti, li = names.index("text"), names.index("label")
    texts: list[str] = []
    labels: list[Any] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            bad.append((reader.line_num, f"unreadable CSV ({err})"))
            continue
        line = reader.line_num  # the line the row ends on (a quoted field may span lines)
        if not row or all(not c.strip() for c in row):
            continue  # blank lines are not rows
        if len(row) != len(names):
            bad.append((line, f"{len(row)} fields, the header has {len(names)}"))
            continue
        text, label = row[ti].strip(), row[li].strip()
        if not text:
            bad.append((line, "empty text"))
        elif not label:
            bad.append((line, "empty label"))
        else:
            texts.append(text)
            labels.append(label)
            lines.append(line)
    return texts, labels, lines, bad


def _read_jsonl(raw: str) -> tuple[list[str], list[Any], list[int], list[tuple[int, str]]]:
    texts: list[str] = []
    labels: list[Any] = []
    lines: list[int] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            bad.append((number, f"not JSON ({err.msg})"))
            continue
        if not isinstance(obj, dict):
            bad.append((number, "not a JSON object"))
            continue
        text, label = obj.get("text"), obj.get("label")
        if not isinstance(text, str) or not text.strip():
            bad.append((number, "missing or empty 'text' string"))
        elif label is None or isinstance(label, (bool, list, dict, float)) and not _integral(label):
            bad.append((number, f"'label' must be an integer or a string, got {json.dumps(label)}"))
        else:
            texts.append(text.strip())
            labels.append(int(label) if isinstance(label, float) else label)
            lines.append(number)
    return texts, labels, lines, bad


def _integral(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


def encode_labels(labels: Sequence[Any], lines: Sequence[int], where: str) -> tuple[np.ndarray, list[str]]:
    """Integer labels must be 0..K-1 (class names "0".."K-1"); string labels are sorted into classes."""
    as_int: list[int | None] = []
    for value in labels:
        if isinstance(value, int) and not isinstance(value, bool):
            as_int.append(value)
        elif isinstance(value, str) and value.lstrip("-").isdigit():
            as_int.append(int(value))
        else:
            as_int.append(None)
    if all(v is not None for v in as_int):
        y = np.asarray(as_int, dtype=np.int64)
        if y.min() < 0:
            row = int(np.argmin(y))
            raise DataError(f"{where}: line {lines[row]}: label {int(y[row])} is negative; labels are 0..K-1 or class names")
        k = int(y.max()) + 1
        empty = np.flatnonzero(np.bincount(y, minlength=k) == 0)
        if empty.size:
            raise DataError(f"{where}: class {int(empty[0])} has no rows; integer labels must cover 0..{k - 1} "
                            "(or use class names as labels)")
        return y, [str(i) for i in range(k)]
    names = sorted({str(v) for v in labels})
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[str(v)] for v in labels], dtype=np.int64), names


def load_text_dataset(
    source: str = "reviews",
    *,
    tokenizer: str | Path | TextTokenizer | None = None,
    max_len: int = 32,
    vocab_size: int = 1000,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
) -> Dataset:
    """Load texts, split them (stratified, seeded), tokenize to fixed-length ids, fingerprint.

    `tokenizer`: a local tokenizer (directory / tokenizer.json / vocab.txt) or None to train a
    WordPiece vocabulary of `vocab_size` on the training split.
    """
    source = str(source)
    if source in TEXT_BUILTIN:
        texts, y, class_names = TEXT_BUILTIN.get(source)()
        name, origin = source, f"builtin:{source}"
    else:
        path = Path(source).expanduser()
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise DataError(f"{source}: not a text data file; use .csv, .tsv or .jsonl, or a built-in "
                            f"text dataset ({', '.join(TEXT_BUILTIN.names())})")
        texts, raw_labels, lines = read_labeled_text(path)
        y, class_names = encode_labels(raw_labels, lines, str(path))
        name, origin = path.stem, str(path)
    if len(class_names) < 2:
        raise DataError(f"{source}: only one class ({class_names[0]!r}); a classifier needs at least two")
    if max_len < 3:
        raise DataError(f"max_len={max_len} is too short; use at least 3")
    tr, va, te = stratified_split(y, seed, val_fraction, test_fraction)
    if isinstance(tokenizer, TextTokenizer):
        tok = tokenizer
    elif tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    else:
        tok = train_wordpiece([texts[i] for i in tr], vocab_size=vocab_size)
    split_ids = {s: tok.encode([texts[i] for i in idx], max_len) for s, idx in (("train", tr), ("val", va), ("test", te))}
    splits = {s: Split(split_ids[s], y[idx]) for s, idx in (("train", tr), ("val", va), ("test", te))}
    truncated = int(np.sum(tok.token_counts([texts[i] for i in tr]) > max_len - 2))
    text_sha = hashlib.sha256("\n".join(f"{t}\t{int(l)}" for t, l in zip(texts, y)).encode("utf-8")).hexdigest()
    preprocess = {
        "source": origin,
        "task": "text",
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "max_len": max_len,
        "tokenizer_sha256": tok.sha256,  # identity of the tokenizer; where it came from is in `extra`
        "text_sha256": text_sha,
        "framing": "[CLS] pieces [SEP], truncated, right-padded with pad_id",
    }
    fp = fingerprint_arrays({f"{s}_{k}": getattr(sp, k) for s, sp in splits.items() for k in ("x", "y")}, preprocess)
    return Dataset(
        name=name,
        task="text",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        input_shape=(max_len,),
        num_classes=len(class_names),
        class_names=class_names,
        normalization={},
        preprocess=preprocess,
        fingerprint=fp,
        extra={
            "tokenizer_json": tok.to_json(),
            "tokenizer_source": tok.source,
            "vocab_size": tok.vocab_size,
            "pad_id": tok.pad_id,
            "max_len": max_len,
            "truncated_train_rows": truncated,
        },
    )


def load_for_model(settings: dict[str, Any], info: Any) -> Dataset:
    """The text dataset a saved text model was trained on, tokenized with the model's own tokenizer
    (`info.meta["tokenizer_json"]`) at its sequence length, for calibration and parity checks."""
    meta = getattr(info, "meta", {}) or {}
    tokenizer: str | TextTokenizer | None = settings.get("tokenizer")
    if meta.get("tokenizer_json"):
        tokenizer = TextTokenizer.from_json(meta["tokenizer_json"], source="the checkpoint's tokenizer")
    source = settings.get("source") or "reviews"
    return load_text_dataset(source, tokenizer=tokenizer, max_len=int(info.input_shape[0]),
                             seed=int(settings.get("seed", 0)),
                             **{k: float(settings[k]) for k in ("val_fraction", "test_fraction") if k in settings})


def options_for_artifacts(artifact_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """`load_dataset` keyword options that tokenize a text source exactly as the first text artifact
    among `artifact_dirs` expects (its bundled tokenizer.json and position-table length); {} when none
    is a text artifact (images need nothing)."""
    from edgekd.runtimes.base import read_manifest

    for art in artifact_dirs:
        manifest = read_manifest(art)
        text = manifest.get("text") if manifest.get("task") == "text" else None
        if not text:
            continue
        options: dict[str, Any] = {"max_len": int(text.get("max_len") or 32)}
        if text.get("tokenizer_file") and (Path(art) / text["tokenizer_file"]).is_file():
            options["tokenizer"] = str(Path(art) / text["tokenizer_file"])
        return options
    return {}
