"""Bring your own family: a user's PyTorch model builder joins the `MODELS` registry like a built-in.

    edgekd models  --family my_pkg.my_models:build --family-grid grid.yaml
    edgekd distill --family my_pkg.my_models:build --family-grid grid.yaml --student my_models:width=0.5

`my_pkg.my_models:build` is ``module:function`` (importable from the current directory or
PYTHONPATH). The function returns an ``nn.Module`` mapping N x C x H x W images to N x classes logits;
it is called with the spec's keyword arguments, plus ``num_classes``, ``in_channels`` and
``input_shape`` (C, H, W) for those of the three its signature takes.

The grid file (YAML, `yaml.safe_load`) is either a mapping ``key: [values...]`` or::

    name: my_models          # the family's name in specs (default: the module's last part)
    grid: {width: [0.5, 1.0], resolution: [96, 128]}

Every combination of the grid is one spec of the family's search space, ordered by parameters
(then resolution; ``resolution`` works as in the built-in families). Defaults come from the
builder's signature (else the first grid value). The family is registered with ``scale="real"``,
so it is chosen only when asked for. Failures are one ConfigError line (exit 2): the import, the
builder raising or returning something else, logits of the wrong shape, or a model that the ONNX
exporter refuses (`check_user_family` exports the smallest spec once, before any training).

Checkpoints of such a family record the builder in ``meta["user_family"]``; loading one needs the
family registered again (`--family`): edgekd never imports code that a file names.
"""
from __future__ import annotations

import importlib
import inspect
import itertools
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from edgekd.errors import ConfigError
from edgekd.models.spec import MODELS, ModelFamily, format_spec, spec_input_shape

_REF_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PASSED = ("num_classes", "in_channels", "input_shape")  # filled in by edgekd when the builder takes them
MAX_GRID = 64


def is_builder_ref(value: str) -> bool:
    """Whether `value` reads as ``module.path:function`` (not a spec like ``cnn:width=8``)."""
    return bool(_REF_RE.match(str(value).strip()))


def load_grid(grid: str | Path | Mapping[str, Any] | None) -> tuple[str | None, dict[str, list[Any]]]:
    """(name or None, grid) from a YAML file path or a mapping; ConfigError naming the file otherwise."""
    if grid is None:
        return None, {}
    where = "the family grid"
    if isinstance(grid, (str, Path)):
        import yaml

        path = Path(grid)
        where = str(path)
        if not path.is_file():
            raise ConfigError(f"family grid {path} does not exist; pass a YAML file of key: [values]")
        try:
            grid = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            first = (str(err).strip().splitlines() or [""])[0]
            raise ConfigError(f"family grid {path} is not readable YAML ({first}); write key: [values]") from None
    if not isinstance(grid, Mapping):
        raise ConfigError(f"{where}: expected a mapping of key: [values] (or name: / grid:), got {type(grid).__name__}")
    name = grid.get("name") if "grid" in grid else None
    body = grid.get("grid") if "grid" in grid else grid
    if not isinstance(body, Mapping) or not body:
        raise ConfigError(f"{where}: the grid must map each builder argument to a list of values")
    out: dict[str, list[Any]] = {}
    for key, values in body.items():
        values = values if isinstance(values, list) else [values]
        if not isinstance(key, str) or not _NAME_RE.match(key) or key in PASSED:
            raise ConfigError(f"{where}: {key!r} is not a usable argument name (lowercase; not {', '.join(PASSED)})")
        if not values or not all(isinstance(v, (bool, int, float, str)) for v in values):
            raise ConfigError(f"{where}: {key} needs a list of numbers, booleans or words, got {values!r}")
        out[key] = list(dict.fromkeys(values))
    if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
        raise ConfigError(f"{where}: name {name!r} must be a plain lowercase name like my_models")
    return name, out


def import_builder(ref: str) -> Callable[..., Any]:
    """The function ``module:function`` names; ConfigError (one line, what to do) when it cannot be had."""
    ref = str(ref).strip()
    if not is_builder_ref(ref):
        raise ConfigError(f"--family {ref!r} is not module:function (e.g. my_pkg.my_models:build)")
    module_name, attr = ref.split(":")
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:
        # the `edgekd` console script, unlike `python -m edgekd`, does not put the current directory
        # on sys.path; appended last, so it never shadows an installed package
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure of user code is one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ConfigError(f"cannot import {module_name} for family builder {ref} ({type(err).__name__}: {first}); "
                          "run from the directory that holds it or add it to PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"family builder {ref}: {module_name} has no function {attr!r}")
    return fn


def _defaults(fn: Callable[..., Any], grid: dict[str, list[Any]], ref: str) -> dict[str, Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    defaults: dict[str, Any] = {}
    for key, values in grid.items():
        if key != "resolution" and params and key not in params and not takes_kwargs:
            raise ConfigError(f"family builder {ref} takes no argument {key!r} (grid key); "
                              f"its arguments: {', '.join(params) or 'none'}")
        default = params[key].default if key in params else inspect.Parameter.empty
        defaults[key] = values[0] if default is inspect.Parameter.empty or default is None else default
        kinds = {type(v) for v in [defaults[key], *values]}
        if kinds == {int, float}:  # a float default with integer grid values: all floats
            defaults[key] = float(defaults[key])
    if "resolution" in grid and not isinstance(defaults["resolution"], int):
        raise ConfigError(f"family builder {ref}: resolution values must be integers (pixels)")
    defaults.setdefault("resolution", 0)
    return defaults


def _wrap(fn: Callable[..., Any], ref: str, name: str) -> Callable[..., Any]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}

    def build(input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> Any:
        from torch import nn

        call = dict(kwargs)
        passed = {"num_classes": int(num_classes), "in_channels": int(input_shape[0]),
                  "input_shape": tuple(int(d) for d in input_shape)}
        call.update({k: v for k, v in passed.items() if k in params})
        try:
            model = fn(**call)
        except Exception as err:  # noqa: BLE001 - the user's builder failing is one line
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"family {name!r}: builder {ref} raised {type(err).__name__}: {first} "
                              f"(for {format_spec(name, kwargs)})") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"family {name!r}: builder {ref} returned {type(model).__name__}, not a torch nn.Module")
        return model

    build.__doc__ = (fn.__doc__ or "").strip() or f"user family built by {ref}"
    return build


def register_user_family(ref: str, grid: str | Path | Mapping[str, Any] | None = None,
                         name: str | None = None) -> str:
    """Register the builder `ref` (``module:function``) with its `grid` as a student family; returns
    its name. Registering the same builder and grid again is a no-op; another family of that name is
    a ConfigError."""
    grid_name, values = load_grid(grid)
    fn = import_builder(ref)
    name = name or grid_name or re.sub(r"[^a-z0-9_]", "_", ref.split(":")[0].split(".")[-1].lower())
    if not _NAME_RE.match(name):
        name = "user_" + name.strip("_")
    record = {"builder": ref, "grid": values, "source_sha256": _source_sha256(fn)}
    if name in MODELS.names():
        if getattr(MODELS.get(name), "user_family", None) == record:
            return name
        raise ConfigError(f"family name {name!r} is taken; give the grid file a 'name:' of its own")
    defaults = _defaults(fn, values, ref)
    combos = [dict(zip(values, combo)) for combo in itertools.product(*values.values())] if values else [{}]
    if len(combos) > MAX_GRID:
        raise ConfigError(f"the family grid has {len(combos)} combinations; keep it to {MAX_GRID} or fewer")
    family = ModelFamily(name=name, role="student", task="image", defaults=defaults, builder=_wrap(fn, ref, name),
                         doc=(fn.__doc__ or "").strip() or f"user family built by {ref}", scale="real")
    # the search space from small to large: parameters (built on the meta device: no weights, no
    # forward, so no assumption about the data's channels), then resolution
    combos.sort(key=lambda c: (_params(family, {**defaults, **c}), family.resolve(c).get("resolution", 0)))
    object.__setattr__(family, "space", tuple(format_spec(name, family.resolve(c)) for c in combos))
    object.__setattr__(family, "user_family", record)
    MODELS.add(name, family)
    return name


def unregister_user_family(name: str) -> None:
    """Remove the user family `name` (registered by `register_user_family`), e.g. to register an edited
    builder under the same name again. Built-in families cannot be removed (ConfigError)."""
    family = MODELS.get(name)
    if getattr(family, "user_family", None) is None:
        raise ConfigError(f"{name!r} is a built-in family; only families registered with --family / "
                          "register_family can be unregistered")
    MODELS.remove(name)


def _source_sha256(fn: Callable[..., Any]) -> str | None:
    """sha256 of the file that defines the builder (None when it has none): a deploy's cache of
    distilled students is keyed by it, so an edited builder is distilled anew."""
    import hashlib

    try:
        return hashlib.sha256(Path(inspect.getsourcefile(fn) or "").read_bytes()).hexdigest()
    except (OSError, TypeError):
        return None


def _params(family: ModelFamily, kwargs: dict[str, Any]) -> int:
    import torch

    from edgekd.models.counting import count_params

    try:
        with torch.device("meta"):
            return count_params(family.build((3, 32, 32), 10, **kwargs))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - e.g. lazy modules, whose parameters do not exist yet
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"family {family.name!r}: cannot count the parameters of {format_spec(family.name, kwargs)} "
                          f"({type(err).__name__}: {first}); build plain modules with known shapes") from None


def user_family_meta(spec: str) -> dict[str, Any]:
    """``{"user_family": {builder, grid}}`` for a spec of a user family (goes into checkpoint meta), else {}."""
    family = MODELS.get(str(spec).split(":")[0].strip())
    record = getattr(family, "user_family", None)
    return {"user_family": dict(record)} if record else {}


def check_user_family(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Build the smallest spec of family `name` at `input_shape`, check it gives (N, num_classes)
    logits, and export it to ONNX once; ConfigError (one line) when any of it fails."""
    import tempfile

    import torch

    from edgekd.models import create_model

    family = MODELS.get(name)
    spec = family.search_space()[0] if family.search_space() else family.default_spec
    shape = spec_input_shape(spec, tuple(input_shape))
    model = create_model(spec, tuple(input_shape), num_classes).eval()
    x = torch.zeros((2, *shape))
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"family {name!r}: {spec} fails on a 2x{'x'.join(map(str, shape))} batch "
                          f"({type(err).__name__}: {first})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, int(num_classes)):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"family {name!r}: {spec} returns {got} for 2 images, expected (2, {num_classes}) logits; "
                          "let the builder take num_classes")
    from edgekd.models.checkpoint import ModelInfo
    from edgekd.runtimes.host import DEFAULT_OPSET, export_onnx

    info = ModelInfo(spec=spec, input_shape=shape, num_classes=int(num_classes))
    import logging

    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # the exporter's warnings (e.g. torchvision ops) are not ours to show
    with tempfile.TemporaryDirectory(prefix="edgekd-family-check-") as tmp:
        try:
            export_onnx(model, info, Path(tmp) / "check.onnx", opset=DEFAULT_OPSET, batch=1, dynamic_batch=False)
        except Exception as err:  # noqa: BLE001 - ExportError or the exporter's own crash
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"family {name!r}: {spec} does not export to ONNX ({first}); "
                              "use operators the ONNX exporter supports") from None
        finally:
            onnx_log.setLevel(level)


def join_user_family(ref: str | None, grid: str | Path | Mapping[str, Any] | None, input_shape: tuple[int, ...],
                     num_classes: int, task: str = "image") -> str | None:
    """Register the builder `ref` with `grid` and check it on data of `input_shape` / `num_classes`
    (`check_user_family`: builds, gives logits, exports to ONNX), for the commands that add it to
    their search space (`profile calibrate`, `select`, `deploy`). Returns the family's name (None
    without `ref`); a ConfigError line before any work when it cannot join (a grid without a
    builder; text data: user families take images)."""
    if not ref:
        if grid:
            raise ConfigError("--family-grid needs --family MODULE:FUNCTION (the builder whose arguments it lists)")
        return None
    if task != "image":
        raise ConfigError(f"--family {ref}: a user family takes images (N x C x H x W), and this data is {task}; "
                          "use image data (--data digits, an .npz or an image folder)")
    name = register_user_family(ref, grid)
    check_user_family(name, tuple(int(d) for d in input_shape), int(num_classes))
    return name
