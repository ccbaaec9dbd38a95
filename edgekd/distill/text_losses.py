"""Transformer-layer distillation losses (TinyBERT-style), registered in the shared `LOSSES` registry.

    losses:
      - {key: kd, kwargs: {temperature: 2.0, alpha: 0.5}}
      - {key: hidden_align, weight: 1.0}                      # uniform layer map, embeddings included
      - {key: attention_align, weight: 1.0, kwargs: {target: scores}}

Both read features through forward-hook taps (`edgekd.distill.taps`), so they work on any model
whose sub-modules are addressable: edgekd's `bert`/`tinybert` families and Hugging Face BERT teachers
converted by `edgekd.models.hf_bert` expose `embeddings`, `layers.{i}` and `layers.{i}.attention.{scores,probs}`.

Layer map: `pairs` is either a list of ``[student_path, teacher_path]`` pairs or ``"uniform"``: the
student's encoder layer i (of M) is matched with the teacher's layer (i+1)·N/M − 1 (of N), i.e. every
k-th teacher layer ending with the last one (Jiao et al., "TinyBERT", 2020). The depths M and N are
found by probing `layers.{i}` paths on the two models.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses import LOSSES, DistillLoss, FeatureProbe, LossInputs
from edgekd.errors import ConfigError

MASKED_BELOW = -1e3  # additive masks are -1e4: a teacher score this low is a padded key position
MAX_DEPTH = 64


def encoder_depth(probe: FeatureProbe, role: str, prefix: str = "layers") -> int:
    """Number of `prefix.{i}` sub-modules of the student or teacher, found by probing paths."""
    depth = 0
    while depth < MAX_DEPTH:
        try:
            probe(role, f"{prefix}.{depth}")
        except ConfigError:
            break
        depth += 1
    if depth == 0:
        raise ConfigError(f"the {role} has no '{prefix}.0' module; layer alignment needs a transformer "
                          "(bert/tinybert) or explicit pairs [[student_path, teacher_path], ...]")
    return depth


def uniform_pairs(student_depth: int, teacher_depth: int) -> list[tuple[int, int]]:
    """Student layer i <- teacher layer (i+1)*N/M - 1: every k-th teacher layer, ending with the last."""
    if student_depth > teacher_depth:
        raise ConfigError(f"a student with {student_depth} layers cannot map onto a teacher with {teacher_depth}; "
                          "give explicit pairs")
    return [(i, (i + 1) * teacher_depth // student_depth - 1) for i in range(student_depth)]


def _resolve_pairs(pairs: Any, probe: FeatureProbe | None, suffix: str, embeddings: bool) -> list[tuple[str, str]]:
    if isinstance(pairs, str):
        if pairs != "uniform":
            raise ConfigError(f"pairs={pairs!r}: use 'uniform' or a list of [student_path, teacher_path]")
        if probe is None:
            raise ConfigError("pairs='uniform' needs a torch student and teacher to probe; give explicit pairs")
        m, n = encoder_depth(probe, "student"), encoder_depth(probe, "teacher")
        out = [(f"layers.{i}{suffix}", f"layers.{j}{suffix}") for i, j in uniform_pairs(m, n)]
        return ([("embeddings", "embeddings")] if embeddings else []) + out
    if not isinstance(pairs, (list, tuple)) or not pairs:
        raise ConfigError(f"pairs={pairs!r}: give a non-empty list of [student_path, teacher_path]")
    out = []
    for item in pairs:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(isinstance(p, str) for p in item):
            raise ConfigError(f"pairs item {item!r}: each pair is [student_path, teacher_path]")
        out.append((item[0], item[1]))
    return out


class _LayerAlignment(DistillLoss):
    """Shared machinery: a list of (student path, teacher path) pairs read through taps."""

    def __init__(self, pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.pairs = [(str(s), str(t)) for s, t in pairs]

    @property
    def student_taps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for s, _ in self.pairs))

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for _, t in self.pairs))


@LOSSES.register("hidden_align")
class HiddenStateAlignment(_LayerAlignment):
    """Hidden-state (and embedding) alignment, TinyBERT's L_hidn and L_embd (Jiao et al., 2020).

        L = (1/|P|) Σ_(s,t)∈P  mean over N·L·d_t of (H_s W_(s,t) − H_t)²

    H_s (N×L×d_s) and H_t (N×L×d_t) are the outputs of the paired student/teacher modules; W is a
    learned bias-free linear map d_s → d_t per pair (the identity is not assumed even when d_s = d_t,
    as in TinyBERT). Padded positions take part like the others (both models see the same ids).
    `pairs`: "uniform" (see module doc; `embeddings` adds the embedding-output pair) or explicit pairs.
    The teacher runs online every step (features are not cached).
    """

    def __init__(self, pairs: Any = "uniform", embeddings: bool = True,
                 widths: Sequence[tuple[int, int]] | None = None) -> None:
        if widths is None:
            raise ConfigError("hidden_align: feature widths are unknown; build the loss through the trainer")
        super().__init__(_resolve_pairs(pairs, None, "", embeddings))
        if len(widths) != len(self.pairs):
            raise ConfigError("hidden_align: one (student width, teacher width) per pair is needed")
        self.proj = nn.ModuleList(nn.Linear(int(ds), int(dt), bias=False) for ds, dt in widths)

    @classmethod
    def build(cls, kwargs: dict[str, Any], probe: FeatureProbe | None) -> "DistillLoss":
        kwargs = dict(kwargs)
        embeddings = bool(kwargs.get("embeddings", True))
        pairs = _resolve_pairs(kwargs.get("pairs", "uniform"), probe, "", embeddings)
        if probe is None:
            raise ConfigError("hidden_align: needs a torch student and a torch teacher to read hidden states from")
        widths = []
        for s, t in pairs:
            s_shape, t_shape = tuple(probe("student", s)), tuple(probe("teacher", t))
            if len(s_shape) != 2 or len(t_shape) != 2 or s_shape[0] != t_shape[0]:
                raise ConfigError(f"hidden_align: {s} gives {list(s_shape)} and {t} gives {list(t_shape)}; "
                                  "pair modules that output N x L x hidden over the same sequence")
            widths.append((s_shape[-1], t_shape[-1]))
        return cls(pairs=pairs, embeddings=embeddings, widths=widths)

    def forward(self, inputs: LossInputs) -> Tensor:
        total = inputs.student_logits.new_zeros(())
        for proj, (s, t) in zip(self.proj, self.pairs):
            total = total + F.mse_loss(proj(inputs.student_features[s]), inputs.teacher_features[t].detach())
        return total / len(self.pairs)


@LOSSES.register("attention_align")
class AttentionAlignment(_LayerAlignment):
    """Attention-map alignment, TinyBERT's L_attn (Jiao et al., 2020).

        L = (1/|P|) Σ_(s,t)∈P  (1/h) Σ_a  mean over valid (i, j) of (A^s_a,ij − A^t_a,ij)²

    A is the attention matrix of the paired layers: `target="scores"` (TinyBERT: the masked
    pre-softmax scores, with padded key positions — teacher score below −1000 — left out) or
    `target="probs"` (softmax probabilities). When head counts differ, both sides are first averaged
    over heads (a (N, 1, L, L) map). Attention maps are L×L whatever the widths, so no projection is
    needed; a width mismatch is handled by `hidden_align`'s projection.
    """

    def __init__(self, pairs: Any = "uniform", target: str = "scores",
                 heads: Sequence[tuple[int, int]] | None = None) -> None:
        if target not in ("scores", "probs"):
            raise ConfigError(f"attention_align: target={target!r} must be 'scores' or 'probs'")
        super().__init__(_resolve_pairs(pairs, None, f".attention.{target}", False))
        self.target = target
        self.same_heads = [a == b for a, b in heads] if heads is not None else [False] * len(self.pairs)

    @classmethod
    def build(cls, kwargs: dict[str, Any], probe: FeatureProbe | None) -> "DistillLoss":
        kwargs = dict(kwargs)
        target = kwargs.get("target", "scores")
        if target not in ("scores", "probs"):
            raise ConfigError(f"attention_align: target={target!r} must be 'scores' or 'probs'")
        pairs = _resolve_pairs(kwargs.get("pairs", "uniform"), probe, f".attention.{target}", False)
        if probe is None:
            raise ConfigError("attention_align: needs a torch student and a torch teacher to read attention from")
        heads = []
        for s, t in pairs:
            s_shape, t_shape = tuple(probe("student", s)), tuple(probe("teacher", t))
            if len(s_shape) != 3 or len(t_shape) != 3 or s_shape[1:] != t_shape[1:]:
                raise ConfigError(f"attention_align: {s} gives {list(s_shape)} and {t} gives {list(t_shape)}; "
                                  "pair attention maps of shape heads x L x L")
            heads.append((s_shape[0], t_shape[0]))
        return cls(pairs=pairs, target=target, heads=heads)

    def forward(self, inputs: LossInputs) -> Tensor:
        total = inputs.student_logits.new_zeros(())
        for same, (s, t) in zip(self.same_heads, self.pairs):
            a_s, a_t = inputs.student_features[s], inputs.teacher_features[t].detach()
            # every head shares the padding mask: one (N, 1, L, L) map of the valid (query, key) cells
            valid = (a_t[:, :1] > MASKED_BELOW).to(a_s.dtype) if self.target == "scores" else torch.ones_like(a_t[:, :1])
            if not same:
                a_s, a_t = a_s.mean(dim=1, keepdim=True), a_t.mean(dim=1, keepdim=True)
            sq = ((a_s - a_t) * valid) ** 2
            total = total + sq.sum() / (valid.sum().clamp(min=1.0) * sq.shape[1])
        return total / len(self.pairs)


__all__ = ["HiddenStateAlignment", "AttentionAlignment", "uniform_pairs", "encoder_depth"]
