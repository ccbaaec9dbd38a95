"""The search space of `edgekd deploy` and `edgekd select` when a user's family joins it
(`--family my_pkg.my_models:build --family-grid grid.yaml`, `edgekd.models.user_family`).

The user's family joins the built-in students rather than replacing them (the issue's "joins the
search space like a built-in family"): deploy's per-family frontier search (`edgekd.deploy.choice`)
bisects the user family's frontier on its own, so its students are distilled and measured as a
built-in family's are, and the smallest student that meets the budget and the floor wins, whichever
family it comes from (a smaller built-in student that passes prunes the user family's larger ones).
`--family-only` searches the user family alone (say, when the device's stack takes only its
operators). Either way the latency model is calibrated on the built-in families *and* the user's
(`deploy_families`), so the teacher and every student are predicted by one model. Host side.
"""
from __future__ import annotations

from typing import Any

from edgekd.errors import ConfigError, ProfileError


def deploy_space(task: str, vocab: int | None, family: str | None, family_grid: Any,
                 input_shape: tuple[int, ...], num_classes: int, only: bool = False,
                 space: str | None = None) -> list[str]:
    """The students of the search space `space` (`edgekd.deploy.spaces`: micro by default, `real`, or
    a grid file) plus, when `family` is given, that user family's (registered and checked on this
    data's shape first: a one-line ConfigError before any work); its students alone when `only`."""
    from edgekd.deploy.spaces import is_default, space_specs
    from edgekd.models.spec import MODELS
    from edgekd.models.user_family import join_user_family

    if only and not is_default(space):
        raise ConfigError(f"--family-only searches the --family alone; drop --space {space} (or --family-only)")
    builtin = space_specs(space, task, vocab)  # text specs carry vocab=N: their size depends on it
    user = join_user_family(family, family_grid, input_shape, num_classes, task)
    if only and not user:
        raise ConfigError("--family-only needs --family MODULE:FUNCTION (the family to search alone)")
    if only:
        return MODELS.get(user).search_space()
    return builtin + [s for s in MODELS.get(user).search_space() if s not in builtin] if user else builtin


def deploy_families(task: str, space: list[str]) -> list[str] | None:
    """The families a deploy calibrates its latency model on: None (the built-in default) when
    `space` holds exactly the micro families, else the families in `space` (calibrated around
    `space` itself: `calibration_specs(space=...)`)."""
    from edgekd.latency.search_space import student_families

    builtin = student_families(task)
    names = list(dict.fromkeys(s.split(":")[0] for s in space))
    if set(names) == set(builtin):
        return None
    return [n for n in builtin if n in names] + [n for n in names if n not in builtin]


def select_specs(profile: Any, family: str | None, family_grid: Any, *, input_shape: tuple[int, ...] | None,
                 num_classes: int | None, task: str | None, space: str | None = None) -> list[str] | None:
    """The specs `edgekd select` predicts: None (its default) without `family` and `space`, else the
    students of `space` (`edgekd.deploy.spaces`) plus the user family's, checked at the profile's
    input shape (the profile's measured students are candidates as ever)."""
    from edgekd.deploy.spaces import is_default, space_specs

    if not family and not family_grid:
        return None if is_default(space) else space_specs(space, task or "image")
    from edgekd.latency.section import latency_section

    section = latency_section(profile) if profile is not None else {}
    shape = tuple(input_shape or section.get("input_shape") or ())
    classes = int(num_classes or section.get("num_classes") or 0)
    if task != "text" and (not shape or not classes):
        raise ProfileError("no image input shape known for the --family students: run `edgekd profile calibrate "
                           "--family ...` for this device first")
    return deploy_space(task or "image", None, family, family_grid, shape, classes, space=space)
