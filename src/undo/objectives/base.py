"""The objectives' registry: `OBJECTIVES.get(name)` errors list the valid names.

Its own module so that each objective registers itself without importing the package
that imports it (no import cycle)."""

from ..registry import Registry

OBJECTIVES: Registry = Registry("objective")
