"""The compression-pass registry and the chain config that `edgekd compress` and `edgekd deploy` share.

A pass is a subclass of `CompressionPass` that sets a `name` and declares its `fields`; defining the
class registers it in `PASSES` (`__init_subclass__`), so a new pass is one class in one module that
`edgekd/compress/__init__.py` imports — the CLI (`compress --help`, `--pass`), the YAML config,
`edgekd.compress.pipeline` and deploy's `compress:` list all take it from the registry:

    class Prune(CompressionPass):
        \"\"\"Structured channel pruning ...\"\"\"          # first line: the help text
        name = "prune"
        fields = (Field("ratio", float, 0.5, "share of channels removed", low=0, high=1, high_open=True),)

        def run(self, model, data, cfg):                    # cfg: every field, checked, defaults filled
            ...edit model in place...
            return PassResult(model, records=[surgery record, ...], details={...JSON...})

A chain is an ordered list, one mapping per pass, its fields next to its name (YAML):

    passes:                      # `edgekd compress --config`; deploy's key is `compress:`
      - {pass: prune, ratio: 0.5}
      - {pass: lowrank, energy: 0.9, exclude: [classifier]}

The CLI shorthand of one entry is ``NAME[:FIELD=VALUE[,FIELD=VALUE...]]`` (values read as YAML
scalars/lists: ``lowrank:ratio=0.5,exclude=[classifier]``); a bare name takes every default. The
older layout ``{key: prune, kwargs: {ratio: 0.5}}`` is still read. An unknown pass, an unknown field
or a value of the wrong type or out of range is a one-line ConfigError that names the valid ones.

This module itself imports no torch (the pass modules the package imports do, so importing it
through `edgekd.compress` loads torch; `--help` reads it only when the help is shown).
"""
from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import yaml

from edgekd.errors import ConfigError
from edgekd.registry import Registry

_TYPE_NAMES = {float: "number", int: "integer", bool: "true/false", str: "string", list: "list"}


@dataclass(frozen=True)
class Field:
    """One declared option of a pass: its type, range, default and one line of help.

    `kind` is float, int, bool, str or list (`item` the type of a list's items); an int is accepted
    for a float field. `low`/`high` bound numbers (`*_open`: the bound itself is excluded);
    `nullable` allows None (``null`` in YAML), which the pass then interprets (say so in `help`)."""

    name: str
    kind: type
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False
    item: type | None = None

    def range_text(self) -> str:
        if self.low is None and self.high is None:
            return ""
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{'(' if self.low_open or self.low is None else '['}{lo}, {hi}{')' if self.high_open or self.high is None else ']'}"

    def type_text(self) -> str:
        text = _TYPE_NAMES.get(self.kind, self.kind.__name__)
        if self.kind is list and self.item is not None:
            text = f"list of {_TYPE_NAMES.get(self.item, self.item.__name__)}s"
        rng = self.range_text()
        text = f"{text} in {rng}" if rng else text
        return f"{text} or null" if self.nullable else text

    def describe(self) -> str:
        """``ratio (number in [0, 1), default 0.5): share of channels removed`` — for --help."""
        default = "null" if self.default is None else json.dumps(self.default)
        return f"{self.name} ({self.type_text()}, default {default}): {self.help}"

    def check(self, value: Any, where: str) -> Any:
        """The value if it fits (an int for a float field becomes a float), else ConfigError."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{where}: {self.name} must be a {self.type_text()} ({self.help}), got null")
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, self.kind) and not (self.kind is not bool and isinstance(value, bool))
        if ok and self.kind is list and self.item is not None:
            ok = all(isinstance(v, self.item) for v in value)
        if ok and self.kind in (int, float):
            ok = value == value and (self.low is None or (value > self.low if self.low_open else value >= self.low)) \
                and (self.high is None or (value < self.high if self.high_open else value <= self.high))
        if not ok:
            raise ConfigError(f"{where}: {self.name} must be a {self.type_text()} ({self.help}), got {value!r}")
        return list(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class PassData:
    """What a pass may look at besides the model: `example`, a small batch of training inputs (a
    tensor, for tracing), and `dataset` (the loaded `edgekd.data` dataset) for passes that calibrate."""

    example: Any
    dataset: Any = None


@dataclass
class PassResult:
    """A pass's output: the model (usually the same object, edited in place), the surgery records
    that rebuild its new structure on load (`edgekd.models.surgery`), and a JSON-able report."""

    model: Any
    records: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


PASSES: Registry[type["CompressionPass"]] = Registry("compression pass")


class CompressionPass:
    """Base of every pass; a subclass with a `name` registers itself in `PASSES`.

    Subclasses set `name` and `fields`, implement `run`, and may override `check` for rules between
    fields. The class docstring's first line is the pass's help."""

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[Field, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:  # a base without a name (an abstract helper) is not a pass
            names = [f.name for f in cls.fields]
            if len(set(names)) != len(names) or "pass" in names:
                raise ValueError(f"pass {cls.name!r}: field names must be unique and not 'pass': {names}")
            PASSES.add(cls.name, cls)

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def config(cls, options: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Every field of this pass: `options` checked (unknown field, type, range, `check`) over the
        defaults. Raises ConfigError with one line naming the valid fields."""
        where = where or f"compression pass {cls.name!r}"
        if not isinstance(options, Mapping):
            raise ConfigError(f"{where}: options must be a mapping like {{{cls.fields[0].name if cls.fields else 'x'}: ...}}, "
                              f"got {options!r}")
        declared = {f.name: f for f in cls.fields}
        for key in options:
            if key not in declared:
                close = difflib.get_close_matches(str(key), list(declared), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"{where}: unknown field {key!r}.{hint} Valid fields of {cls.name}: "
                                  f"{', '.join(declared) or '(none)'}")
        cfg = {name: f.check(options[name], where) if name in options else f.default for name, f in declared.items()}
        return cls.check(cfg, where)

    @classmethod
    def check(cls, cfg: dict[str, Any], where: str) -> dict[str, Any]:
        """Rules between fields (override); returns the config, normalized if need be."""
        return cfg

    def run(self, model: Any, data: PassData, cfg: dict[str, Any]) -> PassResult:
        """Compress `model` (in place or not) with the complete config `cfg` from `config`."""
        raise NotImplementedError


@dataclass(frozen=True)
class PassEntry:
    """One pass of a chain: the registered pass `name` and the `options` given (checked; defaults
    are not written in, so the saved config says what the user chose)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def pass_class(self) -> type[CompressionPass]:
        return PASSES.get(self.name)

    def config(self) -> dict[str, Any]:
        """Every field, defaults filled (what `run` gets)."""
        return self.pass_class.config(self.options)

    def as_dict(self) -> dict[str, Any]:
        """The YAML layout: ``{pass: prune, ratio: 0.5}``."""
        return {"pass": self.name, **self.options}


def parse_pass_spec(text: str, where: str = "--pass") -> dict[str, Any]:
    """The CLI shorthand ``NAME[:FIELD=VALUE,...]`` -> ``{pass: NAME, FIELD: VALUE, ...}`` (values are
    YAML: numbers, true/false, null, [a, b]; commas inside brackets do not split)."""
    name, _, rest = str(text).partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"{where} {text!r}: start with a pass name ({', '.join(PASSES.names())}), "
                          f"e.g. prune:ratio=0.5")
    entry: dict[str, Any] = {"pass": name}
    for part in _split_top_level(rest):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{where} {text!r}: {part!r} is not FIELD=VALUE (e.g. {name}:ratio=0.5)")
        try:
            entry[key.strip()] = _number_or_self(yaml.safe_load(value)) if value.strip() else None
        except yaml.YAMLError:
            raise ConfigError(f"{where} {text!r}: cannot read the value of {key.strip()!r}: {value!r}") from None
    return entry


def _number_or_self(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; on the command line it means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def parse_entry(item: Any, where: str) -> PassEntry:
    """One chain item: ``{pass: NAME, field: value...}``, ``"NAME[:field=value,...]"``, a PassEntry,
    or the older ``{key: NAME, kwargs: {...}}`` -> a checked PassEntry."""
    if isinstance(item, PassEntry):
        item = item.as_dict()
    if isinstance(item, str):
        item = parse_pass_spec(item, where)
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: each pass is a mapping like {{pass: prune, ratio: 0.5}} or a name, got {item!r}")
    if "pass" not in item and "key" in item:  # the older layout
        extra = set(item) - {"key", "kwargs"}
        if extra:
            raise ConfigError(f"{where}: unknown key {sorted(extra)[0]!r}; write a pass as {{pass: NAME, FIELD: VALUE}}")
        kwargs = item.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"{where}: kwargs must be a mapping like {{ratio: 0.5}}, got {kwargs!r}")
        item = {"pass": item["key"], **kwargs}
    name = item.get("pass")
    if not isinstance(name, str):
        raise ConfigError(f"{where}: each pass needs 'pass: NAME' (one of {', '.join(PASSES.names())}), got {dict(item)!r}")
    if name not in PASSES:
        raise ConfigError(f"{where}: {PASSES.unknown_message(name)}")
    options = {k: v for k, v in item.items() if k != "pass"}
    cls = PASSES.get(name)
    cls.config(options, f"{where} ({name})")
    # keep the given options, with ints of float fields as floats (what config() checked)
    kinds = {f.name: f.kind for f in cls.fields}
    options = {k: float(v) if kinds[k] is float and isinstance(v, int) and not isinstance(v, bool) else v
               for k, v in options.items()}
    return PassEntry(name, options)


def parse_chain(raw: Any, where: str = "passes", *, allow_empty: bool = False) -> list[PassEntry]:
    """An ordered chain (a list of items, or one item) -> checked PassEntry list."""
    if raw is None:
        raw = []
    if isinstance(raw, (str, Mapping, PassEntry)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or (not raw and not allow_empty):
        raise ConfigError(f"{where}: give at least one pass, e.g. [{{pass: prune, ratio: 0.5}}]; "
                          f"passes: {', '.join(PASSES.names())}")
    return [parse_entry(item, f"{where}[{i}]") for i, item in enumerate(raw)]


def _slug_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(_slug_value(v) for v in value)
    return str(value).lower() if value is None or isinstance(value, bool) else str(value)


def chain_slug(chain: list[PassEntry]) -> str:
    """A readable file-name part naming the chain: ``prune0.5``, ``prune0.5-lowrank-ratio0.5``.
    A pass given only its first field shows the bare value; a long or unusual name gets a hash."""
    parts = []
    for entry in chain:
        first = entry.pass_class.fields[0].name if entry.pass_class.fields else None
        if list(entry.options) == [first]:
            parts.append(f"{entry.name}{_slug_value(entry.options[first])}")
        else:
            order = [f.name for f in entry.pass_class.fields if f.name in entry.options]
            parts.append("-".join([entry.name, *(f"{k}{_slug_value(entry.options[k])}" for k in order)]))
    slug = "-".join(parts)
    if len(slug) > 60 or not re.fullmatch(r"[A-Za-z0-9._+-]*", slug):
        digest = hashlib.sha256(json.dumps([e.as_dict() for e in chain], sort_keys=True).encode()).hexdigest()[:10]
        slug = "-".join(e.name for e in chain)[:40] + f"-{digest}"
    return slug


def describe_passes() -> list[str]:
    """Help lines: each registered pass, its one-line summary and its fields (from the registry)."""
    lines = []
    for name, cls in PASSES.items():
        lines.append(f"{name}: {cls.summary()}")
        lines.extend(f"  {f.describe()}" for f in cls.fields)
    return lines
