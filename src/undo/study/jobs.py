"""A study job: the one call a worker makes for a stage (the unit executors run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import RunConfig


@dataclass
class Job:
    """One stage call: `fn(cfg, *args, **kwargs)`, with `fn` importable in a worker."""

    label: str
    fn: Callable[..., Path]
    args: tuple = ()
    kwargs: dict | None = None
    cfg: RunConfig | None = None  # the run config unless this stage needs its own
    # Jobs an executor may run before this one, side by side (an attack's runs): their
    # results land in the shared run folder, where this job finds them; an executor may
    # also leave them to the job, which then runs what is missing itself.
    parts: list[Job] = field(default_factory=list)
