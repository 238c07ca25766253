"""The objectives' two registries: `LOSSES` (what a stage trains on: cross-entropy, the
distillation KL) and `METHODS` (unlearning methods, built from the `unlearn` section).
`get(name)` errors list the valid names.

Its own module so that each objective registers itself without importing the package
that imports it (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ..configlib import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise RegistryError(
                f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


LOSSES: Registry = Registry("loss")
METHODS: Registry = Registry("unlearning method")
