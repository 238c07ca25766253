"""Robustness against total compute, from finished studies (issue 24 item 1).

    python benchmarks/frontier.py RUN_DIR_OR_SUMMARY [...] [--out benchmarks/results/frontier.json]

For every distilled arm (UNDO α, Unlearn-and-Distill) of every given study (a run folder
or its summary.json), under every attack of the study, at its largest attack budget:
robustness with its 95% interval, and the arm's total compute (unlearning included) as a
fraction of the gold standard's in steps and FLOPs, with intervals, and in absolute
steps and FLOPs (mean over the arm's seeds). Every number is the summary's own
(`intervals.attacks`, `intervals.compute`, each model's `compute`): nothing is
recomputed here, so the frontier is the report's. Several studies (other α, another
recipe) add their points side by side, each with the settings that tell them apart.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from statistics import mean
from typing import Any

from undo.artifacts import write_json
from undo.report import load_summary, views

HERE = Path(__file__).resolve().parent
# The settings that tell two studies' points apart (read from each summary's config).
SETTINGS = (("noise", "norms"), ("distill", "data_order"), ("distill", "lr"),
            ("distill", "batch_size"), ("distill", "teacher_cache"), ("study", "seeds"))


def summary_of(path: Path) -> dict[str, Any]:
    return load_summary(path if path.is_file() else path / "summary.json")


def settings(summary: dict[str, Any]) -> dict[str, Any]:
    cfg = summary.get("config", {})
    return {f"{a}.{b}": cfg.get(a, {}).get(b) for a, b in SETTINGS}


def points(summary: dict[str, Any]) -> list[dict[str, Any]]:
    budget = views.largest_budget(summary)
    iv = summary["intervals"]
    arms: dict[str, list[dict]] = {}
    for m in summary["models"]:
        arm = views.arm_of(m)
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


def gold_compute(summary: dict[str, Any]) -> dict[str, Any] | None:
    gold = next((m for m in summary["models"] if m["kind"] == "gold"), None)
    return None if gold is None else {k: gold.get("compute", {}).get(k)
                                      for k in ("steps", "flops")}


def fmt(iv: dict | None) -> str:
    return "-" if iv is None else f"{iv['point']:.2f} [{iv['lo']:.2f}, {iv['hi']:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("studies", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "frontier.json")
    a = ap.parse_args()
    runs = []
    for path in a.studies:
        s = summary_of(path)
        runs.append({"study": str(path), "settings": settings(s), "gold": gold_compute(s),
                     "points": points(s)})
        print(f"{path}  {runs[-1]['settings']}")
        print(f"  {'arm':<22}{'attack':<13}{'robustness [95%]':<22}{'steps of gold':<22}"
              f"{'FLOPs of gold':<22}")
        for p in runs[-1]["points"]:
            print(f"  {p['arm']:<22}{p['attack']:<13}{fmt(p['robustness']):<22}"
                  f"{fmt(p['total_fraction_of_gold_steps']):<22}"
                  f"{fmt(p['total_fraction_of_gold_flops']):<22}")
    write_json(a.out, {"what": "robustness at the largest attack budget against total "
                               "compute (unlearning included), per arm and attack; every "
                               "number the study summary's own",
                       "runs": runs})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
