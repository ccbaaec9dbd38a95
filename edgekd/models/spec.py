"""Model spec strings and the registry of model families.

A spec string names a family and its keyword arguments: ``family:key=value,key=value``.

- ``cnn:width=16,depth=3`` -> ``("cnn", {"width": 16, "depth": 3})``; a bare ``cnn`` uses the defaults.
- Values are parsed as bool (``true``/``false``), int, float, a list or a plain word.
- ``x`` separates list items: ``hidden=256x128`` is ``[256, 128]``. ``AxN`` with ``N <= 8`` and
  ``N < A`` is a repetition: ``hidden=128x2`` is ``[128, 128]`` (so list-valued keys refuse
  items ``<= 8``, which keeps every canonical string unambiguous).

`canonical_spec` writes the family and *all* keyword arguments (defaults filled in), sorted by key,
so two specs that build the same model have the same string; selection, profiles and caches key on it.

Input resolution: an image family whose defaults hold ``resolution`` (an int, 0 = "the data's own
size") takes square inputs of that many pixels, so ``mobilenetv2:resolution=160,width=1.0`` is a
different candidate from the same net at 224 and every cache, profile and selection keyed on the spec
tells them apart. `spec_input_shape(spec, data_shape)` is the input such a model takes; the builder
itself never sees the key (`ModelFamily.build` turns it into the input shape it passes).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from edgekd.errors import ConfigError
from edgekd.registry import Registry

Value = Any  # bool | int | float | str | list[int]

# A repetition count must be small and smaller than the repeated width: "128x2" repeats, "256x128"
# lists. List items of a family are required to exceed this so canonical strings never read back
# as a repetition.
MAX_REPEAT = 8

# the spec key that fixes an image family's input resolution (0 = the data's size)
RESOLUTION_KEY = "resolution"
MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024

_FAMILY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_WORD_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class ModelFamily:
    """One architecture family: a builder plus its defaults and its student search space.

    `name` is the registry key, `role` is ``"student"`` or ``"teacher"``, `task` the kind of input
    (``"image"`` for N x C x H x W float tensors). `defaults` holds every keyword the builder takes;
    its value types define how spec values are checked. `build(input_shape, num_classes, **kw)`
    returns an ``nn.Module`` mapping ``(N, *input_shape)`` to ``(N, num_classes)`` logits.
    `search_space()` lists canonical specs from small to large. Every family exposes its feature
    extractor as the sub-module ``features`` and its last layer as ``classifier`` (FitNets taps).

    A family whose model is not sized by the input shape alone says so itself, so no stage needs a
    branch on the task: `for_dataset(spec, dataset) -> (model, completed spec)` builds it for a loaded
    Dataset (text: vocabulary and pad id from the dataset's tokenizer), and `describe(spec, num_classes)`
    gives the params/MACs row `edgekd models` prints. Both are None for image families, which are
    built and sized from the input shape.
    """

    name: str
    role: str
    task: str
    defaults: dict[str, Value]
    builder: Callable[..., Any]
    space: tuple[str, ...] = ()
    doc: str = ""
    validate: Callable[[dict[str, Value]], None] | None = field(default=None, compare=False)
    for_dataset: Callable[[str, Any], tuple[Any, str]] | None = field(default=None, compare=False)
    describe: Callable[[str, int], dict[str, Any]] | None = field(default=None, compare=False)
    # "micro" families form the default search space (8x8..32x32 students); "real" families are the
    # ImageNet-scale ones (MobileNetV2/V3, EfficientNet-lite, ResNet-18/34) and user families, chosen
    # only when asked for (`edgekd.latency.search_space.student_families(scale=...)`)
    scale: str = "micro"

    def __post_init__(self) -> None:
        if self.role not in ("student", "teacher"):
            raise ValueError(f"model family {self.name!r}: role must be 'student' or 'teacher'")
        if self.scale not in ("micro", "real"):
            raise ValueError(f"model family {self.name!r}: scale must be 'micro' or 'real'")
        object.__setattr__(self, "__doc__", self.doc or self.builder.__doc__ or "")

    def resolve(self, kwargs: dict[str, Value]) -> dict[str, Value]:
        """Defaults overlaid with `kwargs`, each value coerced to the default's type and checked."""
        merged = dict(self.defaults)
        for key, value in kwargs.items():
            if key not in self.defaults:
                raise ConfigError(_unknown_key_message(self, key))
            merged[key] = _coerce(self, key, value)
        if RESOLUTION_KEY in self.defaults:
            res = merged[RESOLUTION_KEY]
            if not isinstance(res, int) or isinstance(res, bool) or not (
                    res == 0 or MIN_RESOLUTION <= res <= MAX_RESOLUTION):
                raise ConfigError(f"model {self.name!r}: resolution={res} must be 0 (the data's size) or "
                                  f"{MIN_RESOLUTION}..{MAX_RESOLUTION} pixels")
        if self.validate is not None:
            self.validate(merged)
        return merged

    def input_shape(self, data_shape: tuple[int, ...], kwargs: dict[str, Value]) -> tuple[int, ...]:
        """The input this family's model takes when the data has `data_shape`: the data's shape, or
        (C, r, r) when the spec fixes ``resolution=r``."""
        shape = tuple(int(d) for d in data_shape)
        res = self.resolve(kwargs).get(RESOLUTION_KEY, 0) if RESOLUTION_KEY in self.defaults else 0
        if res and self.task == "image" and len(shape) == 3:
            return (shape[0], int(res), int(res))
        return shape

    def build(self, input_shape: tuple[int, ...], num_classes: int, **kwargs: Value) -> Any:
        """Build the model. Unknown keys or bad values raise ConfigError."""
        if int(num_classes) < 2:
            raise ConfigError(f"model {self.name!r}: num_classes must be >= 2, got {num_classes}")
        shape = tuple(int(d) for d in input_shape)
        if self.task == "image" and (len(shape) != 3 or min(shape) < 1):
            raise ConfigError(
                f"model {self.name!r}: input_shape must be (channels, height, width), got {input_shape!r}"
            )
        resolved = self.resolve(kwargs)
        if RESOLUTION_KEY in self.defaults:
            shape = self.input_shape(shape, kwargs)
            resolved.pop(RESOLUTION_KEY)
        return self.builder(shape, int(num_classes), **resolved)

    def search_space(self) -> list[str]:
        """Canonical spec strings of this family, ordered from smallest to largest."""
        return [canonical_spec(s) for s in self.space]

    @property
    def default_spec(self) -> str:
        return format_spec(self.name, self.defaults)


MODELS: Registry[ModelFamily] = Registry("model family")


def register_family(
    name: str,
    *,
    role: str,
    defaults: dict[str, Value],
    search_space: list[str],
    task: str = "image",
    validate: Callable[[dict[str, Value]], None] | None = None,
    for_dataset: Callable[[str, Any], tuple[Any, str]] | None = None,
    describe: Callable[[str, int], dict[str, Any]] | None = None,
    scale: str = "micro",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator over a builder ``fn(input_shape, num_classes, **kw) -> nn.Module``; its docstring
    becomes the family's documentation."""

    def add(builder: Callable[..., Any]) -> Callable[..., Any]:
        MODELS.add(
            name,
            ModelFamily(
                name=name,
                role=role,
                task=task,
                defaults=dict(defaults),
                builder=builder,
                space=tuple(search_space),
                doc=builder.__doc__ or "",
                validate=validate,
                for_dataset=for_dataset,
                describe=describe,
                scale=scale,
            ),
        )
        return builder

    return add


def create_model(spec: str, input_shape: tuple[int, ...], num_classes: int) -> Any:
    """Build the model named by `spec` for inputs of `input_shape` (no batch dim) and `num_classes`.

    Raises ConfigError for an unknown family ("did you mean"), an unknown key or a bad value.
    (Defined here, next to the registry, so family modules and checkpoints can build a spec without
    importing the `edgekd.models` package that imports them; `edgekd.models` re-exports it.)
    """
    name, kwargs = parse_spec(spec)
    return MODELS.get(name).build(tuple(input_shape), num_classes, **kwargs)


def parse_spec(spec: str) -> tuple[str, dict[str, Value]]:
    """``"cnn:width=16,depth=3"`` -> ``("cnn", {"width": 16, "depth": 3})``.

    Only the keys written in the spec are returned (coerced to the family's types); the family's
    defaults fill in the rest at build time. Raises ConfigError for bad syntax, an unknown family
    (with "did you mean") or an unknown key (naming the valid keys).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"empty model spec {spec!r}; write e.g. 'cnn:width=16,depth=3'")
    text = spec.strip()
    name, colon, rest = text.partition(":")
    name = name.strip()
    if not _FAMILY_RE.match(name):
        raise ConfigError(f"bad model spec {spec!r}: family name {name!r} is not a plain lowercase name")
    family = MODELS.get(name)
    kwargs: dict[str, Value] = {}
    if rest.strip():
        for item in rest.split(","):
            key, sep, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not sep or not key or not raw:
                raise ConfigError(
                    f"bad model spec {spec!r}: {item.strip()!r} is not key=value; "
                    f"write e.g. '{family.default_spec}'"
                )
            if not _KEY_RE.match(key):
                raise ConfigError(f"bad model spec {spec!r}: {key!r} is not a valid key name")
            if key in kwargs:
                raise ConfigError(f"bad model spec {spec!r}: key {key!r} is given twice")
            if key not in family.defaults:
                raise ConfigError(_unknown_key_message(family, key, spec))
            kwargs[key] = _coerce(family, key, parse_value(raw, spec=spec, key=key))
    elif colon:
        raise ConfigError(f"bad model spec {spec!r}: nothing after ':'; write '{name}' or '{family.default_spec}'")
    return name, kwargs


def canonical_spec(spec: str) -> str:
    """The one spelling of `spec`: family plus every keyword (defaults filled in), sorted by key.

    Values are checked the same way `build` checks them, so a canonical spec always builds.
    """
    name, kwargs = parse_spec(spec)
    return format_spec(name, MODELS.get(name).resolve(kwargs))


def spec_input_shape(spec: str, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The input shape (no batch dim) the model of `spec` takes when the data has `data_shape`:
    ``(C, r, r)`` for a spec with ``resolution=r``, else `data_shape` unchanged. Count MACs, compute
    latency features and resample data at this shape."""
    name, kwargs = parse_spec(spec)
    return MODELS.get(name).input_shape(tuple(data_shape), kwargs)


def format_spec(name: str, kwargs: dict[str, Value]) -> str:
    """Write ``family:key=value,...`` with keys sorted; the inverse of `parse_spec`."""
    if not kwargs:
        return name
    return name + ":" + ",".join(f"{k}={format_value(kwargs[k])}" for k in sorted(kwargs))


def format_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(float(value))
    return str(value)


def parse_value(raw: str, *, spec: str = "", key: str = "") -> Value:
    """One spec value: bool, int, float, ``x``-separated int list (``AxN`` repeats) or a word."""
    low = raw.lower()
    if low in ("true", "false"):
        return low == "true"
    if "x" in low and not _WORD_RE.match(raw):
        parts = low.split("x")
        if not all(p.isdigit() for p in parts):
            raise ConfigError(
                f"bad model spec {spec!r}: {key}={raw!r} is not a list of integers like 256x128 or 128x2"
            )
        items = [int(p) for p in parts]
        if len(items) == 2 and 1 <= items[1] <= MAX_REPEAT and items[1] < items[0]:
            return [items[0]] * items[1]
        return items
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    if _WORD_RE.match(raw):
        return raw
    raise ConfigError(f"bad model spec {spec!r}: cannot read value {key}={raw!r}")


def _coerce(family: ModelFamily, key: str, value: Value) -> Value:
    """Bring `value` to the type of the family's default for `key`, or raise ConfigError."""
    default = family.defaults[key]
    where = f"model {family.name!r}: {key}={format_value(value) if not isinstance(value, str) else value}"
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where} must be an integer")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number")
    if isinstance(default, (list, tuple)):
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{where} must be a list of integers like 256x128 or 128x2")
        if any(v <= MAX_REPEAT for v in value):
            raise ConfigError(
                f"{where}: every item must be > {MAX_REPEAT} (a trailing 'xN' with N <= {MAX_REPEAT} means repeat)"
            )
        return list(value)
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a word")
    return value


def _unknown_key_message(family: ModelFamily, key: str, spec: str | None = None) -> str:
    valid = ", ".join(f"{k} (default {format_value(v)})" for k, v in sorted(family.defaults.items()))
    where = f"bad model spec {spec!r}: " if spec else ""
    return f"{where}unknown key {key!r} for model family {family.name!r}; valid keys: {valid}"
