"""The search spaces `edgekd deploy --space` and `edgekd select --space` choose among.

A space is a list of canonical student specs. Named spaces are registered in `SPACES`:

  micro  the default: the micro-scale families (mlp, cnn, mobilenet) at the data's own size, the
         students the default deploy verifies in seconds;
  real   the ImageNet-scale families (mobilenetv2, mobilenetv3, efficientnet_lite, resnet_basic), each
         its registered search space, **input resolution included** (96-260 px: every spec carries
         ``resolution=r``, so the student trains, is tested and runs at r x r whatever the data's
         size, and its resize is recorded in the checkpoint, the artifact's manifest and the bundle).

Anything else given to `--space` is a YAML grid file over built-in families of any scale, one
entry per family, every combination of its values one student::

    mobilenetv2: {width: [0.35, 0.5], resolution: [96, 128]}
    mobilenetv3: {layout: small, width: 0.75, resolution: 96}

so a deploy can search a few real-scale students (or resolutions) instead of all 30. A user's own
builder still joins through `--family` (`edgekd.deploy.user_space`). Every bad name, key or value is
one ConfigError line (exit 2) before any work. Host side, no torch.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from edgekd.errors import ConfigError
from edgekd.registry import Registry

DEFAULT_SPACE = "micro"
MAX_GRID_SPECS = 64  # a grid file's students in all: each may be distilled, keep the search bounded


@dataclass(frozen=True)
class SearchSpace:
    """A named search space: `specs(task, vocab)` lists its students; `help` says what it is."""

    name: str
    help: str
    specs: Callable[[str, int | None], list[str]]
    scale: str  # the `ModelFamily.scale` of its families


def _builtin_scale(scale: str) -> Callable[[str, int | None], list[str]]:
    def specs(task: str, vocab: int | None) -> list[str]:
        from edgekd.latency.search_space import student_families, student_specs
        from edgekd.models.spec import MODELS

        # user families are registered as "real" too; a named space holds the built-in ones only
        names = [n for n in student_families(task, scale) if not getattr(MODELS.get(n), "user_family", None)]
        if not names:
            raise ConfigError(f"--space {scale}: no {scale}-scale student family takes {task} inputs; "
                              f"use --space {DEFAULT_SPACE}")
        return student_specs(task, vocab, families=names)
    return specs


SPACES: Registry[SearchSpace] = Registry("search space")
SPACES.add("micro", SearchSpace("micro", "micro-scale students (mlp, cnn, mobilenet) at the data's size (default)",
                                _builtin_scale("micro"), "micro"))
SPACES.add("real", SearchSpace("real", "ImageNet-scale families (mobilenetv2/v3, efficientnet_lite, resnet_basic) "
                                       "at 96-260 px, resolution part of each spec", _builtin_scale("real"), "real"))


def space_help() -> str:
    """The `--space` help text: the registered names and the grid file."""
    names = "; ".join(f"'{n}': {s.help}" for n, s in SPACES.items())
    return (f"Students to search: {names}; or a YAML grid file (family: {{key: [values]}}, e.g. "
            "mobilenetv2: {width: [0.35, 0.5], resolution: [96, 128]}). Default: micro.")


def space_specs(space: str | None, task: str = "image", vocab: int | None = None) -> list[str]:
    """The canonical specs of `space`: a registered name (None = the default), else a YAML grid file."""
    name = (space or DEFAULT_SPACE).strip()
    if name in SPACES:
        return SPACES.get(name).specs(task, vocab)
    if not Path(name).suffix.lower() in (".yaml", ".yml") and not Path(name).is_file():
        raise ConfigError(f"--space {name!r} is neither a search space ({', '.join(SPACES.names())}) nor a YAML "
                          "grid file (family: {key: [values]})")
    if task != "image":
        raise ConfigError(f"--space {name}: a grid of image families, and this data is {task}; use --space micro")
    return grid_specs(read_grid_file(Path(name)), where=name)


def is_default(space: str | None) -> bool:
    return space is None or space.strip() == DEFAULT_SPACE


def read_grid_file(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ConfigError(f"--space {path} does not exist; pass {', '.join(SPACES.names())} or a YAML grid file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise ConfigError(f"--space {path} is not readable YAML ({first}); write family: {{key: [values]}}") from None


def grid_specs(grid: Any, where: str = "the space grid") -> list[str]:
    """Every combination of each family's grid, as canonical specs (built-in image student families
    only; each value checked by the family), ordered by family then as given."""
    from edgekd.models.spec import MODELS, canonical_spec, format_spec

    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"{where}: expected a mapping of family: {{key: [values]}}, e.g. "
                          "mobilenetv2: {width: [0.35, 0.5], resolution: [96, 128]}")
    out: list[str] = []
    for family, body in grid.items():
        fam = MODELS.get(str(family))  # unknown family: ConfigError listing the valid ones
        if fam.role != "student" or fam.task != "image" or getattr(fam, "user_family", None):
            raise ConfigError(f"{where}: {family} is not a built-in image student family; a user builder joins "
                              "with --family MODULE:FUNCTION")
        body = body if body is not None else {}
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: {family} needs a mapping of key: [values], got {type(body).__name__}")
        keys = [str(k) for k in body]
        for key in keys:
            if key not in fam.defaults:
                raise ConfigError(f"{where}: {family} has no key {key!r}; its keys: {', '.join(sorted(fam.defaults))}")
        values = [v if isinstance(v, list) else [v] for v in body.values()]
        if any(not v for v in values):
            raise ConfigError(f"{where}: {family}: every key needs at least one value")
        for combo in itertools.product(*values):
            spec = format_spec(fam.name, dict(zip(keys, combo)))
            try:
                canon = canonical_spec(spec)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            if canon not in out:
                out.append(canon)
    if len(out) > MAX_GRID_SPECS:
        raise ConfigError(f"{where}: {len(out)} students, more than {MAX_GRID_SPECS}; narrow the grid")
    return out
