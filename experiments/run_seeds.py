"""One study over several run seeds, pooled: what a single run's intervals leave out.

    python experiments/run_seeds.py RUN_DIR RUN_DIR [...] [--out experiments/results/run_seeds.json]
        [--conditions TEXT]

(`undo pool RUN_DIR RUN_DIR ... [--out FILE]` is the same for users; this script adds the
conditions and environment a benchmark result keeps.)

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
from undo.study.pooled import format_pooled, pool_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/run_seeds.json"))
    ap.add_argument("--conditions", help="how each run was made (measured outside)")
    a = ap.parse_args()
    try:
        pooled = pool_runs(a.runs)
    except ConfigError as e:
        raise SystemExit(f"run_seeds.py: {e}") from None
    write_json(a.out, {**pooled, "conditions": a.conditions,
                       "load_average_at_write": os.getloadavg(), "environment": environment()})
    print(format_pooled(pooled))

if __name__ == "__main__":
    main()
