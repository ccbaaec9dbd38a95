"""Transformer text classifiers (BERT-style encoders), registered as model families with task="text".

    bert:layers=4,hidden=256,heads=4,intermediate=1024      the teacher family
    tinybert:layers=2,hidden=64,heads=2,intermediate=256    the student family

Both build the same plain-torch post-LayerNorm BERT encoder (the math of Devlin et al. 2019 and of
Hugging Face's `BertForSequenceClassification`, so a local HF checkpoint converts into it exactly,
see `edgekd.models.hf_bert`). Plain torch rather than `transformers` because the model must export to ONNX
with dynamic batch *and* sequence axes, expose its hidden states and attention maps to forward-hook
taps, and load from a `weights_only` checkpoint with nothing but its spec.

Inputs: `input_ids` int64 (N, L) with L <= the position table size (`input_shape[0]`), optional
`attention_mask` (N, L) of 0/1; without a mask, positions holding the pad id are masked (so the
trainer and the soft-target cache can feed a single id tensor like an image batch).

Module paths for taps (TinyBERT alignment, FitNets hints):
    embeddings                       N x L x H   embedding output
    layers.{i}                       N x L x H   hidden state after encoder layer i
    layers.{i}.attention.scores      N x A x L x L  masked attention scores (pre-softmax)
    layers.{i}.attention.probs       N x A x L x L  attention probabilities
    features                         N x H       pooled [CLS] representation
    classifier                       N x K       logits

`vocab` is part of the spec because the embedding table's size is: 0 means "take it from the text
dataset" (`with_vocab` fills it in before the model is built).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import ConfigError, ModelError
from edgekd.models.counting import count_macs, count_params
from edgekd.models.spec import MODELS, create_model, format_spec, parse_spec, register_family

LN_EPS = 1e-12  # BERT's LayerNorm epsilon, kept so converted HF checkpoints match exactly
MASK_VALUE = -1e4  # additive mask; finite so fp16/int8 runtimes do not produce NaN on fully padded rows


class TextEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_positions: int, dropout: float, pad_id: int) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden, padding_idx=pad_id if 0 <= pad_id < vocab else None)
        self.position = nn.Embedding(max_positions, hidden)
        # BERT's segment embedding for segment 0 (single-sentence classification uses only that row)
        self.token_type = nn.Parameter(torch.zeros(hidden))
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = self.word(input_ids) + self.position(positions) + self.token_type
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit score/probability tap points (Identity modules)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.scores = nn.Identity()  # tap: masked scores (N, A, L, L)
        self.probs = nn.Identity()  # tap: softmax probabilities (N, A, L, L)
        self.attn_dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden, hidden)
        self.out_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def _split(self, x: Tensor) -> Tensor:
        n, length, _ = x.shape
        return x.view(n, length, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        n, length, hidden = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = self.scores(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + additive_mask)
        probs = self.probs(F.softmax(scores, dim=-1))
        context = torch.matmul(self.attn_dropout(probs), v).transpose(1, 2).reshape(n, length, hidden)
        return self.norm(x + self.out_dropout(self.output(context)))


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, heads, dropout)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.output = nn.Linear(intermediate, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: Tensor, additive_mask: Tensor) -> Tensor:
        x = self.attention(x, additive_mask)
        return self.norm(x + self.dropout(self.output(self.act(self.intermediate(x)))))


class Pooler(nn.Module):
    """BERT pooler: dense + tanh over the first ([CLS]) position."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.dense(x[:, 0]))


class TextTransformer(nn.Module):
    """embeddings -> encoder layers -> pooler (`features`) -> dropout -> `classifier`."""

    task = "text"

    def __init__(self, *, vocab: int, max_positions: int, num_classes: int, layers: int, hidden: int,
                 heads: int, intermediate: int, dropout: float, pad_id: int = 0) -> None:
        super().__init__()
        self.config = dict(vocab=vocab, max_positions=max_positions, num_classes=num_classes, layers=layers,
                           hidden=hidden, heads=heads, intermediate=intermediate, dropout=dropout)
        self.embeddings = TextEmbeddings(vocab, hidden, max_positions, dropout, pad_id)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, intermediate, dropout) for _ in range(layers))
        self.features = Pooler(hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        # a buffer, so the pad id travels in the state dict of a checkpoint
        self.register_buffer("pad_id", torch.tensor(int(pad_id), dtype=torch.int64))
        self.apply(_init_weights)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if input_ids.dtype.is_floating_point:  # a float batch from generic code: ids stored as floats
            input_ids = input_ids.round().long()
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_id).to(torch.float32)
        additive = (1.0 - attention_mask.to(torch.float32))[:, None, None, :] * MASK_VALUE
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, additive)
        return self.classifier(self.dropout(self.features(x)))


def _init_weights(module: nn.Module) -> None:
    # BERT's initialisation: N(0, 0.02) weights, zero biases, unit LayerNorm
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _validate(kw: dict) -> None:
    if not 1 <= kw["layers"] <= 48:
        raise ConfigError(f"text model: layers={kw['layers']} must be 1..48")
    if kw["hidden"] < 4 or kw["heads"] < 1 or kw["hidden"] % kw["heads"]:
        raise ConfigError(f"text model: hidden={kw['hidden']} must be >= 4 and divisible by heads={kw['heads']}")
    if kw["intermediate"] < 1:
        raise ConfigError(f"text model: intermediate={kw['intermediate']} must be >= 1")
    if not 0.0 <= kw["dropout"] < 1.0:
        raise ConfigError(f"text model: dropout={kw['dropout']} must be in [0, 1)")
    if kw["vocab"] < 0:
        raise ConfigError(f"text model: vocab={kw['vocab']} must be >= 1 (or 0 = from the dataset's tokenizer)")


def _build(input_shape: tuple[int, ...], num_classes: int, **kw: object) -> TextTransformer:
    if len(input_shape) != 1 or input_shape[0] < 3:
        raise ConfigError(f"text model: input_shape must be (max_len,) with max_len >= 3, got {input_shape!r}")
    if int(kw["vocab"]) < 1:  # type: ignore[arg-type]
        raise ConfigError("text model: vocab is not set; add vocab=N to the spec or build it for a text dataset "
                          "(edgekd fills in the tokenizer's vocabulary size)")
    return TextTransformer(max_positions=int(input_shape[0]), num_classes=num_classes, **kw)  # type: ignore[arg-type]


TEXT_FAMILIES = ("bert", "tinybert")


def is_text_spec(spec: str) -> bool:
    """True when the spec names a family whose task is text."""
    name, _ = parse_spec(spec)
    return MODELS.get(name).task == "text"


def with_vocab(spec: str, vocab_size: int) -> str:
    """The spec with `vocab` set to the tokenizer's size when it is unset (0); a different explicit
    vocab is an error because the embedding table would not match the token ids."""
    name, kwargs = parse_spec(spec)
    family = MODELS.get(name)
    if family.task != "text":
        return spec
    given = int(kwargs.get("vocab", 0))
    if given and given != int(vocab_size):
        raise ConfigError(f"model spec {spec!r}: vocab={given} but the tokenizer has {vocab_size} tokens; "
                          "drop vocab= from the spec to use the tokenizer's size")
    kwargs["vocab"] = int(vocab_size)
    return format_spec(name, family.resolve(kwargs))


def example_ids(model: TextTransformer, batch: int = 1, length: int | None = None) -> Tensor:
    """A deterministic (batch, length) id tensor with no padding, for tracing, MAC counting and export."""
    vocab = model.config["vocab"]
    length = int(length or model.config["max_positions"])
    if length > model.config["max_positions"]:
        raise ModelError(f"sequence length {length} exceeds the model's {model.config['max_positions']} positions")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(low=min(5, vocab - 1), high=vocab, size=(batch, length), generator=gen)
    return ids


def build_for_dataset(spec: str, dataset: "object") -> tuple[TextTransformer, str]:
    """Build a text family for a text Dataset: vocab from its tokenizer, pad id from its tokenizer,
    position table of `max_len`. Returns the model and the completed (canonical) spec."""
    extra = getattr(dataset, "extra", {}) or {}
    if "vocab_size" not in extra:
        raise ConfigError(f"model {spec!r} is a text model but the dataset {getattr(dataset, 'name', '?')!r} "
                          "is not text; use a text dataset (.csv/.jsonl or 'reviews')")
    full = with_vocab(spec, int(extra["vocab_size"]))
    model = create_model(full, tuple(dataset.input_shape), int(dataset.num_classes))  # type: ignore[attr-defined]
    set_pad_id(model, int(extra.get("pad_id", 0)))
    return model, full  # type: ignore[return-value]


def set_pad_id(model: nn.Module, pad_id: int) -> None:
    """Record the tokenizer's pad id in the model (a buffer, so checkpoints keep it)."""
    with torch.no_grad():
        model.pad_id.fill_(int(pad_id))  # type: ignore[union-attr,operator]


def check_text_teacher(teacher: "object", dataset: "object") -> None:
    """A text teacher must read the same token ids as the dataset: same vocabulary size and, when the
    teacher records it, the same tokenizer. ConfigError otherwise (the logits would be garbage)."""
    info = getattr(teacher, "info", None)
    if info is None:  # an ONNX teacher: only its input length and classes can be checked
        return
    extra = getattr(dataset, "extra", {}) or {}
    name, kwargs = parse_spec(info.spec)
    if MODELS.get(name).task != "text":
        raise ConfigError(f"teacher {getattr(teacher, 'path', '?')} is an image model ({info.spec}); "
                          "a text dataset needs a text teacher (bert, or a Hugging Face directory)")
    vocab = int(kwargs.get("vocab", 0))
    if vocab and vocab != int(extra.get("vocab_size", -1)):
        raise ConfigError(f"teacher {getattr(teacher, 'path', '?')} has a vocabulary of {vocab} tokens but the "
                          f"dataset's tokenizer has {extra.get('vocab_size')}; pass the teacher's tokenizer "
                          "(--tokenizer DIR) so both read the same token ids")
    want = (info.meta or {}).get("tokenizer_sha256")
    have = (getattr(dataset, "preprocess", {}) or {}).get("tokenizer_sha256")
    if want and have and want != have:
        raise ConfigError(f"teacher {getattr(teacher, 'path', '?')} was trained with another tokenizer "
                          f"(sha256 {want[:12]}, dataset {have[:12]}); pass the teacher's tokenizer with --tokenizer")


def dataset_meta(dataset: "object") -> dict:
    """What a text checkpoint keeps about its tokenizer (so export and deploy can tokenize raw text)."""
    extra = getattr(dataset, "extra", {}) or {}
    if "tokenizer_json" not in extra:
        return {}
    return {"tokenizer_json": extra["tokenizer_json"], "tokenizer_sha256": dataset.preprocess.get("tokenizer_sha256"),  # type: ignore[attr-defined]
            "pad_id": int(extra["pad_id"]), "max_len": int(extra["max_len"])}


#: what `edgekd models` reports text specs at (a text model's size depends on its vocabulary)
DESCRIBE_VOCAB = 1000
DESCRIBE_MAX_LEN = 32


def describe_text_spec(spec: str, num_classes: int = 2) -> dict:
    """Params and MACs of a text spec at vocab 1000, sequence length 32 (for `edgekd models`)."""
    name, kwargs = parse_spec(spec)
    vocab = int(kwargs.get("vocab", 0)) or DESCRIBE_VOCAB
    full = with_vocab(spec, vocab)
    model = create_model(full, (DESCRIBE_MAX_LEN,), max(2, int(num_classes)))
    macs = count_macs(model, example=example_ids(model))  # type: ignore[arg-type]
    return {"spec": spec, "params": count_params(model), "macs": macs,
            "at": {"vocab": vocab, "seq_len": DESCRIBE_MAX_LEN}}


# ------------------------------------------------------------------ the two families
# (registered last: each declares how it is built for a text Dataset and how `edgekd models` sizes it)

_DEFAULTS = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 256, "vocab": 0, "dropout": 0.1}


@register_family(
    "bert",
    role="teacher",
    task="text",
    defaults={**_DEFAULTS, "layers": 4, "hidden": 256, "heads": 4, "intermediate": 1024},
    search_space=[],
    validate=_validate,
    for_dataset=build_for_dataset,
    describe=describe_text_spec,
)
def build_bert(input_shape: tuple[int, ...], num_classes: int, **kw: object) -> nn.Module:
    """BERT-style encoder classifier (teacher): `layers` post-LN encoder layers of width `hidden`,
    `heads` attention heads, feed-forward width `intermediate`, GELU, [CLS] pooler, linear head.
    `input_shape` is (max_len,): the size of the position table."""
    return _build(input_shape, num_classes, **kw)


@register_family(
    "tinybert",
    role="student",
    task="text",
    defaults=dict(_DEFAULTS),
    search_space=[
        # ordered so params and MACs grow
        "tinybert:layers=1,hidden=32,heads=2,intermediate=64",
        "tinybert:layers=1,hidden=64,heads=2,intermediate=128",
        "tinybert:layers=2,hidden=64,heads=2,intermediate=128",
        "tinybert:layers=2,hidden=64,heads=2,intermediate=256",
        "tinybert:layers=2,hidden=128,heads=2,intermediate=256",
        "tinybert:layers=2,hidden=128,heads=4,intermediate=512",
        "tinybert:layers=4,hidden=128,heads=4,intermediate=512",
    ],
    validate=_validate,
    for_dataset=build_for_dataset,
    describe=describe_text_spec,
)
def build_tinybert(input_shape: tuple[int, ...], num_classes: int, **kw: object) -> nn.Module:
    """Small BERT-style student (TinyBERT/DistilBERT shape): same encoder as `bert` with fewer and
    narrower layers. With the teacher's hidden/intermediate widths it can be initialised from every
    k-th teacher layer (`edgekd.models.bert_init.init_from_teacher`)."""
    return _build(input_shape, num_classes, **kw)


#: defaults when the data is text and no model is named: the scripts/bench_text.py pair (the student
#: has ~1/9 of the teacher's parameters and ~1/12 of its MACs on `reviews`)
DEFAULT_TEXT_TEACHER = "bert:layers=3,hidden=96,heads=4,intermediate=384"
DEFAULT_TEXT_STUDENT = "tinybert:layers=1,hidden=48,heads=2,intermediate=192"
