"""Teacher-cache disk of a study: one seed against three, per data order (issue 24).

    python experiments/teacher_cache_disk.py --measure [CONFIG] [key=value ...]
    python experiments/teacher_cache_disk.py --run-dir RUN_DIR [--label TEXT]

Every distillation of a study reads its teacher's outputs from an on-disk cache keyed by
the teacher, the data and the data order (undo.stages.teacher_cache). With
`distill.data_order: shared` (ours, an option) every seed distills on the run seed's
batches and one cache serves them all; with `per_seed` (the default, the authors' order)
each seed has its own order and its own cache, so disk grows with the seeds.

--measure runs the study's distillations for real (`undo run CONFIG study.stages=[unlearn,
distill, oracle]`: pretraining, unlearning, every distillation and the oracles, no
attacks) under each data order into a scratch folder, first with seed 0, then with seeds
0, 1, 2 in the same folder (seed 0's stages are reused), and measures the cache folders'
disk (`du`) after each. CONFIG defaults to the smoke config with a longer distillation
budget (DEFAULT_OVERRIDES), so that caches span several chunks and the students stop at
different steps; extra key=value overrides apply to every run.
--run-dir reads a finished study folder instead: it groups the caches its distillations
used by seed (their summary.json) and reports the disk of seed 0's caches against all.
Both write experiments/results/teacher_cache_disk.json (--out), keyed by what was measured,
with the load average around the measurement.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from undo.artifacts import read_json, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SMOKE = ROOT / "configs" / "arithmetic" / "smoke.yaml"
# Longer than the smoke config's 10 steps: caches of several 20-step chunks, early stops
# at different steps per student; three α and Unlearn-and-Distill, as the default study.
DEFAULT_OVERRIDES = ["distill.steps=100", "distill.eval_every=10", "study.alphas=[0.2,0.5,0.8]",
                     "study.unlearn_distill=true", "study.oracles=true", "study.workers=1"]
SEEDS = {"1 seed": "[0]", "3 seeds": "[0,1,2]"}


def du(paths: list[Path]) -> int:
    """Bytes on disk of the given folders (`du -sb`, each counted once)."""
    paths = sorted({p for p in paths if p.exists()})
    if not paths:
        return 0
    out = subprocess.run(["du", "-scb", *map(str, paths)], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    return int(out[-1].split()[0])


def caches_by_seed(run_dir: Path) -> dict[str, list[Path]]:
    """Cache folders each distillation of a finished study used, by its seed."""
    out: dict[str, list[Path]] = {}
    for s in sorted((run_dir / "stages").glob("distill-*/summary.json")):
        summary = read_json(s)
        cache = summary.get("teacher_outputs", {}).get("cache_dir")
        if cache:
            # By name: the recorded path may be relative to where the study ran.
            out.setdefault(f"seed {summary['seed']}", []).append(
                run_dir / "cache" / Path(cache).name)
    return out


def from_run_dir(run_dir: Path) -> dict:
    by_seed = caches_by_seed(run_dir)
    one = du(by_seed.get("seed 0", []))
    every = du([p for ps in by_seed.values() for p in ps])
    return {"run_dir": str(run_dir), "seeds": sorted(by_seed),
            "caches": sorted({str(p.name) for ps in by_seed.values() for p in ps}),
            "bytes_seed0": one, "bytes_all_seeds": every,
            "ratio_all_to_seed0": every / one if one else None}


def measure(config: str, overrides: list[str], scratch: Path) -> dict:
    results = {}
    for order in ("shared", "per_seed"):
        out_dir = scratch / order
        shutil.rmtree(out_dir, ignore_errors=True)
        rows = {}
        for label, seeds in SEEDS.items():
            args = [sys.executable, "-m", "undo.cli", "run", config, f"out_dir={out_dir}",
                    "progress=false", "study.stages=[unlearn,distill,oracle]",
                    f"distill.data_order={order}", f"study.seeds={seeds}", *overrides]
            t0 = time.time()
            subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
            run_dir = next(d for d in out_dir.iterdir() if d.is_dir())
            caches = sorted(p for p in (run_dir / "cache").iterdir() if p.is_dir())
            rows[label] = {"bytes": du(caches), "cache_folders": len(caches),
                           "wall_s": round(time.time() - t0, 1)}
            print(f"{order:>9} {label}: {rows[label]['bytes'] / 2**20:.1f} MiB in "
                  f"{len(caches)} cache folder(s) ({rows[label]['wall_s']} s)")
        rows["ratio_3_to_1"] = rows["3 seeds"]["bytes"] / rows["1 seed"]["bytes"]
        results[order] = rows
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default=str(SMOKE))
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--label", default=None, help="key for a --run-dir result")
    ap.add_argument("--scratch", type=Path, default=HERE / "results" / "study-run" / "cache-disk")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "teacher_cache_disk.json")
    a = ap.parse_args()
    if a.measure == (a.run_dir is not None):
        ap.error("give one of --measure or --run-dir")
    record = read_json(a.out) if a.out.is_file() else {}
    load_before = os.getloadavg()
    if a.measure:
        overrides = DEFAULT_OVERRIDES + a.overrides if a.config == str(SMOKE) else a.overrides
        result = {"config": a.config, "overrides": overrides,
                  **measure(a.config, overrides, a.scratch)}
        key = "measured"
    else:
        result = from_run_dir(a.run_dir)
        key = a.label or f"run_dir {a.run_dir.name}"
        print(f"{key}: seed 0 {result['bytes_seed0'] / 2**20:.0f} MiB, all seeds "
              f"{result['bytes_all_seeds'] / 2**20:.0f} MiB "
              f"(x{result['ratio_all_to_seed0'] or 0:.2f})")
    result["load_average_1_5_15_min"] = {"before": load_before, "after": os.getloadavg()}
    record[key] = result
    write_json(a.out, record)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
