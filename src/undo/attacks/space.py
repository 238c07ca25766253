"""The adaptive attacker's search space and its trials (used by undo.attacks.search).

A recipe is a dict of the space's parameters (lr, optimizer, schedule, batch_size,
weight_decay, lora_rank/alpha/targets, retain_fraction, and the benchmark's
`attack_knobs()`); `run_recipe` runs one attack with it through `undo.attacks.grid.run_one`;
`score` reads the forget and retain metrics at each budget and applies the utility floor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

from ..analysis.robustness import utility_bound, utility_ok
from ..architectures import classify, family
from ..benchmarks import build_benchmark
from ..benchmarks.base import MetricSpec
from ..config import RunConfig
from ..configlib import ConfigError
from ..models import load_tokenizer
from ..train import DivergedError
from .grid import run_one

__all__ = ["utility_bound", "utility_ok"]  # the one utility rule (undo.robustness)
Params = dict[str, Any]
Start = tuple[dict[str, float], dict[str, float]]
LORA_ONLY = ("lora_alpha", "lora_targets")  # drawn only for a LoRA trial (rank > 0)


# ------------------------------------------------------------------ the space


def search_space(cfg: RunConfig, knobs: Mapping[str, Mapping[str, Any]]) -> dict[str, Params]:
    """{param: spec}: `float` specs have low/high (and log), `categorical` ones choices.

    `knobs` are the benchmark's `attack_knobs()` (used when search.benchmark_knobs).
    Raises ConfigError when nothing is left to search.
    """
    s = cfg.search

    def rng(v: list[float], log: bool = False) -> Params:
        return {"type": "float", "low": v[0], "high": v[-1], "log": log}

    def cat(v: Sequence[Any]) -> Params:
        return {"type": "categorical", "choices": list(v)}

    space: dict[str, Params] = {
        "lr": rng(s.lr, log=True), "optimizer": cat(s.optimizers),
        "schedule": cat(s.schedules), "batch_size": cat(s.batch_sizes),
        "weight_decay": cat(s.weight_decays), "lora_rank": cat(s.lora_ranks),
        "lora_alpha": cat(s.lora_alphas), "lora_targets": cat(s.lora_targets),
        "retain_fraction": rng(s.retain_fraction),
    }
    if s.benchmark_knobs:
        for name, spec in knobs.items():
            space[name] = {k: v for k, v in spec.items() if k != "default"}
    lora = any(r > 0 for r in s.lora_ranks)
    free = [k for k, v in space.items() if _size(v) > 1 and (lora or k not in LORA_ONLY)]
    if not free:
        raise ConfigError("config section 'search': every dimension of the search space is "
                          "fixed (one choice each, lr and retain_fraction with low == high); "
                          "valid: at least one list with two choices or a range with "
                          "low < high")
    return space


def _size(spec: Params) -> float:
    if spec["type"] == "categorical":
        return len(spec["choices"])
    return math.inf if spec["high"] > spec["low"] else 1


def suggest(trial: optuna.Trial, space: Mapping[str, Params]) -> Params:
    """Draw a recipe; LoRA's alpha and targets only for a LoRA trial."""
    out: Params = {}
    for name, spec in space.items():
        if name in LORA_ONLY and not out.get("lora_rank"):
            continue
        if spec["type"] == "categorical":
            out[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            out[name] = trial.suggest_int(name, spec["low"], spec["high"])
        else:
            out[name] = trial.suggest_float(name, spec["low"], spec["high"],
                                            log=spec.get("log", False))
    return out


def grid_recipes(cfg: RunConfig, relearn: Mapping[str, Any], metric: str,
                 space: Mapping[str, Params],
                 knobs: Mapping[str, Mapping[str, Any]]) -> list[Params]:
    """The grid's worst-case recipes (one per distinct worst LR at a budget > 0) that lie
    in the search space; they are the search's first trials."""
    a = cfg.attack
    base: Params = {"optimizer": "adamw", "schedule": "constant", "batch_size": a.batch_size,
                    "weight_decay": a.weight_decay, "lora_rank": a.lora_rank,
                    "retain_fraction": a.retain_fraction}
    if a.lora_rank:
        base |= {"lora_alpha": a.lora_alpha, "lora_targets": "all-linear"}
        if a.lora_targets != ["all-linear"]:
            return []
    for name in space:
        if name in knobs:
            value = getattr(a, name, None)
            base[name] = knobs[name]["default"] if value is None else value
    lrs = sorted({float(w["lr"]) for k, w in relearn["worst_case"][metric].items()
                  if int(k) > 0}, reverse=True)
    recipes = [{**base, "lr": lr} for lr in lrs]
    return [r for r in recipes if all(_inside(r[k], space[k]) for k in r)]


def _inside(value: Any, spec: Params) -> bool:
    if spec["type"] == "categorical":
        return value in spec["choices"]
    return spec["low"] <= value <= spec["high"]


# ------------------------------------------------------------------- one trial


def lora_modules(model: torch.nn.Module, group: str) -> list[str]:
    """peft targets of a group: ["all-linear"], or every 2-D-weight module of the
    blocks' attention / MLP (named through the architecture table)."""
    if group == "all-linear":
        return ["all-linear"]
    fam = family(model)
    names = [n for n, m in model.named_modules()
             if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() == 2
             and classify(fam, f"{n}.weight")[0] == group]
    if not names:
        raise ConfigError(f"config key 'search.lora_targets': '{group}' matches no linear "
                          f"module of this model; valid: all-linear, attention, mlp")
    return names


def run_recipe(cfg: RunConfig, model_dir: Path, recipe: Params, start: Start,
               targets: Mapping[str, list[str]]) -> dict[str, Any]:
    """One attack with an explicit recipe (the grid's data seed, attack.seeds[0]).

    Only the budgets are evaluated (full eval sets): the curve is not needed here.
    """
    a = cfg.attack
    knobs = {k: v for k, v in recipe.items() if k not in SEARCH_KEYS}
    rank = int(recipe.get("lora_rank", a.lora_rank))
    attack_cfg = replace(
        a, batch_size=int(recipe.get("batch_size", a.batch_size)),
        weight_decay=float(recipe.get("weight_decay", a.weight_decay)), lora_rank=rank,
        lora_alpha=float(recipe.get("lora_alpha", a.lora_alpha)),
        lora_targets=targets[recipe.get("lora_targets", "all-linear")] if rank else
        a.lora_targets, retain_fraction=float(recipe.get("retain_fraction", a.retain_fraction)),
        eval_every=a.steps, save_weights=False, **knobs)
    schedule = recipe.get("schedule", "constant")
    sched: Params = ({"schedule": "cosine"} if schedule == "cosine" else
                     {"warmup_steps": max(1, a.steps // 10)} if schedule == "warmup" else {})
    run_cfg = replace(cfg, attack=attack_cfg)
    bench = build_benchmark(cfg.data)
    tok = load_tokenizer(model_dir)
    seed = a.seeds[0]
    bench.check_attack(attack_cfg, [bench.attack_batches(attack_cfg, tok, f"{cfg.seed}-{seed}")],
                       a.steps, tok)
    return run_one(run_cfg, model_dir, float(recipe["lr"]), seed, start, cfg.threads,
                   optimizer=recipe.get("optimizer", "adamw"), schedule=sched)


SEARCH_KEYS = ("lr", "optimizer", "schedule", "batch_size", "weight_decay", "lora_rank",
               "lora_alpha", "lora_targets", "retain_fraction")


def score(run: Mapping[str, Any], forget: MetricSpec, retain: MetricSpec,
          bound: float | None) -> dict[str, dict[str, Any]]:
    """Per budget: the forget and retain metrics and whether the utility floor held."""
    out = {}
    for k, m in run["budgets"].items():
        f, r = float(m[forget.name]), float(m[retain.name])
        out[k] = {"forget": f, "retain": r, "valid": utility_ok(retain, r, bound)}
    return out


def recipe_task(job: tuple) -> dict[str, Any]:  # top level: picklable for worker processes
    """run_recipe, or {"diverged": message} when its loss or gradient went non-finite (a
    far too large LR): a destroyed model, so a trial that does not count."""
    try:
        return run_recipe(*job)
    except DivergedError as e:
        return {"diverged": str(e)}
