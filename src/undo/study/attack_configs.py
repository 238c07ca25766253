"""Which attacks the study runs, under which configs: the attack side of the study graph
(`study.attacks`, each model's attack seeds), and the job that runs one attack."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from .jobs import Job


def attack_job(acfg: RunConfig, name: str, model_dir: Path) -> Job:
    """The attack of one model under `acfg` (its attack and seeds), with each run of its
    grid as a part."""
    from ..attacks.grid import attack, attack_run, grid_runs

    parts = [Job(f"attack {name} lr={lr:g} seed={s}", attack_run, (str(model_dir), lr, s),
                 cfg=acfg) for lr, s in grid_runs(acfg)]
    return Job(f"attack {name}", attack, (model_dir,), {}, acfg, parts)


def study_attacks(cfg: RunConfig) -> dict[str, RunConfig]:
    """{attack name: its config}, the headline first (`study.attacks`). `forget_only` is
    left out where the paper's attack is forget-only already (the same attack)."""
    from ..attacks.grid import resolved

    paper = resolved(cfg)
    forget_only = replace(cfg, attack=replace(cfg.attack, retain_fraction=0.0))
    out = {name: paper if name == "paper" else forget_only for name in cfg.study.attacks}
    if len(out) > 1 and paper.attack.retain_fraction == 0.0:
        out.pop("forget_only")
    return out


def attack_config(cfg: RunConfig, seed: int | None, study_seeds: list[int]) -> RunConfig:
    """The attack config of a model distilled at `seed`: the attack seeds shifted by it,
    so seeds of a study differ in their attacks too. A model made once for every seed
    (gold, unlearn-only: `seed` None) is attacked with every student's attack seeds, so
    each seed's robustness is scaled by references attacked with that seed's draws."""
    base = cfg.attack.seeds
    shifted = ([a + s for s in study_seeds for a in base] if seed is None
               else [a + seed for a in base])
    return replace(cfg, attack=replace(cfg.attack, seeds=list(dict.fromkeys(shifted))))
