"""One small typed registry used by models, losses, compression passes, runtimes and transports.

The name is the key; registering a name twice is an error; asking for an unknown name raises a
ConfigError with a "did you mean" suggestion and the list of valid names. Tests parametrize over
`registry.names()` so every new entry is tested with no extra test code.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from edgekd.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` over a class or function."""

        def add(obj: T) -> T:
            self.add(name, obj)
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        if not name or name != name.strip():
            raise ValueError(f"{self.kind} name must be a non-empty string without surrounding spaces")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def remove(self, name: str) -> T:
        """Take `name` out of the registry and return its entry (ConfigError when it is not there)."""
        entry = self.get(name)
        del self._items[name]
        return entry

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(self.names()) or "(none registered)"
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {valid}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
