"""A study stage whose job is given: for graph tests that need no real stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from undo.study.specs import Inputs, Job, Stage


@dataclass(frozen=True, kw_only=True)
class Fixed(Stage):
    make: Callable[[Inputs], Job]

    def job(self, inputs: Inputs) -> Job:
        return self.make(inputs)
