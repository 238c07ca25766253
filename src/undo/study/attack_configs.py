"""Which attacks the study runs, under which configs: the attack side of the study graph
(`study.attacks`, each model's attack seeds), and the job that runs one attack."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import RunConfig
from .jobs import Job


def attack_job(acfg: RunConfig, name: str, model_dir: Path) -> Job:
    """The attack of one model under `acfg` (its attack and seeds): a finetuning attack
    with each run of its grid as a part, any other registered attack as one job
    (`attack.family` says which; undo.attacks.registry)."""
    from ..attacks.grid import attack, attack_run, grid_runs
    from ..attacks.registry import FINETUNE, run_attack

    if acfg.attack.family != FINETUNE:
        return Job(f"attack {name} ({acfg.attack.family})", run_attack, (model_dir,), {}, acfg)
    parts = [Job(f"attack {name} lr={lr:g} seed={s}", attack_run, (str(model_dir), lr, s),
                 cfg=acfg) for lr, s in grid_runs(acfg)]
    return Job(f"attack {name}", attack, (model_dir,), {}, acfg, parts)


def study_attacks(cfg: RunConfig) -> dict[str, RunConfig]:
    """{attack name: its config}, the headline first (`study.attacks`: names in the
    attack registry, each configured by its attack, undo.attacks.registry). `forget_only`
    is left out where the paper's attack is forget-only already (the same attack)."""
    from ..attacks.registry import configured

    out = {name: configured(cfg, name) for name in cfg.study.attacks}
    paper = out.get("paper") or configured(cfg, "paper")
    if "forget_only" in out and len(out) > 1 and paper.attack.retain_fraction == 0.0:
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
