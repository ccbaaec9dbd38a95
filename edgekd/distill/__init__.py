"""Distillation engine: teachers, the soft-target cache, registered losses, feature taps, trainer.

The three steps of the articles: train (or bring) a teacher -> compute its soft targets once
(`cache.SoftTargetCache`) -> train students on them (`trainer`, driven by `run.run_training`).
Sub-modules import torch; import them explicitly (`from edgekd.distill.losses import LOSSES`).
"""
from __future__ import annotations

# `losses.py` holds the LOSSES registry and the classic losses; these modules add theirs to it on import,
# so importing anything under edgekd.distill (which runs this file first) sees every loss
from edgekd.distill import logit_losses  # noqa: E402,F401  (dkd, dist)
from edgekd.distill import text_losses  # noqa: E402,F401  (hidden_align, attention_align)
