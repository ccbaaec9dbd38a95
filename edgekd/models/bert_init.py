"""Student initialization from teacher layers (DistilBERT-style, Sanh et al. 2019).

When the student has the teacher's hidden and intermediate widths, it starts from the teacher's
embeddings, pooler and classifier and from every k-th encoder layer (k = teacher depth / student
depth; student layer i <- teacher layer i*k), instead of from random weights.
"""
from __future__ import annotations

from typing import Any

from edgekd.errors import ConfigError


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher layer index for each student layer: every k-th, starting at 0."""
    if student_layers > teacher_layers:
        raise ConfigError(f"a {student_layers}-layer student cannot be initialised from a {teacher_layers}-layer teacher")
    k = teacher_layers // student_layers
    return [i * k for i in range(student_layers)]


def init_from_teacher(student: Any, teacher: Any) -> list[int]:
    """Copy the teacher's weights into `student` in place; returns the teacher layer used per student layer.

    Both are edgekd text models (`bert`/`tinybert`). ConfigError when widths, vocabulary, position
    table or classes differ (then there is nothing to copy; train the student from scratch)."""
    s, t = student.config, teacher.config
    for key in ("hidden", "intermediate", "vocab", "num_classes"):
        if s[key] != t[key]:
            raise ConfigError(f"cannot initialise the student from the teacher: {key} is {s[key]} vs {t[key]}; "
                              "DistilBERT-style initialisation needs equal widths")
    if s["max_positions"] > t["max_positions"]:
        raise ConfigError(f"student max_len {s['max_positions']} exceeds the teacher's {t['max_positions']}")
    mapping = layer_map(s["layers"], t["layers"])
    t_state = teacher.state_dict()
    new = {}
    for name, value in student.state_dict().items():
        if name.startswith("layers."):
            _, idx, rest = name.split(".", 2)
            source = f"layers.{mapping[int(idx)]}.{rest}"
        else:
            source = name
        src = t_state[source]
        if name == "embeddings.position.weight":
            src = src[: value.shape[0]]
        new[name] = src.detach().clone()
    student.load_state_dict(new, strict=True)
    return mapping
