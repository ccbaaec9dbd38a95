"""Compression passes run after distillation, each followed by KD fine-tuning.

`PASSES` (from `edgekd.compress.passes`) maps a pass name to its `CompressionPass` class; a class
registers itself when its module is imported, and this package imports every pass module below.
Each pass declares its fields (type, range, default, help) and ``run(model, data, cfg) ->
PassResult(model, surgery records, details)``; the surgery records rebuild the new structure on load
(`edgekd.models.surgery` owns the ops). Registered passes:

- ``prune``   — structured channel pruning (`prune.Prune`; ``ratio``);
- ``lowrank`` — truncated-SVD factorization of Linear/Conv2d (`lowrank.LowRank`; ``energy`` or
  ``ratio``, ``min_reduction``, ``exclude``).

A new pass: one module here with one `CompressionPass` subclass, imported below — `edgekd compress`
(``--pass NAME:FIELD=VALUE``, ``--help``), its YAML, and deploy's ``compress:`` list take it from
the registry. If it edits structure in a way no existing surgery op records, add the op to
`edgekd.models.surgery` (the checkpoint format lives with the models).

INT8 quantization is not a pass here: each target's own toolchain does it at export, where it is
calibrated and parity-checked in the runtime that will run it.

A chain is configured as ``[{pass: prune, ratio: 0.5}, {pass: lowrank, energy: 0.9}]`` and run by
`edgekd.compress.pipeline.run_compression`.
"""
from __future__ import annotations

from edgekd.compress.passes import PASSES, CompressionPass, Field, PassData, PassEntry, PassResult

# every pass module: importing it registers its pass
from edgekd.compress import lowrank, prune  # noqa: E402,F401  (isort: after the registry)
from edgekd.compress.lowrank import lowrank_pass  # noqa: E402
from edgekd.compress.prune import prune_pass  # noqa: E402

__all__ = ["PASSES", "CompressionPass", "Field", "PassData", "PassEntry", "PassResult", "lowrank_pass", "prune_pass"]
