"""Robustness against total compute, from finished studies (issue 24 item 1).

    python experiments/frontier.py RUN_DIR_OR_SUMMARY [...] [--pooled POOLED_JSON ...]
        [--out experiments/results/frontier.json]

For every distilled arm (UNDO α, Unlearn-and-Distill) of every given study (a run folder
or its summary.json), under every attack of the study, at its largest attack budget:
robustness with its 95% interval, and the arm's total compute (unlearning included) as a
fraction of the gold standard's in steps and FLOPs, with intervals, and in absolute
steps and FLOPs (mean over the arm's seeds). Every number is the summary's own
(`intervals.attacks`, `intervals.compute`, each model's `compute`): nothing is
recomputed here, so the frontier is the report's. Several studies (other α, another
recipe) add their points side by side, each with the settings that tell them apart (a
fixed set, plus every config key in which the studies differ, where they ran aside).

`--pooled` adds the points of a study pooled over run seeds (`undo pool ... --out FILE`,
experiments/run_seeds.py): the same arms and attacks, with intervals that also resample
the run seed (each run its own base model, gold standard and teacher), its settings
those of its first run where that folder is still there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean
from typing import Any

from undo.analysis.arms import label_of
from undo.artifacts import read_json, write_json
from undo.config import RESULT_NEUTRAL_KEYS
from undo.configlib import differing, flatten
from undo.report import load_summary, views

HERE = Path(__file__).resolve().parent
# The recipe settings every point records (read from each summary's config); the keys in
# which the given studies' configs differ are added to them (`settings`).
SETTINGS = ("noise.norms", "distill.data_order", "distill.lr", "distill.batch_size",
            "distill.teacher_cache", "study.seeds")


def summary_of(path: Path) -> dict[str, Any]:
    return load_summary(path if path.is_file() else path / "summary.json")


def settings(summary: dict[str, Any], differ: list[str]) -> dict[str, Any]:
    """SETTINGS and the keys `differ` (those that tell the given studies apart) of
    this summary's config."""
    cfg = flatten(summary.get("config", {}))
    return {k: cfg.get(k) for k in dict.fromkeys([*SETTINGS, *differ])}


def points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    budget = views.largest_budget(summary)
    iv = summary["intervals"]
    arms: dict[str, list[dict]] = {}
    for m in summary["models"]:
        arm = label_of(m)
        if arm is not None:
            arms.setdefault(arm, []).append(m)
    out = []
    for attack, by_budget in iv["attacks"].items():
        rob = by_budget[str(budget)]["robustness"]
        for arm, models in arms.items():
            comp = iv["compute"].get(arm, {})
            out.append({
                "arm": arm, "attack": attack, "budget": budget, "seeds": len(models),
                "robustness": rob.get(arm),
                "total_fraction_of_gold_steps": comp.get("total_fraction_of_gold_steps"),
                "total_fraction_of_gold_flops": comp.get("total_fraction_of_gold_flops"),
                "total_steps_mean": mean(m["compute"]["total_steps"] for m in models),
                "total_flops_mean": mean(m["compute"]["total_flops"] for m in models),
                "recovered": sum(bool(m.get("recovered")) for m in models),
            })
    return out


def pooled_points(pooled: dict[str, Any]) -> list[dict[str, Any]]:
    """`points` of a pooled study (`undo.study.pooled.pool_runs`): robustness and compute
    fractions with run-seed-resampling intervals; no absolute means (the runs' gold
    standards differ)."""
    out = []
    for attack, by_budget in pooled["attacks"].items():
        budget = max(by_budget, key=int)
        for arm, rob in by_budget[budget]["robustness"].items():
            comp = pooled["compute"].get(arm, {})
            out.append({
                "arm": arm, "attack": attack, "budget": int(budget),
                "run_seeds": pooled["run_seeds"], "robustness": rob,
                "total_fraction_of_gold_steps": comp.get("total_fraction_of_gold_steps"),
                "total_fraction_of_gold_flops": comp.get("total_fraction_of_gold_flops"),
            })
    return out


def first_run_summary(pooled: dict[str, Any]) -> dict[str, Any]:
    """The summary of a pooled study's first run (its settings), {} once it is gone."""
    first = Path(pooled["runs"][0]) / "summary.json"
    return load_summary(first) if first.is_file() else {}


def gold_compute(summary: dict[str, Any]) -> dict[str, Any] | None:
    gold = next((m for m in summary["models"] if m["kind"] == "gold"), None)
    return None if gold is None else {k: gold.get("compute", {}).get(k)
                                      for k in ("steps", "flops")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "frontier.json")
    ap.add_argument("--pooled", type=Path, action="append", default=[],
                    help="a study pooled over run seeds (undo pool --out FILE)")
    a = ap.parse_args()
    summaries = [summary_of(path) for path in a.studies]
    pooled = [read_json(path) for path in a.pooled]
    configs = [s.get("config", {}) for s in
               [*summaries, *(first_run_summary(d) for d in pooled)]]
    differ = list(differing(configs, RESULT_NEUTRAL_KEYS))
    runs = []
    for path, s in zip(a.studies, summaries, strict=True):
        runs.append({"study": str(path), "settings": settings(s, differ),
                     "gold": gold_compute(s), "points": points(s)})
    for path, d, cfg in zip(a.pooled, pooled, configs[len(summaries):], strict=True):
        runs.append({"study": str(path), "pooled_runs": d["runs"],
                     "settings": settings({"config": cfg}, differ),
                     "points": pooled_points(d)})
    for run in runs:
        print(f"{run['study']}  {run['settings']}")
        print(f"  {'arm':<22}{'attack':<13}{'robustness [95%]':<22}{'steps of gold':<22}"
              f"{'FLOPs of gold':<22}")
        for p in run["points"]:
            print(f"  {p['arm']:<22}{p['attack']:<13}{views.fmt_ci(p['robustness']):<22}"
                  f"{views.fmt_ci(p['total_fraction_of_gold_steps'], pct=True):<22}"
                  f"{views.fmt_ci(p['total_fraction_of_gold_flops'], pct=True):<22}")
    write_json(a.out, {"what": "robustness at the largest attack budget against total "
                               "compute (unlearning included), per arm and attack; every "
                               "number the study summary's own (or the pooled study's)",
                       "runs": runs})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
