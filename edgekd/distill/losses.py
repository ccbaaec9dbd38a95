"""Distillation losses, registered by name and composed from config with weights.

A run's objective is a weighted sum of registered losses, given in config as

    losses:
      - {key: kd, weight: 1.0, kwargs: {temperature: 4.0, alpha: 0.5}}
      - {key: hint, weight: 0.1, kwargs: {student_layer: features.2, teacher_layer: features.3}}

Every loss is an `nn.Module` whose `forward(inputs: LossInputs) -> Tensor` returns a scalar. A loss
declares what it needs (`needs_teacher_logits`, `student_taps`, `teacher_taps`) so the trainer knows
whether the teacher must run online (features) or the soft-target cache is enough (logits only).
Trainable parts of a loss (the hint projection) are parameters of the loss module and are optimized
together with the student.

Notation used in the docstrings: s = student logits, t = teacher logits (N×K), y = labels,
T = temperature, p^T(z) = softmax(z / T), KL(p ‖ q) = Σ_k p_k (log p_k − log q_k), means are over the
batch (N samples) unless stated.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.errors import ConfigError
from edgekd.registry import Registry

LOSSES: Registry[type["DistillLoss"]] = Registry("loss function")

# probe(role, module_path) -> feature shape without the batch dimension; given by the trainer so a
# loss with a learned projection (hint) can size it before the optimizer is built.
FeatureProbe = Callable[[str, str], Sequence[int]]


@dataclass
class LossInputs:
    """Everything a loss may look at for one batch."""

    student_logits: Tensor
    labels: Tensor
    teacher_logits: Tensor | None = None
    student_features: dict[str, Tensor] = field(default_factory=dict)
    teacher_features: dict[str, Tensor] = field(default_factory=dict)
    # per-sample tensors derived from the teacher logits (LossStack.teacher_targets), aligned by row;
    # precomputed once per run when the logits are cached. Losses fall back to computing them.
    teacher_targets: dict[str, Tensor] = field(default_factory=dict)
    # mixed hard labels q (N×K, rows sum to 1) of mixup views (`augment.mixup`); None: q = onehot(labels)
    label_dist: Tensor | None = None


def hard_ce(student_logits: Tensor, inputs: LossInputs, label_smoothing: float = 0.0) -> Tensor:
    """−(1/N) Σ_i Σ_k q_ik log softmax(s_i)_k with q = the mixed labels when given, else onehot(y):
    the hard-label term of every objective, so that on mixup views CE and KD read the same labels."""
    if inputs.label_dist is not None:
        return F.cross_entropy(student_logits, inputs.label_dist.to(student_logits.dtype), label_smoothing=label_smoothing)
    return F.cross_entropy(student_logits, inputs.labels, label_smoothing=label_smoothing)


class DistillLoss(nn.Module):
    """Base class: a scalar loss of one batch. Subclasses document their formula and paper."""

    needs_teacher_logits: bool = False
    # False when everything the loss reads from the teacher is in `teacher_targets` (then the
    # trainer need not gather raw logits per batch)
    reads_raw_teacher_logits: bool = True

    @property
    def student_taps(self) -> tuple[str, ...]:
        return ()

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        return ()

    @classmethod
    def build(cls, kwargs: dict[str, Any], probe: FeatureProbe | None) -> "DistillLoss":
        """Construct from config kwargs; `probe` gives feature shapes to losses that need them."""
        return cls(**kwargs)

    def teacher_targets(self, teacher_logits: Tensor) -> dict[str, Tensor]:
        """Per-sample tensors this loss derives from teacher logits (precomputable); none by default."""
        return {}

    def forward(self, inputs: LossInputs) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _teacher(self, inputs: LossInputs) -> Tensor:
        if inputs.teacher_logits is None:
            raise ConfigError(f"loss {type(self).__name__} needs teacher logits; give a teacher (--teacher PATH)")
        return inputs.teacher_logits


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-sample T² · KL(p^T(t) ‖ p^T(s)), shape (N,). The T² keeps gradient scale independent of T.
    Plain autograd version (the reference the fused KD objective is tested against)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    return (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1) * (temperature**2)


class _FusedKD(torch.autograd.Function):
    """L = Σ_i c_i · T²·KL(p^T(t_i) ‖ p^T(s_i)) + α · mean_i CE(s_i, h_i), with its closed-form gradient

        ∂L/∂s_i = c_i · T · (p^T(s_i) − p^T(t_i)) + (α/N) · (softmax(s_i) − onehot(h_i)).

    `hard` is either the label indices h (N) or a label distribution q (N×K, mixup views): then the
    CE term is −Σ_k q_ik log softmax(s_i)_k and onehot(h_i) above becomes q_i.

    The teacher side enters precomputed (p = p^T(t), negent = Σ_k p log p per sample; see
    `teacher_targets`), so with cached logits it is computed once per run, not once per step. One
    autograd node instead of ~15: for edgekd's small students, per-op overhead is most of a KD
    step's extra cost, and this keeps a cached-KD epoch close to a CE epoch."""

    @staticmethod
    def forward(ctx, s, p, negent, hard, coef, temperature, alpha):  # type: ignore[override]
        n = s.shape[0]
        log_p_s = torch.log_softmax(s * (1.0 / temperature), dim=1)
        # T² · KL_i = T² · (Σ_k p log p − Σ_k p log p_s)
        kl = (negent - (p * log_p_s).sum(dim=1)) * (temperature**2)
        loss = (kl * coef).sum() if isinstance(coef, torch.Tensor) else kl.sum() * coef
        log_q = None
        if alpha > 0.0:
            log_q = torch.log_softmax(s, dim=1)
            picked = (hard * log_q).sum() if hard.dim() == 2 else log_q.gather(1, hard[:, None]).sum()
            loss = loss - picked * (alpha / n)
        ctx.save_for_backward(log_p_s, p, hard, log_q if log_q is not None else torch.empty(0),
                              coef if isinstance(coef, torch.Tensor) else torch.empty(0))
        ctx.coef = None if isinstance(coef, torch.Tensor) else coef
        ctx.temperature, ctx.alpha = temperature, alpha
        return loss

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        log_p_s, p, hard, log_q, coef_t = ctx.saved_tensors
        n = log_p_s.shape[0]
        grad = log_p_s.exp().sub_(p)
        if ctx.coef is None:
            grad.mul_(coef_t[:, None] * ctx.temperature)
        else:
            grad.mul_(ctx.coef * ctx.temperature)
        if ctx.alpha > 0.0:
            q = log_q.exp().mul_(ctx.alpha / n)
            if hard.dim() == 2:
                q.sub_(hard * (ctx.alpha / n))
            else:
                q.scatter_add_(1, hard[:, None], q.new_full((n, 1), -ctx.alpha / n))
            grad.add_(q)
        return grad.mul_(grad_out), None, None, None, None, None, None


def kd_teacher_targets(teacher_logits: Tensor, temperature: float) -> dict[str, Tensor]:
    """Per-sample teacher quantities KD needs at temperature T: p^T(t), Σ_k p log p, arg-max."""
    log_p = torch.log_softmax(teacher_logits.detach() / temperature, dim=1)
    p = log_p.exp()
    return {f"p@{temperature}": p, f"negent@{temperature}": (p * log_p).sum(dim=1),
            "argmax": teacher_logits.detach().argmax(dim=1)}


@LOSSES.register("ce")
class HardCrossEntropy(DistillLoss):
    """Cross-entropy on the ground-truth labels (no teacher).

        L = −(1/N) Σ_i log softmax(s_i)[y_i]

    With `label_smoothing` ε the target is (1−ε)·onehot(y) + ε/K (Szegedy et al., 2016). On mixup
    views onehot(y_i) is the mixed label q_i (`LossInputs.label_dist`).
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ConfigError(f"ce: label_smoothing={label_smoothing} must be in [0, 1)")
        self.label_smoothing = float(label_smoothing)

    def forward(self, inputs: LossInputs) -> Tensor:
        return hard_ce(inputs.student_logits, inputs, self.label_smoothing)


@LOSSES.register("kd")
class HintonKD(DistillLoss):
    """Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural
    Network", 2015).

        L_soft = (1/N) Σ_i T² · KL(p^T(t_i) ‖ p^T(s_i))
        L_hard = −(1/N) Σ_i log softmax(s_i)[h_i]
        L      = α · L_hard + (1 − α) · L_soft

    `hard_targets`: ``"labels"`` → h_i = y_i (ground truth); ``"teacher"`` → h_i = argmax_k t_ik
    (the teacher's own prediction, for unlabeled or noisy-label data). α = 0 is pure soft-target
    training; α = 1 is plain cross-entropy. On mixup views (`LossInputs.label_dist`, labels) the
    hard term reads the mixed label q_i: L_hard = −(1/N) Σ_i Σ_k q_ik log softmax(s_i)_k.
    """

    needs_teacher_logits = True
    reads_raw_teacher_logits = False

    def __init__(self, temperature: float = 4.0, alpha: float = 0.5, hard_targets: str = "labels") -> None:
        super().__init__()
        if float(temperature) <= 0:
            raise ConfigError(f"kd: temperature={temperature} must be > 0 (typical: 2 to 8)")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"kd: alpha={alpha} must be in [0, 1] (weight of the hard-label loss)")
        if hard_targets not in ("labels", "teacher"):
            raise ConfigError(f"kd: hard_targets={hard_targets!r} must be 'labels' or 'teacher'")
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.hard_targets = hard_targets

    needs_argmax = False  # data_distill's mask needs the teacher's arg-max on every sample

    def teacher_targets(self, teacher_logits: Tensor) -> dict[str, Tensor]:
        targets = kd_teacher_targets(teacher_logits, self.temperature)
        if not (self.needs_argmax or self.hard_targets == "teacher"):
            del targets["argmax"]  # one gather fewer per step
        return targets

    def _targets(self, inputs: LossInputs) -> dict[str, Tensor]:
        if f"p@{self.temperature}" in inputs.teacher_targets:
            return inputs.teacher_targets
        return self.teacher_targets(self._teacher(inputs))

    def hard_target(self, inputs: LossInputs) -> Tensor:
        if self.hard_targets == "teacher":
            return self._targets(inputs)["argmax"]
        return inputs.labels

    def soft_coefficients(self, inputs: LossInputs, targets: dict[str, Tensor]) -> Tensor | float:
        """Weight c_i of each sample's T²·KL_i in the loss: (1 − α)/N for plain KD."""
        return (1.0 - self.alpha) / inputs.student_logits.shape[0]

    def forward(self, inputs: LossInputs) -> Tensor:
        tg = self._targets(inputs)
        s = inputs.student_logits
        T = self.temperature
        hard = tg["argmax"] if self.hard_targets == "teacher" else (
            inputs.labels if inputs.label_dist is None else inputs.label_dist.to(s.dtype))
        coef = self.soft_coefficients(inputs, tg)
        if isinstance(coef, Tensor):
            coef = coef.to(s.dtype)
        return _FusedKD.apply(s, tg[f"p@{T}"].to(s.dtype), tg[f"negent@{T}"].to(s.dtype), hard, coef, T, self.alpha)


@LOSSES.register("data_distill")
class DataDistillation(HintonKD):
    """KD plus a soft loss restricted to the samples the teacher classifies correctly
    ("data distillation": trust the teacher's distribution only where its arg-max is right).

        m_i    = 1[argmax_k t_ik = y_i]
        L_dd   = Σ_i m_i · T² · KL(p^T(t_i) ‖ p^T(s_i)) / max(1, Σ_i m_i)
        L      = L_KD + λ · L_dd

    where L_KD is the `kd` loss above with the same T, α and hard_targets. L_dd is a mean over the
    correctly classified samples only (0 if the teacher gets none of the batch right). λ = `lam`.
    """

    needs_argmax = True

    def __init__(
        self, temperature: float = 4.0, alpha: float = 0.5, lam: float = 1.0, hard_targets: str = "labels"
    ) -> None:
        super().__init__(temperature=temperature, alpha=alpha, hard_targets=hard_targets)
        if float(lam) < 0:
            raise ConfigError(f"data_distill: lam={lam} must be >= 0")
        self.lam = float(lam)

    def soft_coefficients(self, inputs: LossInputs, targets: dict[str, Tensor]) -> Tensor | float:
        """c_i = (1 − α)/N + λ · m_i / max(1, Σ m): L_KD and λ·L_dd share one KL term per sample."""
        mask = (targets["argmax"] == inputs.labels).to(inputs.student_logits.dtype)
        return mask * (self.lam / mask.sum().clamp(min=1.0)) + super().soft_coefficients(inputs, targets)


@LOSSES.register("hint")
class HintLoss(DistillLoss):
    """FitNets hint loss (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015).

        L = mean over all elements of (r(f_s) − f_t)²

    f_s is the output of the student module at `student_layer`, f_t the teacher's at
    `teacher_layer` (module paths such as ``features.2``, read by forward hooks). r is a learned
    regressor: a 1×1 convolution when both features are N×C×H×W, a linear layer when both are N×D.
    When spatial sizes differ, the larger map is average-pooled to the smaller one's size; when one
    side is a map and the other a vector, the map is global-average-pooled. The teacher feature is
    detached (the teacher is frozen). Teacher features are not cached, so this loss runs the teacher
    online every step.
    """

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        student_shape: Sequence[int] | None = None,
        teacher_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if student_shape is None or teacher_shape is None:
            raise ConfigError("hint: feature shapes are unknown; build the loss through the trainer (it probes them)")
        self.student_layer = str(student_layer)
        self.teacher_layer = str(teacher_layer)
        self.student_shape = tuple(int(v) for v in student_shape)
        self.teacher_shape = tuple(int(v) for v in teacher_shape)
        s_maps, t_maps = len(self.student_shape) == 3, len(self.teacher_shape) == 3
        for name, shape in (("student", self.student_shape), ("teacher", self.teacher_shape)):
            if len(shape) not in (1, 3):
                raise ConfigError(f"hint: {name} feature has shape {list(shape)}; pick a layer giving C×H×W or D features")
        self.maps = s_maps and t_maps
        c_s, c_t = self.student_shape[0], self.teacher_shape[0]
        # bias-free 1x1 conv / linear: FitNets' regressor; Kaiming-uniform default init
        self.proj: nn.Module = nn.Conv2d(c_s, c_t, 1, bias=False) if self.maps else nn.Linear(c_s, c_t, bias=False)

    @property
    def student_taps(self) -> tuple[str, ...]:
        return (self.student_layer,)

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        return (self.teacher_layer,)

    @classmethod
    def build(cls, kwargs: dict[str, Any], probe: FeatureProbe | None) -> "DistillLoss":
        kwargs = dict(kwargs)
        for key in ("student_layer", "teacher_layer"):
            if not isinstance(kwargs.get(key), str):
                raise ConfigError(f"hint: kwargs.{key} is required (a module path such as 'features.2')")
        for role in ("student", "teacher"):
            if kwargs.get(f"{role}_shape") is None:
                if probe is None:
                    raise ConfigError("hint: needs a torch student and a torch teacher to read features from")
                kwargs[f"{role}_shape"] = probe(role, kwargs[f"{role}_layer"])
        return cls(**kwargs)

    def forward(self, inputs: LossInputs) -> Tensor:
        f_s = inputs.student_features[self.student_layer]
        f_t = inputs.teacher_features[self.teacher_layer].detach()
        if not self.maps:
            f_s = f_s.mean(dim=(2, 3)) if f_s.dim() == 4 else f_s.flatten(1)
            f_t = f_t.mean(dim=(2, 3)) if f_t.dim() == 4 else f_t.flatten(1)
            return F.mse_loss(self.proj(f_s), f_t)
        r = self.proj(f_s)
        h = min(r.shape[2], f_t.shape[2])
        w = min(r.shape[3], f_t.shape[3])
        if r.shape[2:] != (h, w):
            r = F.adaptive_avg_pool2d(r, (h, w))
        if f_t.shape[2:] != (h, w):
            f_t = F.adaptive_avg_pool2d(f_t, (h, w))
        return F.mse_loss(r, f_t)


class LossStack(nn.Module):
    """Weighted sum of losses: L = Σ_j w_j · L_j. `forward` returns (total, {name: value})."""

    def __init__(self, entries: Sequence[tuple[str, float, DistillLoss]]) -> None:
        super().__init__()
        if not entries:
            raise ConfigError("no losses configured; give at least one, e.g. [{key: kd}]")
        self.names = [self._unique(name, i, entries) for i, (name, _, _) in enumerate(entries)]
        self.weights = [float(w) for _, w, _ in entries]
        self.parts = nn.ModuleList([loss for _, _, loss in entries])

    @staticmethod
    def _unique(name: str, i: int, entries: Sequence[tuple[str, float, DistillLoss]]) -> str:
        same = [j for j, (n, _, _) in enumerate(entries) if n == name]
        return name if len(same) == 1 else f"{name}{same.index(i)}"

    @property
    def needs_teacher_logits(self) -> bool:
        return any(p.needs_teacher_logits for p in self.parts)

    @property
    def reads_raw_teacher_logits(self) -> bool:
        return any(p.needs_teacher_logits and p.reads_raw_teacher_logits for p in self.parts)

    @property
    def student_taps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for p in self.parts for t in p.student_taps))

    @property
    def teacher_taps(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t for p in self.parts for t in p.teacher_taps))

    def teacher_targets(self, teacher_logits: Tensor) -> dict[str, Tensor]:
        """Every part's per-sample teacher targets, merged (keys carry their parameters, e.g. T)."""
        out: dict[str, Tensor] = {}
        for part in self.parts:
            out.update(part.teacher_targets(teacher_logits))
        return out

    def forward(self, inputs: LossInputs) -> tuple[Tensor, dict[str, Tensor]]:
        values = {name: part(inputs) for name, part in zip(self.names, self.parts)}
        total = self.weights[0] * values[self.names[0]]
        for name, weight in zip(self.names[1:], self.weights[1:]):
            total = total + weight * values[name]
        return total, values


def build_loss(key: str, kwargs: dict[str, Any] | None = None, probe: FeatureProbe | None = None) -> DistillLoss:
    """One registered loss from its key and kwargs; unknown keys or kwargs raise ConfigError."""
    cls = LOSSES.get(key)
    kwargs = dict(kwargs or {})
    params = inspect.signature(cls.__init__).parameters
    unknown = [k for k in kwargs if k not in params or k == "self"]
    if unknown:
        valid = ", ".join(p for p in params if p != "self")
        raise ConfigError(f"loss {key!r}: unknown option {unknown[0]!r}; valid options: {valid}")
    try:
        return cls.build(kwargs, probe)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"loss {key!r}: bad options {kwargs}: {err}") from None


def build_loss_stack(entries: Sequence[Any], probe: FeatureProbe | None = None) -> LossStack:
    """Compose `[LossEntry|dict(key, weight, kwargs)]` into a LossStack."""
    built = []
    for entry in entries:
        key = entry["key"] if isinstance(entry, dict) else entry.key
        weight = entry.get("weight", 1.0) if isinstance(entry, dict) else entry.weight
        kwargs = entry.get("kwargs", {}) if isinstance(entry, dict) else entry.kwargs
        built.append((key, float(weight), build_loss(key, kwargs, probe)))
    return LossStack(built)


def uses_teacher(stack: LossStack) -> bool:
    """True if any part of the objective reads teacher logits or teacher features."""
    return stack.needs_teacher_logits or bool(stack.teacher_taps)


__all__ = [
    "LOSSES",
    "LossInputs",
    "DistillLoss",
    "LossStack",
    "HardCrossEntropy",
    "HintonKD",
    "DataDistillation",
    "HintLoss",
    "build_loss",
    "build_loss_stack",
    "hard_ce",
    "soft_kl",
    "uses_teacher",
]
