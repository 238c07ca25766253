"""Assemble the study's summary.json from its stage folders (schema: docs/summary-schema.md).

Everything here is read from the stages' own `summary.json` and `relearn.json`; the two
ratios come from `robustness.py`, where they are defined once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..artifacts import environment, read_json, write_json
from ..attacks.robustness import budget_key, compute_ratio, robustness
from ..config import RunConfig
from ..configlib import to_dict
from ..provenance import model_source

if TYPE_CHECKING:
    from .graph import Model

SCHEMA_VERSION = 1
DISTILLED = ("undo", "unlearn_distill", "oracle_base", "oracle_random")


def _attack_section(attack_dir: Path | None, metric: str) -> dict[str, Any] | None:
    if attack_dir is None:
        return None
    rel = read_json(attack_dir / "relearn.json")
    worst = rel["worst_case"][metric]
    curves = rel["curves"][metric]
    return {
        "lrs": rel["lrs"],
        "seeds": rel["seeds"],
        "curves": curves,
        "worst_case": {k: {"value": w["value"], "std": w["std"], "lr": w["lr"]}
                       for k, w in worst.items()},
        "relearn_json": str(attack_dir / "relearn.json"),
    }


def _search_section(attack_dir: Path | None) -> dict[str, Any] | None:
    """The adaptive attack search of a model (undo.attacks.search): worst case per budget over
    its own trials and the replays of other models' best recipes; None without one."""
    path = attack_dir / "search.json" if attack_dir is not None else None
    if path is None or not path.is_file():
        return None
    s = read_json(path)
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


def build_summary(cfg: RunConfig, models: list[Model], wall_time_s: float) -> dict[str, Any]:
    """Every model's metrics, attack worst cases, robustness and compute."""
    from ..benchmarks import build_benchmark

    bench = build_benchmark(cfg.data)
    forget_metric, retain_metric = bench.forget_metric, bench.retain_metric
    stage = {m.name: read_json(m.stage_dir / "summary.json") for m in models}
    gold_name = next((m.name for m in models if m.kind == "gold"), None)
    unlearn_name = next((m.name for m in models if m.kind == "unlearn_only"), None)
    gold_stage = stage[gold_name] if gold_name else None
    budgets = sorted({int(b) for b in cfg.attack.budgets} | {cfg.attack.steps})

    entries = []
    for m in models:
        s = stage[m.name]
        metrics = s.get("metrics") or s.get("after") or {}  # unlearn: metrics after
        entries.append({
            "name": m.name, "kind": m.kind, "alpha": m.alpha, "seed": m.seed,
            "stage_dir": str(m.stage_dir),
            "metrics": metrics,
            "compute": compute_of(s, gold_stage if m.kind not in ("base", "gold") else None),
            "wall_time_s": s.get("wall_time_s"),
            "attack": _attack_section(m.attack_dir, forget_metric.name),
            "search": _search_section(m.attack_dir) if cfg.study.attack_search else None,
            # Distilled models only: did the student recover its teacher's retain ability
            # within budget (null for models that are not distilled)?
            "recovered": s.get("recovered") if m.kind in DISTILLED else None,
        })

    by_name = {e["name"]: e for e in entries}
    ref_u = by_name.get(unlearn_name) if unlearn_name else None
    ref_g = by_name[gold_name] if gold_name else None
    for e in entries:
        # Undefined (null) for the reference models and wherever an attack is missing.
        e["robustness"] = {budget_key(k): None for k in budgets}
        if e["kind"] in ("base", "gold", "unlearn_only") or not e["attack"] or not ref_u \
                or not ref_u["attack"] or not ref_g or not ref_g["attack"]:
            continue
        for k in budgets:
            key = budget_key(k)
            p = e["attack"]["worst_case"].get(key)
            u = ref_u["attack"]["worst_case"].get(key)
            g = ref_g["attack"]["worst_case"].get(key)
            e["robustness"][key] = (robustness(p["value"], u["value"], g["value"],
                                               tol=cfg.study.min_robustness_gap)
                                    if p and u and g else None)

    _search_robustness(entries, ref_u, ref_g, budgets, cfg.study.min_robustness_gap)
    return {
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
        "models": entries,
        "wall_time_s": wall_time_s,
    }


def write_summary(run_dir: Path, summary: dict[str, Any]) -> Path:
    return write_json(run_dir / "summary.json", summary)
