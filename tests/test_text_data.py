"""Text data: CSV/JSONL readers (bad rows with line numbers), labels, tokenizers, the built-in task."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd.data import load_dataset
from edgekd.errors import DataError
from edgekd.data.text_builtin import generate_reviews, stars_from_score
from edgekd.data.text import encode_labels, load_text_dataset, read_labeled_text
from edgekd.data.tokenizer import load_tokenizer, train_wordpiece


def _rows(n: int = 60) -> tuple[list[str], list[int]]:
    texts, y, _ = generate_reviews(n=n, seed=7)
    return texts, [int(v) for v in y]


def write_csv(path, texts, labels):
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "text"])
        w.writerows(zip(labels, texts))
    return path


def test_csv_and_jsonl_give_the_same_dataset(tmp_path):
    texts, labels = _rows()
    csv_path = write_csv(tmp_path / "r.csv", texts, labels)
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": t, "label": l}) for t, l in zip(texts, labels)) + "\n")
    a = load_dataset(str(csv_path), max_len=16)
    b = load_dataset(str(jsonl), max_len=16)
    assert a.task == b.task == "text" and a.input_shape == (16,)
    assert a.train.x.dtype == np.int64 and a.train.x.shape[1] == 16
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert a.preprocess["text_sha256"] == b.preprocess["text_sha256"]
    assert a.num_classes == 5 and a.normalization == {}
    # every row starts with [CLS]; padding only after [SEP]
    assert (a.train.x[:, 0] == a.train.x[0, 0]).all()


def test_fingerprint_is_stable_and_content_sensitive(tmp_path):
    texts, labels = _rows()
    p = write_csv(tmp_path / "a.csv", texts, labels)
    f1 = load_text_dataset(str(p), max_len=16).fingerprint
    assert load_text_dataset(str(p), max_len=16).fingerprint == f1
    texts[3] = texts[3] + " really"
    q = write_csv(tmp_path / "b.csv", texts, labels)
    assert load_text_dataset(str(q), max_len=16).fingerprint != f1
    assert load_text_dataset(str(p), max_len=20).fingerprint != f1


def test_bad_csv_rows_are_reported_with_line_numbers(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("text,label\ngood one,pos\n,neg\nanother,\nfine,neg\ntoo,many,fields\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_labeled_text(p)
    msg = str(err.value)
    assert "3 bad row(s)" in msg and "line 3: empty text" in msg and "line 4: empty label" in msg
    assert "line 6: 3 fields" in msg and str(p) in msg and "\n" not in msg


def test_bad_jsonl_lines_and_missing_columns(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok", "label": 1}\nnot json\n[1, 2]\n{"text": "", "label": 0}\n{"text": "x", "label": 1.5}\n')
    with pytest.raises(DataError, match=r"4 bad row\(s\): line 2: not JSON.*line 3: not a JSON object.*line 4.*line 5"):
        read_labeled_text(p)
    q = tmp_path / "cols.csv"
    q.write_text("sentence,label\nhi,1\n")
    with pytest.raises(DataError, match=r"line 1: header .* no 'text' column"):
        read_labeled_text(q)
    with pytest.raises(DataError, match="no such file"):
        read_labeled_text(tmp_path / "missing.csv")
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncaf\xe9,1\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_labeled_text(latin)


def test_labels_integer_or_names():
    y, names = encode_labels(["pos", "neg", "pos"], [2, 3, 4], "f")
    assert names == ["neg", "pos"] and y.tolist() == [1, 0, 1]
    y, names = encode_labels([0, "1", 2], [2, 3, 4], "f")
    assert names == ["0", "1", "2"] and y.tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="class 1 has no rows"):
        encode_labels([0, 2], [2, 3], "f")
    with pytest.raises(DataError, match="line 3: label -1"):
        encode_labels([0, -1], [2, 3], "f")


def test_wordpiece_is_deterministic_and_spells_unknown_words():
    texts, _ = _rows(40)
    a, b = train_wordpiece(texts, vocab_size=60), train_wordpiece(texts, vocab_size=60)
    assert a.to_json() == b.to_json() and a.pad_id == 0
    ids = a.encode(["the battery is zorblax"], 12)
    assert ids[0, 0] == a.cls_id and a.sep_id in ids[0] and ids.shape == (1, 12)
    # characters seen in training spell a new word instead of [UNK]
    assert 1 not in a.encode(["batterytery"], 12)[0]
    long = a.encode(["good " * 50], 8)
    assert long[0, -1] == a.sep_id  # truncation keeps [SEP]


def test_local_tokenizer_dir_json_and_vocab_txt(tmp_path):
    texts, labels = _rows()
    tok = train_wordpiece(texts, vocab_size=80)
    tok.save(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.sha256 == tok.sha256
    vocab = sorted(json.loads(tok.to_json())["model"]["vocab"].items(), key=lambda kv: kv[1])
    (tmp_path / "vt").mkdir()
    (tmp_path / "vt" / "vocab.txt").write_text("\n".join(t for t, _ in vocab) + "\n")
    from_txt = load_tokenizer(tmp_path / "vt")
    np.testing.assert_array_equal(from_txt.encode(texts[:5], 16), tok.encode(texts[:5], 16))
    p = write_csv(tmp_path / "r.csv", texts, labels)
    ds = load_text_dataset(str(p), tokenizer=str(tmp_path / "tok"), max_len=16)
    assert ds.preprocess["tokenizer_sha256"] == tok.sha256
    with pytest.raises(DataError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)
    (tmp_path / "broken.json").write_text("{nope")
    with pytest.raises(DataError, match="not a valid tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")


def test_builtin_reviews_is_balanced_deterministic_and_compositional():
    texts, y, names = generate_reviews(n=500, seed=3)
    texts2, y2, _ = generate_reviews(n=500, seed=3)
    assert texts == texts2 and (y == y2).all() and len(set(texts)) == 500
    assert names == ["1 star", "2 stars", "3 stars", "4 stars", "5 stars"]
    assert np.bincount(y).tolist() == [100] * 5
    assert [stars_from_score(s) for s in (-3.0, -1.0, 0.0, 1.0, 3.0)] == [0, 1, 2, 3, 4]
    ds = load_dataset("reviews", max_len=16, seed=1)
    assert ds.name == "reviews" and ds.extra["vocab_size"] > 20 and ds.preprocess["source"] == "builtin:reviews"
