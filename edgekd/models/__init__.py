"""Student and teacher model families, built from spec strings (host side: imports torch).

    >>> from edgekd.models import create_model, count_params
    >>> model = create_model("cnn:width=8,depth=2", (1, 8, 8), 10)

Families (registry `MODELS`, one file each): ``mlp``, ``cnn``, ``mobilenet`` (students) and
``resnet`` (teacher) at micro scale; ``mobilenetv2``, ``mobilenetv3``, ``efficientnet_lite`` and
``resnet_basic`` at ImageNet scale (``scale="real"``, input resolution part of the spec);
``tinybert`` (student) and ``bert`` (teacher) for text (`bert.py`, with `bert_init.py` and
`hf_bert.py`). `import edgekd` does not import this package; only host-side code does.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from edgekd.errors import ConfigError

# the family modules register themselves in MODELS on import
from edgekd.models import bert, cnn, mlp, mobilenet, resnet  # noqa: F401  (bert, tinybert: task="text")
from edgekd.models import efficientnet_lite, mobilenetv2, mobilenetv3, resnet_basic  # noqa: F401  (scale "real")
from edgekd.models import surgery
from edgekd.models.checkpoint import ModelInfo, load_model, read_checkpoint, save_model
from edgekd.models.counting import count_macs, count_params, model_features
from edgekd.models.spec import (MODELS, ModelFamily, canonical_spec, create_model, format_spec, parse_spec,
                                register_family, spec_input_shape)

# The default pair: the student has ~1/35 of the teacher's parameters (8.9k vs 308k, at any input size).
# Depth 4 at width 6 rather than the earlier depth 3 at width 8: at 28-32 px `cnn` strides one block
# fewer than it has (`stride_plan`), so depth 4 keeps its first conv at full resolution where depth 3
# strided the stem. On mnist10k (3 seeds, scripts/bench_distill.py, docs/MEASUREMENTS.md "Distillation
# defaults") CE alone rose 1.5 pt (97.24 -> 98.71 % test) for +41 % parameters and +8 % MACs, and it is
# the first student that gains from the teacher by more than half the gap; the 6.3k depth-3 net was
# capacity-limited.
DEFAULT_TEACHER = canonical_spec("resnet")
DEFAULT_STUDENT = canonical_spec("cnn:width=6,depth=4")

#: the default (teacher, student) specs per task of the data (`Dataset.task`, `edgekd.data.source_task`):
#: what `edgekd teacher`, `edgekd distill` and `edgekd deploy` use when no model is named
DEFAULT_SPECS: dict[str, tuple[str, str]] = {
    "image": (DEFAULT_TEACHER, DEFAULT_STUDENT),
    "text": (bert.DEFAULT_TEXT_TEACHER, bert.DEFAULT_TEXT_STUDENT),
}


def default_specs(task: str) -> tuple[str, str]:
    """(teacher spec, student spec) used for data of `task` when none is named; ConfigError for an unknown task."""
    if task not in DEFAULT_SPECS:
        raise ConfigError(f"no default models for task {task!r}; use one of {', '.join(DEFAULT_SPECS)} or name the models")
    return DEFAULT_SPECS[task]


def create_for_dataset(spec: str, dataset: Any) -> tuple[nn.Module, str]:
    """Build `spec` for a loaded Dataset; returns the model and the spec to record in its checkpoint.

    A family that declares `for_dataset` builds itself (text families take their vocabulary size and
    pad id from the dataset's tokenizer, so the returned spec is completed with ``vocab=N``); image
    families are built as `create_model` at the dataset's input shape.
    """
    family = MODELS.get(parse_spec(spec)[0])
    if family.for_dataset is not None:  # the family sizes itself from the data (text: the tokenizer)
        return family.for_dataset(spec, dataset)
    return create_model(spec, tuple(dataset.input_shape), dataset.num_classes), spec


def describe_families(input_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10,
                      names: list[str] | tuple[str, ...] | None = None) -> list[dict]:
    """Every family with role, task, scale, defaults, doc and, per spec of its search space, params,
    MACs and the input it takes (`input_shape`, or the spec's own resolution) for `num_classes`
    (what `edgekd models` prints); `names`: only these families. Models are built on the meta device: shapes only, no weights, so
    listing ImageNet-scale families costs no memory and little time."""
    import torch

    rows = []
    for name, family in MODELS.items():
        if names and name not in names:  # only the families asked for are built and counted
            continue
        specs = []
        for spec in family.search_space():
            if family.describe is not None:  # sized by something other than the image (text: vocabulary, length)
                specs.append(family.describe(spec, num_classes))
                continue
            shape = spec_input_shape(spec, tuple(input_shape))
            with torch.device("meta"):
                model = create_model(spec, input_shape, num_classes)
            specs.append({"spec": spec, "params": count_params(model), "macs": count_macs(model, shape),
                          "input_shape": list(shape)})
        rows.append({
            "name": name,
            "role": family.role,
            "task": family.task,
            "scale": family.scale,
            "defaults": dict(family.defaults),
            "default_spec": family.default_spec,
            "doc": " ".join((family.doc or "").split()),
            "search_space": specs,
        })
    return rows


__all__ = [
    "DEFAULT_SPECS",
    "DEFAULT_STUDENT",
    "DEFAULT_TEACHER",
    "MODELS",
    "ModelFamily",
    "ModelInfo",
    "canonical_spec",
    "count_macs",
    "count_params",
    "create_for_dataset",
    "create_model",
    "default_specs",
    "describe_families",
    "format_spec",
    "load_model",
    "model_features",
    "parse_spec",
    "read_checkpoint",
    "register_family",
    "save_model",
    "spec_input_shape",
    "surgery",
]
