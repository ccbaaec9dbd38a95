"""Distillation engine: teachers, the soft-target cache, registered losses, feature taps, trainer.

The three steps of the articles: train (or bring) a teacher -> compute its soft targets once
(`cache.SoftTargetCache`) -> train students on them (`trainer`, driven by `run.run_training`).
Sub-modules import torch; import them explicitly (`from edgekd.distill.losses import LOSSES`).
"""
from __future__ import annotations
from edgekd.distill import text_losses  # noqa: E402,F401  (registers hidden_align, attention_align in LOSSES)
