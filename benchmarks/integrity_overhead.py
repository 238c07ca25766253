"""What integrity work costs a whole study (issue 25's floor: with vs without verification
at most 3% apart), measured two ways:

    python benchmarks/integrity_overhead.py [--config configs/arithmetic/smoke.yaml]
        [--pairs 3] [--folder RUN_DIR ...] [--out benchmarks/results/integrity_overhead.json]

- `side_by_side`: the study of `--config` run `--pairs` times with integrity on and off
  (`UNDO_INTEGRITY=off`, for this benchmark only), alternated on/off/on/off in one
  session, each `undo run` a fresh process in a fresh run folder; wall times and the
  ratio of the medians. On a shared machine one run's wall time varies by more than 3%,
  so this resolves large overheads only.
- `instrumented`: in each finished run folder (the "on" runs, and every `--folder`), the
  seconds every stage spent on manifests and checks (meta.json's `integrity_seconds`,
  counted by undo.integrity) plus each stage's final manifest (timed here on the finished
  folder: it cannot be in the files it covers), over the stages' wall times. A folder
  written before the count existed has no `integrity_seconds` and is refused.

Load averages are recorded around every run: other jobs on the machine slow both arms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from undo import integrity
from undo.artifacts import environment, write_json

ROOT = Path(__file__).resolve().parents[1]


def stage_folders(run: Path) -> list[Path]:
    return sorted(p.parent for p in [*run.glob("stages/*/summary.json"),
                                     *run.glob("attacks/*/summary.json")])


def instrumented(run: Path) -> dict[str, Any]:
    """Integrity seconds over stage wall seconds in a finished run folder."""
    counted = final = wall = 0.0
    stages = stage_folders(run)
    if not stages:
        raise SystemExit(f"{run}: no finished stage folders")
    for d in stages:
        meta = json.loads((d / "meta.json").read_text())
        if "integrity_seconds" not in meta:
            raise SystemExit(f"{d}: meta.json has no integrity_seconds (written by an "
                             "undo without the count); run the study again to measure it")
        counted += meta["integrity_seconds"]
        wall += json.loads((d / "summary.json").read_text())["wall_time_s"]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            integrity.write_manifest(d, path=Path(tmp) / integrity.MANIFEST)
            final += time.perf_counter() - t0
    total = counted + final
    return {"run_dir": str(run), "stages": len(stages), "stage_wall_s": wall,
            "integrity_s_counted": counted, "final_manifests_s": final,
            "integrity_s": total, "fraction_of_stage_wall": total / wall}


def one_run(config: str, out: Path, on: bool) -> dict[str, Any]:
    env = {**os.environ, integrity.SWITCH: "on" if on else "off"}
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "undo.cli", "run", config, f"out_dir={out}",
                    "progress=false"], env=env, check=True, stdout=subprocess.DEVNULL)
    return {"integrity": "on" if on else "off", "wall_s": time.perf_counter() - t0,
            "load_before": load0, "load_after": os.getloadavg()}


def side_by_side(config: str, pairs: int, keep: Path) -> tuple[dict[str, Any], list[Path]]:
    runs, folders = [], []
    for i in range(pairs):
        for on in (True, False):
            out = keep / f"{i}-{'on' if on else 'off'}"
            runs.append(one_run(config, out, on))
            print(json.dumps(runs[-1]), flush=True)
            if on:
                (folder,) = [p.parent for p in out.glob("*/summary.json")]
                folders.append(folder)
    med = {arm: statistics.median(r["wall_s"] for r in runs if r["integrity"] == arm)
           for arm in ("on", "off")}
    return {"config": config, "pairs": pairs, "runs": runs, "median_wall_s": med,
            "on_over_off": med["on"] / med["off"]}, folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/arithmetic/smoke.yaml")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--folder", action="append", default=[], type=Path,
                    help="a finished run folder to measure the instrumented fraction of")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "integrity_overhead.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="undo-integrity-") as tmp:
        sbs, folders = side_by_side(args.config, args.pairs, Path(tmp))
        result = {
            "side_by_side": sbs,
            "instrumented": [instrumented(f) for f in [*folders, *args.folder]],
            "load_average_end": os.getloadavg(),
            "note": "measured on the shared 2-core machine with other engineers' jobs "
                    "running; see load averages",
            "environment": environment(),
        }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("side_by_side", "instrumented")}, indent=1))


if __name__ == "__main__":
    main()
