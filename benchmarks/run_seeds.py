"""One study over several run seeds, pooled: what a single run's intervals leave out.

    python benchmarks/run_seeds.py RUN_DIR RUN_DIR [...] [--out benchmarks/results/run_seeds.json]
        [--conditions TEXT]

Each RUN_DIR is a finished `undo run` of one config at a different `seed` (each its own
base model, gold standard and teacher). `undo.study.pooled.pool_runs` reads their
summaries and relearn.json files: per attack and budget, each arm's robustness as the
mean of the runs' own, with a 95% interval that resamples the runs and, inside each, the
eval items, attack seeds and students; per arm, every compute fraction the same way.
Written to --out with each run's own point, and printed at the largest budget.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from undo.artifacts import environment, write_json
from undo.configlib import ConfigError
from undo.study.pooled import pool_runs


def _ci(r: dict) -> str:
    if r.get("point") is None:
        return "-"
    if r.get("lo") is None:
        return f"{r['point']:.2f}"
    return f"{r['point']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/run_seeds.json"))
    ap.add_argument("--conditions", help="how each run was made (measured outside)")
    a = ap.parse_args()
    try:
        pooled = pool_runs(a.runs)
    except ConfigError as e:
        raise SystemExit(f"run_seeds.py: {e}") from None
    write_json(a.out, {**pooled, "conditions": a.conditions,
                       "load_average_at_write": os.getloadavg(), "environment": environment()})
    for attack, by_budget in pooled["attacks"].items():
        budget = max(by_budget, key=int)
        print(f"{attack}, {budget} steps, run seeds {pooled['run_seeds']}:")
        for arm, r in by_budget[budget]["robustness"].items():
            runs = " ".join("-" if p is None else f"{p:.2f}" for p in r["per_run"])
            print(f"  {arm:22s} R {_ci(r):24s} per run {runs}")
    for arm, c in pooled["compute"].items():
        print(f"  {arm:22s} total FLOPs of gold's {_ci(c['total_fraction_of_gold_flops'])}")


if __name__ == "__main__":
    main()
