"""Search strength: does the adaptive attacker beat the LR grid on a study's models?

    python experiments/search_strength.py RUN_DIR [--trials 30] [--steps 40 100]
        [--workers 2] [--out experiments/results/search_strength.json] [key=value ...]

RUN_DIR is a finished study folder (with config.yaml and summary.json, e.g.
runs/arithmetic-tiny). For each step budget k in --steps, every attacked model of the
study gets the same search (`undo.attacks.search.search_attack`, --trials trials of k steps,
the study's own config plus the overrides), then each model's best recipe is replayed
against every other (`replay_all`). Results land in RUN_DIR/attacks/ beside the grid's
(the k = attack.steps grid is the study's own, cached; other k run their grid first).

Per model and k it records the grid's worst case at k, the search's (own trials and
replays, the utility floor applied), which is stronger, and the recipe; and the
study's robustness under both, so the conclusions (unlearn-only fragile, robustness
rising with alpha, UNDO near the gold standard) can be checked under the searched
attack. The grid has no utility floor and the search has one, so it also compares like
with like: the grid under the search's floor (`grid_under_floor`: the worst grid run
that kept retain >= the bound) and the search without it (`search_without_floor`).
Floors (issue 15): at least as strong as the grid for every model and k; strictly
stronger on the unlearn-only model at k = 40. With a multi-seed study, the distilled
models of --model-seeds (default: the first seed) are searched.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from undo.analysis.robustness import budget_key, robustness
from undo.artifacts import environment, read_json, write_json
from undo.attacks.search import replay_all, search_attack, worst_case
from undo.config import RunConfig, load_config

SKIP = ("base",)  # the study does not attack the base model
# name -> (attack, reference, strictly): as issue 15 words it (search under the floor vs
# the grid, which has none), and like for like (both under the floor; both without it).
COMPARISONS = {
    "at_least_as_strong": ("search", "grid", False),
    "strictly_stronger": ("search", "grid", True),
    "at_least_as_strong_under_floor": ("search", "grid_under_floor", False),
    "strictly_stronger_under_floor": ("search", "grid_under_floor", True),
    "at_least_as_strong_without_floor": ("search_without_floor", "grid", False),
    "strictly_stronger_without_floor": ("search_without_floor", "grid", True),
}


def _search(job: tuple[RunConfig, str, int]) -> str:
    torch.set_num_threads(1)
    cfg, model, n = job
    return str(search_attack(cfg, model, n, log=None))


def _better(a: float, b: float, higher_is_worse: bool) -> bool:
    return a > b if higher_is_worse else a < b


def measure(cfg: RunConfig, models: list[dict], trials: int, workers: int) -> dict[str, Any]:
    """Search every model at cfg.attack.steps, replay, compare with the grid."""
    t0 = time.time()
    dirs = [str(Path(m["stage_dir"]) / "model") for m in models]
    jobs = [(cfg, d, trials) for d in dirs]
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            folders = list(pool.map(_search, jobs))
    else:
        folders = [_search(j) for j in jobs]
    replay_all(cfg, dirs, log=print)
    k = budget_key(cfg.attack.steps)
    out: dict[str, Any] = {"steps": cfg.attack.steps, "trials": trials, "models": {}}
    for m, f in zip(models, folders, strict=True):
        s, r = read_json(Path(f) / "search.json"), read_json(Path(f) / "relearn.json")
        hiw = s["metric"]["higher_is_better"]
        found = s["worst_case"][k]
        # Like for like: the grid under the search's utility floor (search.json's
        # grid_under_floor), and the search (trials and replays) without it.
        unfloored = [{**e, "budgets": {b: {**v, "valid": True} for b, v in e["budgets"].items()}}
                     for e in s["trials"] + s["replays"] if e.get("budgets")]
        views = {
            "grid": r["worst_case"][s["metric"]["name"]][k],
            "grid_under_floor": s["grid_under_floor"][k],
            "search": found,
            "search_without_floor": worst_case(unfloored, [cfg.attack.steps], hiw)[k]}
        val = {n: None if v is None else v["value"] for n, v in views.items()}

        out["models"][m["name"]] = {
            "kind": m["kind"], "alpha": m.get("alpha"), "utility_bound": s["utility"]["bound"],
            **{n: (None if v is None else {"value": v["value"], "lr": v.get("lr"),
                                           "retain": v.get("retain"),
                                           "params": v.get("params")})
               for n, v in views.items()},
            "best": s["best"],
            **{name: _stronger(val[a], val[b], hiw, strict)
               for name, (a, b, strict) in COMPARISONS.items()},
            "counted_trials": sum(t["state"] == "complete" for t in s["trials"]),
            "pruned_trials": sum(t["state"] == "pruned" for t in s["trials"]),
            "search_flops": s["cost"]["flops"], "replay_flops": s["cost"]["replay_flops"],
            "search_wall_s": s["cost"]["wall_time_s"],
        }
    out["robustness"] = _robustness(out["models"], cfg.study.min_robustness_gap)
    out["wall_s"] = time.time() - t0
    return out


def _stronger(a: float | None, b: float | None, higher_is_worse: bool, strict: bool) -> bool:
    """Is attack value `a` at least as strong as (strict: stronger than) `b`? None: nothing
    kept the utility floor, the weakest of all."""
    if a is None:
        return False
    if b is None:
        return True
    return _better(a, b, higher_is_worse) if strict else not _better(b, a, higher_is_worse)


def _fmt(v: dict | None) -> str:
    return "-" if v is None else f"{v['value']:.3f}"


def _robustness(models: dict[str, dict], tol: float) -> dict[str, dict]:
    """Robustness of every model under the grid and under the search (same formula)."""
    by_kind = {m["kind"]: m for m in models.values()}
    u, g = by_kind.get("unlearn_only"), by_kind.get("gold")
    out = {}
    for name, m in models.items():
        if u is None or g is None or m["kind"] in ("gold", "unlearn_only"):
            continue
        grid = robustness(m["grid"]["value"], u["grid"]["value"], g["grid"]["value"], tol)
        vals = [x["search"] and x["search"]["value"] for x in (m, u, g)]
        found = robustness(*vals, tol) if None not in vals else None
        out[name] = {"alpha": m["alpha"], "grid": grid, "search": found}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished study folder (config.yaml, summary.json)")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--steps", type=int, nargs="+", default=[40, 100])
    p.add_argument("--workers", type=int, default=1, help="models searched side by side")
    p.add_argument("--model-seeds", type=int, nargs="*",
                   help="distilled models of these seeds (default: the study's first seed); "
                        "the shared models (gold, unlearn-only, oracles) always")
    p.add_argument("--out", type=Path, default=Path("experiments/results/search_strength.json"))
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_intermixed_args()
    torch.set_num_threads(1)
    run = args.run.resolve()
    base = load_config(run / "config.yaml", [f"out_dir={run.parent}", "progress=false",
                                             "threads=1", *args.overrides])
    summary = read_json(run / "summary.json")
    seeds = set(args.model_seeds if args.model_seeds is not None
                else summary["config"]["study"]["seeds"][:1])
    models = [m for m in summary["models"] if m["kind"] not in SKIP
              and (m.get("seed") is None or m["kind"].startswith("oracle") or m["seed"] in seeds)]
    load0 = os.getloadavg()
    results = {}
    for k in args.steps:
        budgets = sorted({b for b in base.attack.budgets if b <= k} | {0})
        cfg = replace(base, attack=replace(base.attack, steps=k, budgets=budgets))
        results[str(k)] = measure(cfg, models, args.trials, args.workers)
        write_json(args.out, {"run": str(run), "results": results})  # partial results too
    unlearn = [m["name"] for m in models if m["kind"] == "unlearn_only"]
    def everywhere(key: str) -> bool:
        return all(m[key] for r in results.values() for m in r["models"].values())

    def unlearn_only_at_40(key: str) -> bool:
        return bool(unlearn) and "40" in results and results["40"]["models"][unlearn[0]][key]

    floors = {
        "at_least_as_strong_everywhere": everywhere("at_least_as_strong"),
        "unlearn_only_strictly_stronger_at_40": unlearn_only_at_40("strictly_stronger"),
        "under_floor": {
            "at_least_as_strong_everywhere": everywhere("at_least_as_strong_under_floor"),
            "unlearn_only_strictly_stronger_at_40":
                unlearn_only_at_40("strictly_stronger_under_floor")},
        "without_floor": {
            "at_least_as_strong_everywhere": everywhere("at_least_as_strong_without_floor"),
            "unlearn_only_strictly_stronger_at_40":
                unlearn_only_at_40("strictly_stronger_without_floor")},
    }
    write_json(args.out, {"run": str(run), "trials": args.trials, "steps": args.steps,
                          "model_seeds": sorted(seeds),
                          "floors": floors, "results": results, "loadavg_before": load0,
                          "loadavg_after": os.getloadavg(), "environment": environment()})
    for k, r in results.items():
        print(f"k={k}: " + "; ".join(
            f"{n} grid {_fmt(m['grid'])} (floored {_fmt(m['grid_under_floor'])}) search "
            f"{_fmt(m['search'])} (unfloored {_fmt(m['search_without_floor'])})"
            for n, m in r["models"].items()))
    print(f"floors: {floors}")


if __name__ == "__main__":
    main()
