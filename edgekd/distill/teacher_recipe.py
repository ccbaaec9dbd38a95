"""The teacher recipe: the DistillConfig `edgekd teacher`, `edgekd.api.train_teacher` and deploy's
default teacher run — cross-entropy on labels over a whole cosine schedule (early stop only when asked),
keep the best-on-val weights, on the students' per-epoch shifted views (`TEACHER_VIEWS`; `views` 0: the
clean images). The default family is `edgekd.models.DEFAULT_TEACHER` (images) or the default BERT-style
text teacher for text data. No torch at import.
"""
from __future__ import annotations

from edgekd.config import DEFAULT_RECIPE, RECIPES, VIEW_SHIFT_FRACTION, DistillConfig, config_from_dict
from edgekd.errors import ConfigError

#: the teacher trains on the shifted views the default distillation recipe will show the student (one
#: per epoch, as many draws): it has then seen every input it labels (Beyer et al., CVPR 2022: a
#: consistent teacher). Measured on mnist10k: docs/MEASUREMENTS.md "Distillation defaults". A no-op
#: where the recipe's shift rounds to 0 px (digits at its native 8x8) and for text.
TEACHER_VIEWS = int(RECIPES[DEFAULT_RECIPE]["augment"].get("draws", 0))
#: the whole cosine schedule, no early stop (the best-on-val weights are kept anyway): on the views the
#: val accuracy stalls while the learning rate is high and climbs as it decays. The earlier default (30
#: epochs, patience 6) on mnist10k's views was at 98.20 % val after 10 epochs with no gain for 4 (and
#: would have stopped 2 later); 20 full epochs reach 99.60 % val, 99.47 % test (docs/MEASUREMENTS.md,
#: "Distillation defaults")
TEACHER_EPOCHS = 20


def teacher_config(
    *,
    data: str = "digits",
    image_size: int | None = None,
    arch: str | None = None,
    epochs: int = TEACHER_EPOCHS,
    patience: int = 0,
    seed: int = 0,
    lr: float = 3e-3,
    batch_size: int = 64,
    threads: int = 0,
    output: str = "runs/teacher",
    max_len: int | None = None,
    tokenizer: str | None = None,
    views: int = TEACHER_VIEWS,
) -> DistillConfig:
    """The config `edgekd teacher` runs: cross-entropy on labels, early stop on val accuracy when `patience` > 0.
    `views` > 1: epoch e trains on shifted view (e − 1) mod views of the train split, each image shifted
    by up to VIEW_SHIFT_FRACTION of its side — the views the default distillation recipe shows the
    student, so the teacher has seen what it will label (default `TEACHER_VIEWS`). 0 or 1: the clean images."""
    if views < 0:
        raise ConfigError(f"teacher views must be >= 0 (got {views}): 0 trains on the clean images")
    from edgekd.data import source_task
    from edgekd.models import default_specs

    default_arch = default_specs(source_task(str(data)))[0]  # text data (reviews, .csv, .jsonl): a BERT-style teacher

    return config_from_dict({
        "role": "teacher",
        "student": arch or default_arch,
        "teacher": None,
        "data": {"source": data, "image_size": image_size, "max_len": max_len, "tokenizer": tokenizer},
        "losses": [{"key": "ce"}],
        "augment": ({"shift_fraction": VIEW_SHIFT_FRACTION, "draws": views, "copies": 0} if views > 1
                    else {"shift": 0, "copies": 0, "draws": 0}),
        "train": {"epochs": epochs, "patience": patience, "seed": seed, "lr": lr, "batch_size": batch_size,
                  "keep": "best", "threads": threads},
        "output": output,
    })
