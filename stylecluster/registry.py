"""One registry for everything chosen by name: backbones, cluster methods, training recipes, classifiers.

timm's shape (``timm/models/_registry.py``): entries are registered by decorator (or a call), a
name registered twice is refused — a second module silently replacing the first is a bug that
shows nowhere else — and looking up an unknown name is a :class:`~.errors.ConfigError` that names
the choices. Each domain keeps its ``create_*`` factory and ``available_*`` list on top of it.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name; ``kind`` is what they are, for messages ("cluster method")."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None) -> T | Callable[[T], T]:
        """``register(name, entry)``, or ``@register(name)`` over a class or function."""
        if entry is None:
            return lambda obj: self.register(name, obj)
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
