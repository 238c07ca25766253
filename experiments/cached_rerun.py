"""Wall time of a cached re-run of a finished study (`undo run` with every stage done).

    python experiments/cached_rerun.py OUT_DIR [key=value ...] [--src NAME=PATH ...]
        [--rounds 2] [--out experiments/results/cached_rerun.json]

Runs `python -m undo.cli run out_dir=OUT_DIR key=value ...` (the study in OUT_DIR, all
cached) as a fresh process, end to end, `--rounds` times. With several `--src NAME=PATH`
(a copy of `src/` of another undo, e.g. before a change), the versions alternate within
each round, so their ratio is measured side by side under the same load; without, this
checkout's `src/`. Records every wall time and the load average before and after each.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from undo.artifacts import write_json

HERE = Path(__file__).resolve().parent


def one(src: Path, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    rc = subprocess.run([sys.executable, "-m", "undo.cli", "run", *args], env=env,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return {"wall_s": round(time.perf_counter() - t0, 2), "rc": rc,
            "load_1min_before": load, "load_1min_after": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--src", action="append", default=[], help="NAME=PATH of a src/ tree")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "cached_rerun.json")
    a = ap.parse_args()
    srcs = dict(s.split("=", 1) for s in a.src) or {"this": str(HERE.parent / "src")}
    args = [f"out_dir={a.out_dir}", *a.overrides]
    runs: dict[str, list[dict]] = {n: [] for n in srcs}
    for _ in range(a.rounds):
        for name, src in srcs.items():
            runs[name].append(one(Path(src), args))
            print(name, runs[name][-1])
    out = {"command": ["undo", "run", *args], "sources": srcs, "runs": runs,
           "median_wall_s": {n: median(r["wall_s"] for r in rs) for n, rs in runs.items()}}
    if len(srcs) == 2:
        (n1, r1), (n2, r2) = runs.items()
        out[f"ratio_{n2}_to_{n1}"] = [round(b["wall_s"] / x["wall_s"], 3)
                                      for x, b in zip(r1, r2, strict=True)]
    write_json(a.out, out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
