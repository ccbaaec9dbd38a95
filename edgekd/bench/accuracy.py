"""Accuracy of a deployed model on the runtime it will run on, over the whole evaluation set.

Device side: numpy + stdlib only. The host writes the evaluation set once with `write_eval_npz`
(uploaded once to the agent); `evaluate` runs every sample through the artifact's Runner.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.bench.inputs import EvalData, InputSpec
from edgekd.fileio import atomic_write_with


def evaluate(runner: Any, data: EvalData, specs: list[InputSpec], eval_batch: int = 64) -> dict[str, Any]:
    """Top-1 accuracy of `runner` over every sample of `data`.

    A model with a fixed batch is fed batches of exactly that size (the last one padded and the
    padding ignored); a dynamic-batch model gets `eval_batch` samples per call.
    """
    fixed = specs[0].fixed_batch if specs else None
    step = fixed or eval_batch
    correct = 0
    n = len(data)
    for start in range(0, n, step):
        feed, real = data.batch(start, step, pad_to=fixed)
        logits = np.asarray(runner.run(feed))
        logits = logits.reshape(logits.shape[0], -1)[:real]
        correct += int((logits.argmax(axis=1) == data.y[start : start + real]).sum())
    return {
        "top1": correct / n if n else 0.0,
        "correct": correct,
        "count": n,
        "data_sha256": data.sha256,
    }


def write_eval_npz(path: str | Path, x: np.ndarray, y: np.ndarray, *, normalized: bool = True) -> Path:
    """Write an evaluation set the harness reads (`x`, `y`, `normalized`), atomically."""
    path = Path(path)

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object keeps numpy from appending ".npz" to the temp name
            np.savez(fh, x=np.ascontiguousarray(x), y=np.asarray(y, dtype=np.int64), normalized=np.array(normalized))

    atomic_write_with(path, writer)
    return path
