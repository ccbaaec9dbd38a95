"""Choose the smallest student that meets a latency budget (and an accuracy floor) on one device.

The rule, applied to every candidate:
  1. latency at the chosen percentile <= budget — measured on this device when the profile has it,
     otherwise predicted by the device's fitted latency model (flagged "predicted"), or by the
     target's datasheet prior when nothing was measured (flagged "predicted, unmeasured");
  2. accuracy >= the floor, when a floor is given (measured accuracy only: an unmeasured one is not
     assumed, unless the caller — `edgekd deploy`, which measures it next — allows it);
  3. among those that pass, the fewest parameters wins; a tie goes to the higher accuracy. A joint
     choice (`edgekd select --format auto` / `--precision auto`: every runtime x precision the
     profile has) ranks by the weights' size on the device instead (params x bytes per weight of the
     candidate's precision: an INT8 student is a quarter of its fp32 self), so runtime and precision
     are chosen with the student; `edgekd deploy --format auto` goes further (val accuracy per MB,
     `edgekd.deploy.joint`), which needs the trained students select does not have.
Every candidate carries its reasons (why taken, why rejected). When none passes, the closest miss is
named: the rejected candidate with the smallest relative shortfall (latency over budget plus
accuracy under floor).

The candidates come from `edgekd.deploy.candidates` (measured and predicted). Host side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from edgekd.deploy.candidates import Candidate, gather_candidates, stale_models
from edgekd.errors import ConfigError, ProfileError

RULES = {False: "fewest parameters; tie -> higher accuracy, then faster",
         True: "smallest weights on the device (params x bytes per weight: fp32 4, fp16 2, int8 1); "
               "tie -> higher accuracy, then faster"}


@dataclass
class Selection:
    """The outcome: the chosen candidate (or None), every candidate in rule order, the closest miss."""

    budget_ms: float
    percentile: int
    min_accuracy: float | None
    chosen: Candidate | None
    candidates: list[Candidate]
    closest_miss: Candidate | None
    models: dict[str, dict[str, Any]]
    profile: str | None = None
    input_shape: list[int] | None = None
    joint: bool = False
    stale_models: list[str] = field(default_factory=list)  # INT8 models of another recipe: not used

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile, "budget_ms": self.budget_ms, "percentile": self.percentile,
            "joint": self.joint, "rule": RULES[self.joint],
            "min_accuracy": self.min_accuracy, "input_shape": self.input_shape,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "closest_miss": self.closest_miss.to_dict() if self.closest_miss else None,
            "latency_models": self.models, "stale_models": self.stale_models,
            "candidates": [c.to_dict() for c in self.candidates],
        }

def joint_choice(formats: list[str] | None, precisions: list[str] | None,
                 target: Any | None = None) -> tuple[list[str] | None, list[str] | None, bool]:
    """`select --format` / `--precision` as given -> (formats, precisions, joint). "auto" (alone) means
    every one the profile has, or the `target`'s when one is given, and makes the choice joint; so does
    a list of more than one precision (sizes in bytes then differ for the same student)."""
    joint = False
    out = []
    for name, values, offered in (("format", formats, "formats"), ("precision", precisions, "precisions")):
        if values and "auto" in values:
            if len(values) > 1:
                raise ConfigError(f"--{name} auto chooses among every {name} the profile has; give it alone, "
                                  f"or a comma list without auto")
            values, joint = (list(getattr(target, offered)) if target is not None else None), True
        out.append(values)
    joint = joint or len(set(out[1] or ())) > 1
    return out[0], out[1], joint


def _check_budget(budget_ms: Any) -> None:
    if not isinstance(budget_ms, (int, float)) or isinstance(budget_ms, bool) or not math.isfinite(budget_ms) \
            or budget_ms <= 0:
        raise ConfigError(f"budget must be a positive finite number of milliseconds, got {budget_ms!r}")


def apply_rule(
    candidates: list[Candidate], *, budget_ms: float, min_accuracy: float | None, allow_unmeasured_accuracy: bool = False,
    joint: bool = False,
) -> tuple[Candidate | None, Candidate | None]:
    """Mark every candidate (status, reasons, miss) and return (chosen, closest miss). `joint`: rank by
    the weights' bytes on the device (`RULES`) instead of the parameter count."""
    _check_budget(budget_ms)
    if min_accuracy is not None and not 0 <= min_accuracy <= 1:
        raise ConfigError(f"min accuracy {min_accuracy!r} must be a fraction in 0..1 (e.g. 0.97)")
    for c in candidates:
        c.reasons, c.status = [], "rejected"
        lat_excess = 0.0
        if c.latency_ms is None:
            c.fits_latency = False
            c.reasons.append("no latency at this percentile")
            lat_excess = math.inf
        else:
            c.fits_latency = c.latency_ms <= budget_ms
            word = c.latency_label
            rel = "<=" if c.fits_latency else ">"
            c.reasons.append(f"{word} {c.latency_ms:.4g} ms {rel} budget {budget_ms:g} ms")
            lat_excess = max(0.0, c.latency_ms / budget_ms - 1.0)
        acc_short = 0.0
        if min_accuracy is None:
            c.fits_accuracy = None
            if c.accuracy is not None:
                c.reasons.append(f"accuracy {c.accuracy:.2%} (no floor)")
        elif c.accuracy is None:
            c.fits_accuracy = None
            c.reasons.append("accuracy not measured on this device" + (" (deploy measures it)" if allow_unmeasured_accuracy else ""))
        else:
            c.fits_accuracy = c.accuracy >= min_accuracy
            c.reasons.append(f"accuracy {c.accuracy:.2%} {'>=' if c.fits_accuracy else '<'} floor {min_accuracy:.2%}")
            acc_short = max(0.0, (min_accuracy - c.accuracy) / min_accuracy)
        acc_ok = c.fits_accuracy is True or min_accuracy is None or (c.fits_accuracy is None and allow_unmeasured_accuracy)
        if c.fits_latency and acc_ok:
            c.status = "fits"
        if c.fits_accuracy is None and min_accuracy is not None and not allow_unmeasured_accuracy:
            c.miss = lat_excess + 1.0  # unknown accuracy: a miss, but never "closer" than a measured one
        else:
            c.miss = lat_excess + acc_short
    # rule order: fewest params (joint: fewest weight bytes); tie -> higher accuracy (unknown last); then lower latency
    def size(c: Candidate) -> int:
        return c.size_bytes if joint else c.params

    candidates.sort(key=lambda c: (size(c), -(c.accuracy if c.accuracy is not None else -1.0),
                                   c.latency_ms if c.latency_ms is not None else math.inf, c.spec, c.format, c.precision))
    chosen = next((c for c in candidates if c.status == "fits"), None)
    if chosen is not None:
        chosen.status = "chosen"
        chosen.reasons.insert(0, f"smallest that fits ({chosen.size_bytes / 1e6:.4g} MB as {chosen.precision})" if joint
                              else "smallest that fits")
        for c in candidates:
            if c.status != "fits":
                continue
            if size(c) > size(chosen):
                c.reasons.insert(0, f"fits, but {c.size_bytes / 1e6:.4g} MB as {c.precision} > {chosen.size_bytes / 1e6:.4g} MB"
                                 if joint else f"fits, but {c.params:,} params > {chosen.params:,}")
            else:
                c.reasons.insert(0, f"fits; tie on {'size' if joint else 'params'}, lower accuracy or slower")
        return chosen, None
    rejected = [c for c in candidates if not math.isinf(c.miss)]
    closest = min(rejected, key=lambda c: (c.miss, c.params)) if rejected else None
    return None, closest


def select(
    profile: Any | None,
    *,
    budget_ms: float,
    percentile: int = 50,
    min_accuracy: float | None = None,
    formats: Iterable[str] | None = None,
    precisions: Iterable[str] | None = None,
    threads: int | None = None,
    batch: int = 1,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    target: Any | None = None,
    dataset_fingerprint: str | None = None,
    allow_unmeasured_accuracy: bool = False,
    specs: Iterable[str] | None = None,
    task: str | None = None,
    accelerator: str | None = None,
    only_specs: bool = False,
    joint: bool = False,
) -> Selection:
    """Apply the budget rule to a profile's measurements and predictions (see the module docstring).

    `task` "text" chooses among text models at the input recorded under the profile's `text` entry
    (sequence length, classes, vocabulary); None means image, or text when the profile holds only text.
    `only_specs`: only the `specs` are candidates, measured or predicted; `joint`: the joint rule (`RULES`)."""
    from edgekd.latency.section import latency_section

    _check_budget(budget_ms)  # before any work: NaN compares false with everything
    section = latency_section(profile) if profile is not None else {}
    text = section.get("text") or {}
    if task not in (None, "image", "text"):
        raise ConfigError(f"task {task!r} is not one of image, text")
    if task is None and text and not section.get("input_shape"):
        task = "text"
    if task == "text" and not (input_shape or text.get("input_shape")):
        raise ProfileError("the profile holds no text measurements: run `edgekd deploy --data <text data>` "
                           "(or bench a text model) on the device first, or pass the input shape")
    base = text if task == "text" else section
    shape = tuple(input_shape or base.get("input_shape") or ())
    classes = int(num_classes or base.get("num_classes") or 0)
    if not shape or not classes:
        raise ProfileError("no input shape known for prediction: run `edgekd profile calibrate` for this device, "
                           "or pass the input shape")
    candidates, models = gather_candidates(
        profile, input_shape=shape, num_classes=classes, formats=formats, precisions=precisions, threads=threads,
        batch=batch, target=target, dataset_fingerprint=dataset_fingerprint, percentile=percentile, specs=specs,
        vocab=text.get("vocab") if task == "text" else None, accelerator=accelerator, only_specs=only_specs)
    if not candidates:
        where = f"profile {getattr(profile, 'path', None) or getattr(profile, 'name', '')}" if profile is not None else "no profile"
        stale = stale_models(profile) if profile is not None else []
        why = (f" (its {', '.join(stale)} measured INT8 artifacts of another quantization recipe than this device's "
               "exports now)" if stale else "")
        raise ProfileError(f"{where} has no measurement and no latency model for the requested formats/precisions{why}; "
                           "run `edgekd profile calibrate` (or `edgekd bench`) on the device first")
    chosen, closest = apply_rule(candidates, budget_ms=budget_ms, min_accuracy=min_accuracy,
                                 allow_unmeasured_accuracy=allow_unmeasured_accuracy, joint=joint)
    return Selection(
        budget_ms=budget_ms, percentile=int(percentile), min_accuracy=min_accuracy, chosen=chosen,
        candidates=candidates, closest_miss=closest,
        models={k: {"label": m.label, "kind": m.kind, "n_samples": m.n_samples, "cv": m.cv} for k, m in models.items()},
        profile=str(getattr(profile, "path", None) or getattr(profile, "name", "")) if profile is not None else None,
        input_shape=list(shape), joint=joint, stale_models=stale_models(profile) if profile is not None else [],
    )
