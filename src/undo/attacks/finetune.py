"""Finetuning attacks: presets of the relearning grid (undo.attacks.grid) by data mix.

    paper          the paper's attack data for the benchmark (`attack.retain_fraction`
                   null: `Benchmark.paper_retain_fraction`)
    forget_only    forget-domain data only (retain_fraction 0)
    benign_retain  retain data only (retain_fraction 1, no forget item ever shown): the
                   "benign finetuning" of Łucki et al. (arXiv 2409.18025); on the default
                   study it revived unlearn-only's multiplication (0.153 against the gold
                   standard's 0.007)

`paper` and `forget_only` build exactly the configs the study built before the registry
existed, so their folders and cache keys are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from .registry import finetune_config


@dataclass(frozen=True)
class FinetuneAttack:
    """A data mix of the LR grid: `adapt` sets its `attack` fields."""

    name: str
    family: str
    adapt: Callable[[RunConfig], RunConfig]
    trains: bool = True

    def configure(self, cfg: RunConfig) -> RunConfig:
        return self.adapt(cfg)

    def folder(self, cfg: RunConfig, model_dir: str | Path) -> Path:
        from .grid import attack_dir

        return attack_dir(cfg, model_dir)

    def run(self, cfg: RunConfig, model_dir: str | Path, *, force: bool = False) -> Path:
        from .grid import attack

        return attack(cfg, model_dir, force=force)


def _paper(cfg: RunConfig) -> RunConfig:
    from .grid import resolved

    return resolved(finetune_config(cfg))


PAPER = FinetuneAttack("paper", "finetune", _paper)
FORGET_ONLY = FinetuneAttack("forget_only", "finetune",
                             lambda cfg: finetune_config(cfg, retain_fraction=0.0))
BENIGN_RETAIN = FinetuneAttack(
    "benign_retain", "benign finetune",
    lambda cfg: finetune_config(cfg, retain_fraction=1.0, allow_no_forget=True))
