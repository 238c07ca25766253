"""The default study at fp32 and at bf16-mixed (`precision`, or only its attacks':
`attack.precision`), side by side: what the faster precision changes in the numbers
(issue 24 item 3, "say which numbers change").

    python experiments/precision_side_by_side.py --run fp32=RUN_DIR --run bf16-mixed=RUN_DIR
        [--conditions NAME=TEXT ...] [--out experiments/results/precision_side_by_side.json]

Each RUN_DIR is a finished `undo run` of the embedded default study (3 seeds); the two
differ only by `precision` or `attack.precision` (checked from their configs:
undo.study.run_folder.config_differences). Under `precision` nothing is shared: it is in
every stage's key, so each run has its own base, gold standard, teacher and references;
under `attack.precision` the models are the same and only their attacks differ, so each
model's worst cases are compared directly too (`worst_case_differences`). Any other one
setting works the same way: the run seed (`seed`, which draws the base model, the gold
standard and so the teacher) measures what the intervals of one run leave out.
Per run: the pretrained and unlearned models' metrics before any attack, the
study's wall time (its summary's) and, per distilled arm, norms_side_by_side.py's
`treatment` (robustness at the largest budget of each attack with its 95% interval,
recovery, compute as fractions of the run's own gold standard). Each arm is compared
across the runs by the report's rule (a difference only when intervals separate).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

# The sibling scripts (this folder is on sys.path when a script here runs).
from norms_side_by_side import side_by_side, treatment
from recipe_side_by_side import named
from undo.artifacts import environment, read_json, write_json
from undo.configlib import read_yaml
from undo.study.run_folder import config_differences, loaded_config


def references(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Base, gold standard and unlearned teacher: their retain and forget metrics (the
    benchmark's own: accuracy for arithmetic, CE for text) and the retain metric on the
    validation split, before any attack."""
    retain, forget = summary["retain_metric"]["name"], summary["metric"]["name"]
    keys = (retain, forget, retain.replace("retain/", "retain_val/", 1))
    return {m["name"]: {k: m["metrics"][k] for k in keys if k in m["metrics"]}
            for m in summary["models"] if m["kind"] in ("base", "gold", "unlearn_only")}


def worst_case_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """Where two summaries attacked the same models (`attack.precision` alone differs):
    per budget, how far each model's worst-case forget metric and the attacked model's
    retain metric moved, over every model and attack (None where the models differ)."""
    def stages(s: dict[str, Any]) -> list[str]:  # each model's stage folder by its key
        return [Path(m["stage_dir"]).name for m in s["models"]]

    if stages(a) != stages(b):
        return None
    moved: dict[str, list[tuple[float, float, str]]] = {}
    for ma, mb in zip(a["models"], b["models"], strict=True):
        for att, wa in ma["attacks"].items():
            for budget, x in wa["worst_case"].items():
                y = mb["attacks"][att]["worst_case"][budget]
                moved.setdefault(budget, []).append(
                    (abs(x["value"] - y["value"]), abs(x["retain"] - y["retain"]),
                     f"{ma['name']} ({att})"))
    return {budget: {"cases": len(v), "max_value": max(v)[0], "at": max(v)[2],
                     "mean_value": sum(x[0] for x in v) / len(v),
                     "max_retain": max(x[1] for x in v),
                     "mean_retain": sum(x[1] for x in v) / len(v)}
            for budget, v in moved.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                    help="fp32 first, then bf16-mixed")
    ap.add_argument("--conditions", action="append", default=[], metavar="NAME=TEXT",
                    help="wall time and what else ran, measured outside")
    ap.add_argument("--out", type=Path,
                    default=Path("experiments/results/precision_side_by_side.json"))
    a = ap.parse_args()
    runs = {name: Path(p).resolve() for name, p in named(a.run, "RUN_DIR").items()}
    for name, run in runs.items():
        if not (run / "summary.json").is_file():
            raise SystemExit(f"--run {name}={run}: no summary.json (not a finished study)")
    first, *others = runs
    configs = {n: loaded_config(read_yaml(r / "config.yaml")) for n, r in runs.items()}
    summaries = {n: read_json(r / "summary.json") for n, r in runs.items()}
    arms = list(summaries[first]["intervals"]["compute"])
    per_arm = {arm: {n: treatment(r, None, arm) for n, r in runs.items()} for arm in arms}
    result = {
        "runs": {n: {"run": str(r), "precision": configs[n]["precision"],
                     "attack_precision": configs[n]["attack"].get("precision"),
                     "study_wall_time_s": summaries[n]["wall_time_s"],
                     "references": references(summaries[n])} for n, r in runs.items()},
        "differences": {o: config_differences(configs[first], configs[o]) for o in others},
        "arms": per_arm,
        "comparison": {arm: side_by_side(t) for arm, t in per_arm.items()},
        "worst_case_differences": {o: worst_case_differences(summaries[first], summaries[o])
                                   for o in others},
        "conditions": named(a.conditions, "TEXT") if a.conditions else None,
        "load_average_at_write": os.getloadavg(), "environment": environment(),
    }
    write_json(a.out, result)
    for arm, t in per_arm.items():
        for n, x in t.items():
            rob = {att: (r["robustness"] or {}).get("point") for att, r in x["attacks"].items()}
            c = x["compute"]["total_fraction_of_gold_flops"]
            print(f"{arm:22s} {n:11s} recovered {sum(v is True for v in x['recovered'].values())}"
                  f"/{len(x['recovered'])}  R {rob}  total FLOPs/gold {c.get('point')}")
    print(result["comparison"])


if __name__ == "__main__":
    main()
