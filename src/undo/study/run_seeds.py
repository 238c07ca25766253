"""`study.run_seeds`: the study at each run seed, one after another, then pooled.

Each run seed is an ordinary run folder (`name`, `name-seedN`: `pooled.run_seed_configs`),
every one checked before the first starts, and the pooled figure over them is written
beside them (`pooled.pooled_path`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..config import RunConfig
from ..stages.base import run_dir
from .gold import with_gold
from .graph import run_study
from .pooled import pool_runs, pooled_path, run_seed_configs
from .run_folder import check_run_folder


@dataclass(frozen=True)
class RunSeeds:
    configs: list[RunConfig]  # one per run seed, in order
    summaries: list[dict[str, Any]]  # each run's summary.json
    pooled: dict[str, Any]  # `pooled.pool_runs` over them
    pooled_file: Path


def run_seeds(cfg: RunConfig, *, force: list[str] | None = None,
              log: Callable[[str], None] = print) -> RunSeeds:
    """Run the study `cfg` at each of `cfg.study.run_seeds` and pool the runs."""
    configs = run_seed_configs(cfg)
    for c in configs:  # every folder accepts its run before the first one starts
        check_run_folder(with_gold(c))
    summaries = [run_study(c, force=force, log=log) for c in configs]
    pooled = pool_runs([run_dir(c) for c in configs])
    return RunSeeds(configs, summaries, pooled, write_json(pooled_path(cfg), pooled))
