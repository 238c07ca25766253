"""Who a model of the study is: its kind, and the arm a distilled student belongs to.

A typed identity, so the summary, pooling, the report and the model card compare values
instead of display strings. An arm's `label` is the key its rows carry in summary.json
(`intervals`), which every committed summary already uses; `Arm.parse` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class ModelKind(str, Enum):
    """A model's role in the study (the `kind` field of summary.json)."""

    BASE = "base"
    GOLD = "gold"
    UNLEARN_ONLY = "unlearn_only"
    UNLEARN_DISTILL = "unlearn_distill"
    UNDO = "undo"
    ORACLE_BASE = "oracle_base"
    ORACLE_RANDOM = "oracle_random"

    def __str__(self) -> str:
        return self.value

    @property
    def is_reference(self) -> bool:
        """The gold standard and unlearn-only: what robustness is scaled by."""
        return self in (ModelKind.GOLD, ModelKind.UNLEARN_ONLY)


# The row name a reference carries in the interval tables.
REFERENCE_ROWS = {ModelKind.GOLD: "gold", ModelKind.UNLEARN_ONLY: "unlearn-only"}

_UNLEARN_DISTILL = "Unlearn-and-Distill"
_UNDO_PREFIX = "UNDO α="


@dataclass(frozen=True)
class Arm:
    """The students whose seeds are resampled together: UNDO at one α, or
    Unlearn-and-Distill (`alpha` None)."""

    kind: ModelKind
    alpha: float | None = None

    def __post_init__(self) -> None:
        if self.kind is ModelKind.UNDO and self.alpha is None:
            raise ValueError("an UNDO arm needs its alpha")
        if self.kind not in (ModelKind.UNDO, ModelKind.UNLEARN_DISTILL):
            raise ValueError(f"{self.kind} is not an arm (only distilled students are)")

    @property
    def label(self) -> str:
        return f"{_UNDO_PREFIX}{self.alpha:g}" if self.kind is ModelKind.UNDO \
            else _UNLEARN_DISTILL

    @property
    def sort_key(self) -> tuple[int, float]:
        """UNDO by α first, then Unlearn-and-Distill (the tables' row order)."""
        return (0, float(self.alpha)) if self.kind is ModelKind.UNDO else (1, 0.0)

    @classmethod
    def of(cls, model: Mapping[str, Any]) -> Arm | None:
        """The arm of a summary entry (`kind`, `alpha`), None for every other model."""
        kind = ModelKind(model["kind"])
        if kind is ModelKind.UNDO:
            return cls(kind, float(model["alpha"]))
        return cls(kind) if kind is ModelKind.UNLEARN_DISTILL else None

    @classmethod
    def parse(cls, label: str) -> Arm:
        """The arm a row label names (`label`'s inverse)."""
        if label == _UNLEARN_DISTILL:
            return cls(ModelKind.UNLEARN_DISTILL)
        if label.startswith(_UNDO_PREFIX):
            return cls(ModelKind.UNDO, float(label[len(_UNDO_PREFIX):]))
        raise ValueError(f"not an arm's label: {label!r}; valid: {_UNLEARN_DISTILL!r} or "
                         f"'{_UNDO_PREFIX}<alpha>'")


def label_of(model: Mapping[str, Any]) -> str | None:
    """The arm label of a summary entry, None where it belongs to no arm."""
    arm = Arm.of(model)
    return None if arm is None else arm.label


def row_of(model: Mapping[str, Any]) -> str:
    """The row a model belongs to in the interval tables: its arm, a reference's row
    name, or its own name."""
    kind = ModelKind(model["kind"])
    return label_of(model) or REFERENCE_ROWS.get(kind) or model["name"]
