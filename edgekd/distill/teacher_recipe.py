"""The teacher recipe: the DistillConfig `edgekd teacher`, `edgekd.api.train_teacher` and deploy's
default teacher run — cross-entropy on labels, no augmentation, early stop on val accuracy, keep the
best-on-val weights. The default family is `edgekd.models.DEFAULT_TEACHER` (images) or the default
BERT-style text teacher for text data. No torch at import.
"""
from __future__ import annotations

from edgekd.config import DistillConfig, config_from_dict


def teacher_config(
    *,
    data: str = "digits",
    image_size: int | None = None,
    arch: str | None = None,
    epochs: int = 30,
    patience: int = 6,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    threads: int = 0,
    output: str = "runs/teacher",
    max_len: int | None = None,
    tokenizer: str | None = None,
) -> DistillConfig:
    """The config `edgekd teacher` runs: cross-entropy on labels, early stop on val accuracy."""
    from edgekd.data import source_task
    from edgekd.models import default_specs

    default_arch = default_specs(source_task(str(data)))[0]  # text data (reviews, .csv, .jsonl): a BERT-style teacher

    return config_from_dict({
        "role": "teacher",
        "student": arch or default_arch,
        "teacher": None,
        "data": {"source": data, "image_size": image_size, "max_len": max_len, "tokenizer": tokenizer},
        "losses": [{"key": "ce"}],
        "augment": {"shift": 0, "copies": 0, "draws": 0},  # the teacher recipe: no augmentation
        "train": {"epochs": epochs, "patience": patience, "seed": seed, "lr": lr, "batch_size": batch_size,
                  "keep": "best", "threads": threads},
        "output": output,
    })
