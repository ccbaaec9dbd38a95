"""Tokenizers for text datasets: a local tokenizer directory, or WordPiece trained on the training text.

Nothing is downloaded. A local tokenizer is either a Hugging Face `tokenizer.json` (the fast
`tokenizers` format that `transformers` also saves), a directory holding one, or a directory with
only a BERT-style `vocab.txt`. Otherwise edgekd trains a WordPiece vocabulary on the *training split*
only (so validation/test text never shapes the vocabulary).

Every encoding is `[CLS] tokens... [SEP]`, truncated and right-padded with the pad id to a fixed
`max_len`, so a split becomes one int64 `N x max_len` array; the attention mask is `ids != pad_id`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekd.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the ids edgekd needs (pad/cls/sep) and a stable identity.

    `encode(texts, max_len)` -> int64 array (N, max_len). `to_json()` is the full tokenizer as a
    string (what artifacts and checkpoints carry); `sha256` hashes it (dataset fingerprints key on it).
    """

    def __init__(self, tokenizer: "object", *, source: str) -> None:
        self._tok = tokenizer
        self.source = source
        vocab = tokenizer.get_vocab()  # type: ignore[attr-defined]
        missing = [t for t in ("[PAD]", "[CLS]", "[SEP]") if t not in vocab]
        pad_token = _padding_token(tokenizer)
        if pad_token and "[PAD]" in missing:
            missing.remove("[PAD]")
        if missing:
            raise DataError(
                f"{source}: tokenizer has no {', '.join(missing)} token; edgekd needs a BERT-style "
                "tokenizer with [PAD], [CLS] and [SEP] (or give no tokenizer and let edgekd train one)"
            )
        self.pad_token = pad_token or "[PAD]"
        self.pad_id = int(vocab[self.pad_token])
        self.cls_id = int(vocab["[CLS]"])
        self.sep_id = int(vocab["[SEP]"])
        self.vocab_size = int(tokenizer.get_vocab_size())  # type: ignore[attr-defined]
        # our own [CLS] ... [SEP] framing, independent of whatever post-processor a file carries,
        # so a trained and a loaded tokenizer frame sequences the same way
        tokenizer.no_truncation()  # type: ignore[attr-defined]
        tokenizer.no_padding()  # type: ignore[attr-defined]

    def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """`[CLS] ids [SEP]` per text, truncated to `max_len` (keeping [SEP]) and padded with pad_id."""
        if max_len < 3:
            raise DataError(f"max_len={max_len} is too short; use at least 3 ([CLS], one token, [SEP])")
        out = np.full((len(texts), max_len), self.pad_id, dtype=np.int64)
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)  # type: ignore[attr-defined]
        for i, enc in enumerate(encodings):
            ids = [self.cls_id, *enc.ids[: max_len - 2], self.sep_id]
            out[i, : len(ids)] = ids
        return out

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Number of word pieces per text (without [CLS]/[SEP]), to report truncation."""
        encodings = self._tok.encode_batch(list(texts), add_special_tokens=False)  # type: ignore[attr-defined]
        return np.array([len(e.ids) for e in encodings], dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)  # type: ignore[attr-defined]

    def to_json(self) -> str:
        return self._tok.to_str()  # type: ignore[attr-defined]

    @property
    def sha256(self) -> str:
        import hashlib

        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, directory: str | Path) -> Path:
        """Write `tokenizer.json` into `directory` (atomically) and return its path."""
        from edgekd.fileio import atomic_write_text

        path = Path(directory) / TOKENIZER_FILE
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def from_json(cls, text: str, *, source: str = "tokenizer.json") -> "TextTokenizer":
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_str(text)
        except Exception as err:  # the tokenizers library raises plain Exception subclasses
            raise DataError(f"{source}: not a valid tokenizer.json ({_first_line(err)}); re-save it with tokenizers") from None
        return cls(tok, source=source)


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """A local tokenizer: `tokenizer.json`, a directory holding it, a directory with `vocab.txt`, or an
    edgekd text checkpoint (.pt) whose tokenizer is reused (a student must read its teacher's ids)."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix in (".pt", ".pth"):  # an edgekd text checkpoint carries its tokenizer
        return _from_checkpoint(p)
    if p.is_dir():
        if (p / TOKENIZER_FILE).is_file():
            p = p / TOKENIZER_FILE
        elif (p / VOCAB_FILE).is_file():
            return _from_vocab_txt(p / VOCAB_FILE)
        else:
            raise DataError(f"{path}: no {TOKENIZER_FILE} or {VOCAB_FILE} in this directory; give a tokenizer directory")
    if not p.is_file():
        raise DataError(f"{path}: no such tokenizer file or directory")
    if p.name == VOCAB_FILE or p.suffix == ".txt":
        return _from_vocab_txt(p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{p}: cannot read tokenizer ({err.__class__.__name__}); give a UTF-8 tokenizer.json") from None
    return TextTokenizer.from_json(text, source=str(p))


def _from_checkpoint(path: Path) -> TextTokenizer:
    from edgekd.models.checkpoint import read_checkpoint

    meta = read_checkpoint(path).get("meta") or {}
    text = meta.get("tokenizer_json") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        raise DataError(f"{path}: this checkpoint carries no tokenizer (not a text model); give a tokenizer directory")
    return TextTokenizer.from_json(text, source=f"{path} (the checkpoint's tokenizer)")


def _from_vocab_txt(path: Path) -> TextTokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab: dict[str, int] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        token = line.rstrip("\n")
        if token and token not in vocab:
            vocab[token] = len(vocab)
    if "[UNK]" not in vocab:
        raise DataError(f"{path}: vocab.txt has no [UNK] token; it is not a BERT WordPiece vocabulary")
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    # uncased BERT conventions; a cased vocabulary should come as a tokenizer.json instead
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return TextTokenizer(tok, source=str(path))


def train_wordpiece(texts: Sequence[str], *, vocab_size: int = 2000, lowercase: bool = True) -> TextTokenizer:
    """A BERT-style WordPiece tokenizer whose vocabulary is learned from `texts`, deterministically.

    Vocabulary: the special tokens, every character seen (as a word start and as a `##` continuation,
    so any word of these characters can be spelled), then whole words by frequency (ties broken
    alphabetically) up to `vocab_size`. Runs through `tokenizers`' WordPiece model, normalizer and
    pre-tokenizer. `tokenizers`' own WordPieceTrainer is not used because its output changes from
    run to run (ties are broken in hash-map order), and a teacher and its students trained in
    separate runs must read identical token ids.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    if vocab_size < len(SPECIAL_TOKENS) + 10:
        raise DataError(f"vocab_size={vocab_size} is too small; use at least {len(SPECIAL_TOKENS) + 10}")
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab_list = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    room = max(0, vocab_size - len(vocab_list))
    seen = set(vocab_list)
    ranked = sorted((w for w in words if w not in seen), key=lambda w: (-words[w], w))
    vocab_list += ranked[:room]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab_list)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()
    return TextTokenizer(tok, source=f"wordpiece(vocab_size={vocab_size}, learned from the train split)")


def _padding_token(tokenizer: "object") -> str | None:
    try:
        padding = json.loads(tokenizer.to_str()).get("padding")  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return None
    return padding.get("pad_token") if isinstance(padding, dict) else None


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [err.__class__.__name__])[0][:200]
