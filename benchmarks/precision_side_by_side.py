"""The default study at fp32 and at bf16-mixed (`precision`), side by side: what the
faster precision changes in the numbers (issue 24 item 3, "say which numbers change").

    python benchmarks/precision_side_by_side.py --run fp32=RUN_DIR --run bf16-mixed=RUN_DIR
        [--conditions NAME=TEXT ...] [--out benchmarks/results/precision_side_by_side.json]

Each RUN_DIR is a finished `undo run` of the embedded default study (3 seeds); the two
differ only by `precision` (checked from their configs: undo.stages.base
.config_differences). Unlike the recipe side-by-sides, nothing is shared: precision is
in every stage's key, so each run has its own base, gold standard, teacher and
references. Per run: the pretrained and unlearned models' metrics before any attack, the
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
from undo.stages.base import config_differences, loaded_config

REFERENCE_METRICS = ("retain/acc", "forget/acc", "retain_val/acc")


def references(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Base, gold standard and unlearned teacher: their metrics before any attack."""
    return {m["name"]: {k: m["metrics"][k] for k in REFERENCE_METRICS}
            for m in summary["models"] if m["kind"] in ("base", "gold", "unlearn_only")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                    help="fp32 first, then bf16-mixed")
    ap.add_argument("--conditions", action="append", default=[], metavar="NAME=TEXT",
                    help="wall time and what else ran, measured outside")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/precision_side_by_side.json"))
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
                     "study_wall_time_s": summaries[n]["wall_time_s"],
                     "references": references(summaries[n])} for n, r in runs.items()},
        "differences": {o: config_differences(configs[first], configs[o]) for o in others},
        "arms": per_arm,
        "comparison": {arm: side_by_side(t) for arm, t in per_arm.items()},
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
