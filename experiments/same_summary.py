"""Does a change leave the study's numbers alone? Run one config at two git revisions.

    python experiments/same_summary.py REV_A REV_B [CONFIG] [--out JSON]

Each revision is checked out into a temporary git worktree and runs `undo run CONFIG`
(default: configs/arithmetic/smoke.yaml, every stage in seconds) in a fresh folder with
its own code (PYTHONPATH). The two `summary.json` files are compared value by value over
every model (paths and timings aside): the result says how many values differ and the
largest relative difference. Then REV_B's code runs once more in REV_A's run folder: `reuse`
says whether its cache keys are REV_A's (every stage and attack folder reused, none added,
no result file rewritten). Written to experiments/results/same_summary.json by default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from undo.configlib import flatten

ROOT = Path(__file__).resolve().parents[1]
IGNORED = ("stage_dir", "wall_time", "train_time", "relearn_json", "build_time", "cache_dir")


def compare(a: dict, b: dict) -> dict[str, Any]:
    fa = {k: v for k, v in flatten(a["models"], lists=True).items()
          if not any(s in k for s in IGNORED)}
    fb = {k: v for k, v in flatten(b["models"], lists=True).items()
          if not any(s in k for s in IGNORED)}
    differing, max_rel = [], 0.0
    for k in sorted(set(fa) | set(fb)):
        va, vb = fa.get(k, "<missing>"), fb.get(k, "<missing>")
        if va == vb:
            continue
        if isinstance(va, float) and isinstance(vb, float):
            max_rel = max(max_rel, abs(va - vb) / max(abs(va), 1e-12))
        differing.append({"key": k, "a": va, "b": vb})
    return {"values_compared": len(set(fa) | set(fb)), "values_differing": len(differing),
            "max_relative_difference": max_rel, "first_differences": differing[:20]}


RESULT_FILES = ("summary.json", "relearn.json", "model.safetensors")


def folders(run: Path) -> dict[str, float]:
    """Every stage and attack folder of a run, with the newest mtime of its result files."""
    out = {}
    for d in [*run.glob("*/stages/*"), *run.glob("*/attacks/*")]:
        if d.is_dir():
            files = [f for name in RESULT_FILES for f in d.rglob(name)]
            out[f"{d.parent.name}/{d.name}"] = max((f.stat().st_mtime for f in files),
                                                   default=0.0)
    return out


def reuse(rev: str, config: str, work: Path, runs: Path) -> dict:
    """Run `rev` in the run folder `runs` another revision made: what it recomputed."""
    before = folders(runs)
    run_at(rev, config, work, out=runs)
    after = folders(runs)
    return {"folders_before": len(before), "folders_after": len(after),
            "added": sorted(set(after) - set(before)),
            "rewritten": sorted(k for k in before if after.get(k, 0.0) > before[k])}


def run_at(rev: str, config: str, work: Path, out: Path | None = None) -> dict:
    tree = work / f"tree-{rev}"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(tree), rev],
                   check=True)
    try:
        env = {**os.environ, "PYTHONPATH": str(tree / "src")}
        out = out or work / f"runs-{rev}"
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "undo.cli", "run", str(tree / config),
                        f"out_dir={out}"], check=True, env=env, cwd=tree,
                       stdout=subprocess.DEVNULL)
        summary = json.loads(next(out.glob("*/summary.json")).read_text())
        summary["_wall_s"] = time.time() - t0
        return summary
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                       check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("config", nargs="?", default="configs/arithmetic/smoke.yaml")
    ap.add_argument("--out", default=str(ROOT / "experiments/results/same_summary.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a = run_at(args.rev_a, args.config, Path(tmp))
        b = run_at(args.rev_b, args.config, Path(tmp))
        reused = reuse(args.rev_b, args.config, Path(tmp), Path(tmp) / f"runs-{args.rev_a}")
    shas = {r: subprocess.run(["git", "-C", str(ROOT), "rev-parse", r], capture_output=True,
                              text=True, check=True).stdout.strip() for r in (args.rev_a, args.rev_b)}
    result = {"config": args.config, "rev_a": shas[args.rev_a], "rev_b": shas[args.rev_b],
              **compare(a, b), "reuse": reused}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "first_differences"}, indent=2))


if __name__ == "__main__":
    main()
