"""Assemble the study's summary.json from its stage folders (schema: docs/summary-schema.md).

Everything here is read from the stages' own `summary.json` and `relearn.json`; the two
ratios come from `robustness.py`, where they are defined once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import integrity
from ..analysis.arms import label_of
from ..analysis.intervals import Study as IntervalStudy
from ..analysis.intervals import attacked, intervals, seed_interval
from ..analysis.robustness import (
    budget_key,
    compute_ratio,
    robustness,
    utility_bound,
    utility_ok,
)
from ..artifacts import environment, json_text, read_json
from ..config import RunConfig
from ..configlib import to_dict
from ..provenance import model_source
from ..report.families import robustness_table

if TYPE_CHECKING:
    from .specs import Model

SCHEMA_VERSION = 1
DISTILLED = ("undo", "unlearn_distill", "oracle_base", "oracle_random")


def _attack_section(attack_dir: Path | None, metric: str, retain: Any,
                    floor: float) -> dict[str, Any] | None:
    """One attack of a model: its worst case per budget with the attacked model's retain
    metric beside it, judged by the one utility rule (`utility_ok`: retain kept within
    `search.utility_floor` of its pre-attack value, as the search's trials are). A worst
    case that broke it is flagged here and in the report, neither dropped nor hidden."""
    if attack_dir is None:
        return None
    rel = read_json(attack_dir / "relearn.json")
    worst = rel["worst_case"][metric]
    curves = rel["curves"][metric]
    before = rel["start"].get(retain.name)
    bound = utility_bound(retain, before, floor) if before is not None else None
    out = {
        "lrs": rel["lrs"],
        "seeds": rel["seeds"],
        "retain_fraction": rel["attack"].get("retain_fraction"),
        "curves": curves,
        "retain_before": before,
        "worst_case": {k: {"value": w["value"], "std": w["std"], "lr": w["lr"],
                           "retain": w.get("retain"),
                           "utility_ok": utility_ok(retain, w.get("retain"), bound)}
                       for k, w in worst.items()},
        "relearn_json": str(attack_dir / "relearn.json"),
    }
    if "settings" in rel:  # an attack without training (undo.attacks.scored): its
        # settings in place of learning rates, its own cost
        labels = rel["settings"]
        for w in out["worst_case"].values():
            w["setting"] = labels.get(repr(float(w["lr"])))
        out.update(family=rel.get("family"), trains=rel.get("trains"), settings=labels,
                   cost=rel.get("cost"))
    return out


def _search_section(attack_dir: Path | None) -> dict[str, Any] | None:
    """The adaptive attack search of a model (undo.attacks.search): worst case per budget over
    its own trials and the replays of other models' best recipes; None without one."""
    path = attack_dir / "search.json" if attack_dir is not None else None
    if path is None or not path.is_file():
        return None
    s = json.loads(integrity.read_file(path))  # checked against its manifest
    return {"trials": s["cost"]["trials"], "steps": s["steps"], "utility": s["utility"],
            "worst_case": s["worst_case"], "grid_under_floor": s.get("grid_under_floor"),
            "best": s["best"], "best_so_far": s["best_so_far"],
            "cost": s["cost"], "search_json": str(path)}


def _search_robustness(entries: list[dict[str, Any]], ref_u: dict | None, ref_g: dict | None,
                       budgets: list[int], tol: float) -> None:
    """`robustness_search`: Robustness with every worst case taken under the search."""
    def value(e: dict | None, key: str) -> float | None:
        w = ((e or {}).get("search") or {}).get("worst_case", {}).get(key)
        return None if w is None else w["value"]

    for e in entries:
        if e.get("search") is None:
            continue
        e["robustness_search"] = {}
        for k in map(budget_key, budgets):
            p, u, g = value(e, k), value(ref_u, k), value(ref_g, k)
            ok = e["kind"] not in ("base", "gold", "unlearn_only") and None not in (p, u, g)
            e["robustness_search"][k] = robustness(p, u, g, tol=tol) if ok else None


def _robustness(e: dict[str, Any] | None, key: str, ref_u: dict | None, ref_g: dict | None,
                budgets: list[int], tol: float) -> dict[str, float | None]:
    """Robustness per budget from the attack section `key` of a model (`e[key]`) and of
    the two references; undefined (null) for the references themselves and wherever an
    attack is missing."""
    out: dict[str, float | None] = {budget_key(k): None for k in budgets}
    a, u, g = ((x or {}).get(key) for x in (e, ref_u, ref_g))
    if (e or {}).get("kind") in ("base", "gold", "unlearn_only") or not (a and u and g):
        return out
    for k in map(budget_key, budgets):
        p, pu, pg = (s["worst_case"].get(k) for s in (a, u, g))
        out[k] = robustness(p["value"], pu["value"], pg["value"], tol) \
            if p and pu and pg else None
    return out


def interval_studies(runs: Mapping[tuple[str, str], list[dict[str, Any]]],
                     entries: list[dict[str, Any]], budgets: list[int],
                     higher_is_worse: bool, order: list[str]
                     ) -> dict[str, dict[str, IntervalStudy]]:
    """What `undo.analysis.intervals` resamples, per attack and budget (> 0): the
    references, each arm's recovered students and the single models, each at its worst
    LR. `runs`: (model name, attack name) -> that attack's relearn.json runs."""
    out: dict[str, dict[str, IntervalStudy]] = {}
    for name in (n for n in order if any(a == n for _, a in runs)):
        out[name] = {}
        for k in (b for b in budgets if b > 0):
            arms: dict[str, list[Any]] = {}
            singles: dict[str, Any] = {}
            refs: dict[str, Any] = {}
            for e in entries:
                r = runs.get((e["name"], name))
                a = None if r is None else attacked(r, k, higher_is_worse)
                if a is None or e["kind"] == "base":
                    continue
                if e["kind"] in ("gold", "unlearn_only"):
                    refs[e["kind"]] = a
                elif (arm := label_of(e)) is None:
                    singles[e["name"]] = a
                elif e.get("recovered") is not False:
                    arms.setdefault(arm, []).append(a)
            any_model = next(iter([*refs.values(), *singles.values(),
                                   *(x for v in arms.values() for x in v)]), None)
            if any_model is None:
                continue
            n_items = len(next(iter(any_model.seeds.values()))[0])
            out[name][budget_key(k)] = IntervalStudy(refs.get("gold"), refs.get("unlearn_only"),
                                                     arms, singles, n_items)
    return out


def _intervals(models: list[Model], entries: list[dict[str, Any]], budgets: list[int],
               higher_is_worse: bool, tol: float, order: list[str]) -> dict[str, Any]:
    """`intervals`: per attack and budget, 95% bootstrap intervals over eval items,
    attack seeds and model seeds (undo.analysis.intervals); per arm, compute over model seeds.
    Students that did not recover are left out of their arm (and named)."""
    out: dict[str, Any] = {"attacks": {}, "compute": {}, "not_counted": []}
    runs = {(m.name, n): read_json(d / "relearn.json")["runs"]
            for m in models for n, d in m.attack_dirs.items()}
    for name, by_budget in interval_studies(runs, entries, budgets, higher_is_worse,
                                            order).items():
        out["attacks"][name] = {k: intervals(st, tol) for k, st in by_budget.items()}
    groups: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        if (arm := label_of(e)) is not None:
            if e.get("recovered") is False:
                out["not_counted"].append(e["name"])
            groups.setdefault(arm, []).append(e)
    for arm, es in groups.items():
        out["compute"][arm] = {
            key: seed_interval([x["compute"].get(key) for x in es])
            for key in ("fraction_of_gold_steps", "fraction_of_gold_flops",
                        "total_fraction_of_gold_steps", "total_fraction_of_gold_flops")}
    return out


def compute_of(stage: dict[str, Any], gold: dict[str, Any] | None) -> dict[str, Any]:
    """What a model cost, and as a fraction of the gold standard's pretraining: the one
    place these ratios are taken, from the raw counts each stage records.

    - steps: optimizer steps counted at the gold run's tokens per step, i.e. tokens /
      gold tokens (the paper's S / S_DataFiltering "at equal tokens per step"), for every
      model alike;
    - FLOPs: including the teacher's forwards for a distilled model, cached or not (see
      compute.py).
    """
    flops = stage.get("flops_incl_teacher", stage.get("flops"))
    out: dict[str, Any] = {"steps": stage.get("steps"), "tokens": stage.get("tokens"),
                           "flops": flops}
    ratios = compute_ratio({k: v for k, v in out.items() if v is not None}, gold or {})
    out["fraction_of_gold_steps"] = ratios.get("tokens")
    out["fraction_of_gold_flops"] = ratios.get("flops")
    return out


def _total_compute(entries: list[dict[str, Any]], unlearn: dict[str, Any] | None) -> None:
    """`compute.total_*` of UNDO and Unlearn-and-Distill students: unlearning (their
    teacher) plus distillation, steps and FLOPs, raw and as fractions of the gold
    standard's pretraining; the unlearn-only model's total is its own."""
    if unlearn is None:
        return
    u = unlearn["compute"]
    u.update({f"total_{k}": u.get(k) for k in ("steps", "flops", "fraction_of_gold_steps",
                                                "fraction_of_gold_flops")})
    for e in entries:
        if e["kind"] not in ("undo", "unlearn_distill"):
            continue
        c = e["compute"]
        for k in ("steps", "flops", "fraction_of_gold_steps", "fraction_of_gold_flops"):
            c[f"total_{k}"] = None if c.get(k) is None or u.get(k) is None \
                else c[k] + u[k]


def build_summary(cfg: RunConfig, models: list[Model], wall_time_s: float) -> dict[str, Any]:
    """Every model's metrics, attack worst cases, robustness and compute."""
    from ..attacks.registry import family_of
    from ..benchmarks import build_benchmark

    bench = build_benchmark(cfg.data)
    forget_metric, retain_metric = bench.forget_metric, bench.retain_metric
    stage = {m.name: read_json(m.stage_dir / "summary.json") for m in models}
    gold_name = next((m.name for m in models if m.kind == "gold"), None)
    unlearn_name = next((m.name for m in models if m.kind == "unlearn_only"), None)
    gold_stage = stage[gold_name] if gold_name else None
    budgets = sorted({int(b) for b in cfg.attack.budgets} | {cfg.attack.steps})

    entries = [_entry(m, stage[m.name], cfg, gold_stage, forget_metric.name, retain_metric)
               for m in models]

    by_name = {e["name"]: e for e in entries}
    ref_u = by_name.get(unlearn_name) if unlearn_name else None
    _total_compute(entries, ref_u)
    ref_g = by_name[gold_name] if gold_name else None
    tol = cfg.study.min_robustness_gap
    for e in entries:
        e["robustness"] = _robustness(e, "attack", ref_u, ref_g, budgets, tol)
        e["robustness_by_attack"] = {
            name: _robustness(e["attacks"], name, (ref_u or {}).get("attacks"),
                              (ref_g or {}).get("attacks"), budgets, tol)
            for name in e["attacks"]} if e["kind"] not in ("base", "gold", "unlearn_only") \
            else {}

    _search_robustness(entries, ref_u, ref_g, budgets, cfg.study.min_robustness_gap)
    hiw = forget_metric.higher_is_better
    ivs = _intervals(models, entries, budgets, hiw, tol, list(cfg.study.attacks))
    out = {
        "schema_version": SCHEMA_VERSION,
        "study": cfg.name,
        "config": to_dict(cfg),
        "environment": environment(model=model_source(
            cfg.model.name_or_path, cfg.model.revision, cfg.model.gguf_file)),
        "benchmark": cfg.data.benchmark,
        # False when the study has no gold standard (study.gold=none): robustness
        # relative to one is then not available, and every robustness value is null.
        "gold_standard": gold_name is not None,
        # The forget metric: higher_is_worse = a higher value means the model knows more
        # of what it should have forgotten.
        "metric": {"name": forget_metric.name, "label": forget_metric.label,
                   "higher_is_worse": forget_metric.higher_is_better,
                   "chance": forget_metric.chance},
        "retain_metric": {"name": retain_metric.name, "label": retain_metric.label,
                          "higher_is_better": retain_metric.higher_is_better,
                          "chance": retain_metric.chance},
        "budgets": budgets,
        "attacks": list(cfg.study.attacks),
        "models": entries,
        "intervals": ivs,
        "wall_time_s": wall_time_s,
    }
    attacked = [n for n in cfg.study.attacks if any(n in m.attack_dirs for m in models)]
    if set(attacked) - {"paper", "forget_only"}:
        # Beyond the paper's two finetuning attacks: every family side by side, so a
        # study of only those keeps the summary it had (docs/summary-schema.md).
        out["robustness_table"] = robustness_table(
            entries, attacked, {n: family_of(n) for n in attacked}, ivs["attacks"],
            budgets[-1], hiw)
    return out


def _entry(m: Model, s: dict[str, Any], cfg: RunConfig, gold_stage: dict[str, Any] | None,
           forget_name: str, retain_metric: Any) -> dict[str, Any]:
    """One model's entry of `models`: its metrics, compute and attack sections."""
    floor = cfg.search.utility_floor
    return {
        "name": m.name, "kind": m.kind, "alpha": m.alpha, "seed": m.seed,
        "stage_dir": str(m.stage_dir),
        "metrics": s.get("metrics") or s.get("after") or {},  # unlearn: metrics after
        "compute": compute_of(s, gold_stage if m.kind not in ("base", "gold") else None),
        "wall_time_s": s.get("wall_time_s"),
        "attack": _attack_section(m.attack_dir, forget_name, retain_metric, floor),
        "attacks": {name: _attack_section(d, forget_name, retain_metric, floor)
                    for name, d in m.attack_dirs.items()},
        "search": _search_section(m.attack_dir) if cfg.study.attack_search else None,
        # Distilled models only: did the student recover its teacher's retain ability
        # within budget (null for models that are not distilled)?
        "recovered": s.get("recovered") if m.kind in DISTILLED else None,
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    """With its sidecar manifest (`undo export` checks it; every `undo run` rebuilds it)."""
    return integrity.write_file(run_dir / "summary.json", json_text(summary).encode())
