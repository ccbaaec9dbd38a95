"""Text classification: CSV/JSONL data and a built-in task, WordPiece tokenizers, BERT-style teacher
and student families (`bert`, `tinybert`, registered in `edgekd.models.MODELS` with task="text"),
Hugging Face teachers from a local directory, and the text side of export.

Sub-modules import torch / tokenizers; import them explicitly (`from edgekd.text.data import ...`).
"""
from __future__ import annotations
