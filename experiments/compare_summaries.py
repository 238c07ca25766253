"""Do two study summaries hold the same numbers? (A second run of the same config.)

    python experiments/compare_summaries.py A/summary.json B/summary.json [--wall-s S]
        [--note TEXT] [--out experiments/results/NAME.json]
    python experiments/compare_summaries.py --stages RUN_A RUN_B [--note TEXT] [--out ...]

Compares every value under `models` and `intervals`, leaving out what a run may change
without changing a result: wall and train times, folder paths, the environment and the
config's record of where it ran. Writes the counts and the first differing keys.
`--stages`: two run folders instead, every stage's and attack's summary.json and
relearn.json that both hold (a run still going compares what it finished), all values
but those above, paths inside the run folder compared relative to it.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from undo.configlib import flatten

# Keys whose values depend on where and how fast a run went, not on what it computed.
SKIP = ("wall_time", "train_time", "time_s", "stage_dir", "relearn_json", "_dir", "path",
        "environment", "commit")


def compare(a: dict, b: dict, section: str) -> dict[str, Any]:
    fa = {k: v for k, v in flatten(a.get(section, {}), lists=True).items()
          if not any(s in k for s in SKIP)}
    fb = {k: v for k, v in flatten(b.get(section, {}), lists=True).items()
          if not any(s in k for s in SKIP)}
    both = sorted(set(fa) & set(fb))
    differ = [k for k in both if fa[k] != fb[k]]
    return {"compared": len(both), "differ": len(differ), "first_differing": differ[:20],
            "only_in_one": sorted(set(fa) ^ set(fb))[:20]}


def stage_files(run: Path) -> dict[str, Any]:
    """Stage and attack files by relative name, the run folder's own path written as RUN
    (a teacher or base recorded by path then compares equal between two folders)."""
    here = str(run.resolve())
    return {str(f.relative_to(run)): json.loads(f.read_text().replace(here, "RUN"))
            for kind in ("stages", "attacks") for f in sorted((run / kind).glob("*/*.json"))
            if f.name in ("summary.json", "relearn.json")}


def compare_stages(a: Path, b: Path) -> dict[str, Any]:
    fa, fb = stage_files(a), stage_files(b)
    both = sorted(set(fa) & set(fb))
    cmp = [(name, compare({"x": fa[name]}, {"x": fb[name]}, "x")) for name in both]
    return {"files_compared": len(both), "files_only_in_one": sorted(set(fa) ^ set(fb)),
            "values_compared": sum(c["compared"] for _, c in cmp),
            "values_differ": sum(c["differ"] for _, c in cmp),
            "first_differing": [f"{n}: {k}" for n, c in cmp for k in c["first_differing"]][:20],
            "keys_only_in_one": sum(len(c["only_in_one"]) for _, c in cmp)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--wall-s", type=float, help="the second run's wall time, to record")
    ap.add_argument("--note", default="", help="how the second run was made")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--stages", action="store_true", help="a and b are run folders")
    args = ap.parse_args()
    result = {"a": str(args.a), "b": str(args.b), "note": args.note, "wall_s_b": args.wall_s,
              "load_average_at_write": os.getloadavg()}
    if args.stages:
        result["stages"] = compare_stages(args.a, args.b)
    else:
        a, b = json.loads(args.a.read_text()), json.loads(args.b.read_text())
        result.update({s: compare(a, b, s) for s in ("models", "intervals")})
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
