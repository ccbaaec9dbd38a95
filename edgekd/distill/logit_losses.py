"""Logit losses beyond Hinton KD: DKD and DIST, registered in `edgekd.distill.losses.LOSSES`.

Same notation as `edgekd.distill.losses`: s = student logits, t = teacher logits (N×K), y = labels,
T = temperature, p^T(z) = softmax(z / T), KL(p ‖ q) = Σ_k p_k (log p_k − log q_k). Both losses carry
their own hard-label term, weighted by `ce_weight` (the papers add plain CE with weight 1), so one
entry is a complete objective. Both only read the teacher's softened distribution p^T(t), which is
precomputed once per run from cached logits (`teacher_targets`), like `kd`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses import LOSSES, DistillLoss, LossInputs, hard_ce
from edgekd.errors import ConfigError


def _check(name: str, temperature: float, **weights: float) -> None:
    if float(temperature) <= 0:
        raise ConfigError(f"{name}: temperature={temperature} must be > 0 (typical: 1 to 8)")
    for key, value in weights.items():
        if float(value) < 0:
            raise ConfigError(f"{name}: {key}={value} must be >= 0")


class _SoftTargetLoss(DistillLoss):
    """Shared plumbing: p^T(t) from the precomputed targets (or from raw logits online)."""

    needs_teacher_logits = True
    reads_raw_teacher_logits = False
    temperature: float

    def teacher_targets(self, teacher_logits: Tensor) -> dict[str, Tensor]:
        log_p = torch.log_softmax(teacher_logits.detach() / self.temperature, dim=1)
        return {f"logp@{self.temperature}": log_p}

    def _teacher_log_p(self, inputs: LossInputs) -> Tensor:
        key = f"logp@{self.temperature}"
        if key in inputs.teacher_targets:
            return inputs.teacher_targets[key].to(inputs.student_logits.dtype)
        return self.teacher_targets(self._teacher(inputs))[key].to(inputs.student_logits.dtype)


@LOSSES.register("dkd")
class DecoupledKD(_SoftTargetLoss):
    """Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge
    Distillation", CVPR 2022). KD's KL splits into a target-class part and a non-target part, which
    DKD weights separately (plain KD ties the non-target part to the teacher's confidence).

        b(z)_i   = [p^T(z_i)[y_i], 1 − p^T(z_i)[y_i]]                  (binary: target vs the rest)
        p̂(z)_i  = softmax over k ≠ y_i of z_ik / T                       (among the non-target classes)
        TCKD     = (1/N) Σ_i T² · KL(b(t)_i ‖ b(s)_i)
        NCKD     = (1/N) Σ_i T² · KL(p̂(t)_i ‖ p̂(s)_i)
        L = ce_weight · CE(s, y) + α · TCKD + β · NCKD

    Paper defaults (CIFAR-100): α = 1, β = 8, T = 4, CE weight 1. The paper also ramps the DKD term in
    over the first 20 epochs; edgekd's cosine schedule starts at full weight.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 1.0, beta: float = 8.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        _check("dkd", temperature, alpha=alpha, beta=beta, ce_weight=ce_weight)
        self.temperature, self.alpha, self.beta, self.ce_weight = float(temperature), float(alpha), float(beta), float(ce_weight)

    def forward(self, inputs: LossInputs) -> Tensor:
        s, y, T = inputs.student_logits, inputs.labels, self.temperature
        log_pt = self._teacher_log_p(inputs)
        log_ps = torch.log_softmax(s / T, dim=1)
        target = F.one_hot(y, s.shape[1]).bool()
        # binary (target / non-target) distributions, in log space for stability
        t_in = log_pt.gather(1, y[:, None]).squeeze(1)
        s_in = log_ps.gather(1, y[:, None]).squeeze(1)
        t_out = torch.logsumexp(log_pt.masked_fill(target, float("-inf")), dim=1)
        s_out = torch.logsumexp(log_ps.masked_fill(target, float("-inf")), dim=1)
        tckd = t_in.exp() * (t_in - s_in) + t_out.exp() * (t_out - s_out)
        # distributions among the non-target classes: renormalize by the non-target mass
        log_pt_hat = log_pt - t_out[:, None]
        log_ps_hat = log_ps - s_out[:, None]
        terms = log_pt_hat.exp() * (log_pt_hat - log_ps_hat)
        nckd = terms.masked_fill(target, 0.0).sum(dim=1)
        loss = (self.alpha * tckd + self.beta * nckd).mean() * (T * T)
        if self.ce_weight > 0:
            loss = loss + self.ce_weight * hard_ce(s, inputs)
        return loss


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of `a` with the same row of `b` (shape: rows)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@LOSSES.register("dist")
class DIST(_SoftTargetLoss):
    """DIST: knowledge distillation from a stronger teacher by matching *relations* (Huang, You,
    Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", NeurIPS 2022). Instead of
    matching probabilities exactly (KL), the student matches their correlation, which tolerates a
    large teacher-student capacity gap.

        P_s = p^T(s), P_t = p^T(t)                                   (N×K)
        ρ(u, v) = Pearson correlation of two vectors
        inter = 1 − (1/N) Σ_i ρ(P_s[i, :], P_t[i, :])                 (over classes, per sample)
        intra = 1 − (1/K) Σ_k ρ(P_s[:, k], P_t[:, k])                 (over the batch, per class)
        L = ce_weight · CE(s, y) + T² · (β · inter + γ · intra)

    Paper defaults: β = γ = 1 (2 on ImageNet with strong teachers), T = 1 on ImageNet, 4 on
    CIFAR-100; CE weight 1. `intra` depends on the batch: batch size is part of the recipe.
    """

    def __init__(self, temperature: float = 4.0, beta: float = 1.0, gamma: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        _check("dist", temperature, beta=beta, gamma=gamma, ce_weight=ce_weight)
        self.temperature, self.beta, self.gamma, self.ce_weight = float(temperature), float(beta), float(gamma), float(ce_weight)

    def forward(self, inputs: LossInputs) -> Tensor:
        s, T = inputs.student_logits, self.temperature
        p_t = self._teacher_log_p(inputs).exp()
        p_s = torch.softmax(s / T, dim=1)
        inter = 1.0 - _pearson_rows(p_s, p_t).mean()
        intra = 1.0 - _pearson_rows(p_s.t(), p_t.t()).mean()
        loss = (T * T) * (self.beta * inter + self.gamma * intra)
        if self.ce_weight > 0:
            loss = loss + self.ce_weight * hard_ce(s, inputs)
        return loss


__all__ = ["DecoupledKD", "DIST"]
