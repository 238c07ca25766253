"""Every unlearning method's committed config on one base model: the table in docs/unlearning.md.

    python experiments/unlearn_methods.py [BASE_DIR] [--workers 2] [--seed 0]
        [--out experiments/results/unlearn_methods.json]

BASE_DIR is a finished `pretrain-base-*` stage folder or any HF model folder (default: the
study's base model in runs/arithmetic-tiny, which `undo pretrain` makes). Each
`configs/arithmetic/unlearn-*.yaml` runs through `undo unlearn` in its own subprocess
(one torch thread each, `--workers` at a time, into a scratch folder), plus two documented
variants: RMU without its retain term (the paper's synthetic setting) and MaxEnt with KL
to the frozen model on retain data. The JSON holds each run's before/after metrics, steps,
tokens, FLOPs and wall time as `undo unlearn` wrote them; a markdown table is printed.
Times are the whole command (start-up, model load, evaluation on four sets, training),
measured with `--workers` commands side by side on this machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from undo.artifacts import environment, write_json

# (label, config file, extra overrides)
VARIANTS: list[tuple[str, str, list[str]]] = [
    ("rmu, retain: none, lr 3e-4", "unlearn-rmu.yaml",
     ["unlearn.lr=3e-4", "unlearn.method_args.retain=none"]),
    ("maxent, retain: kl", "unlearn-maxent.yaml", ["unlearn.method_args.retain=kl"]),
]


def runs() -> list[tuple[str, str, list[str]]]:
    configs = sorted(Path("configs/arithmetic").glob("unlearn-*.yaml"))
    return [(c.stem.removeprefix("unlearn-"), c.name, []) for c in configs] + VARIANTS


def run_one(label: str, config: str, overrides: list[str], base: str, seed: int,
            scratch: Path) -> dict:
    out = scratch / label.replace(" ", "_").replace(",", "").replace(":", "")
    cmd = [sys.executable, "-m", "undo.cli", "unlearn", f"configs/arithmetic/{config}",
           f"out_dir={out}", "threads=1", "progress=false", f"seed={seed}", *overrides, base]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.time() - t0
    (summary,) = glob.glob(str(out / "*" / "stages" / "unlearn-*" / "summary.json"))
    s = json.loads(Path(summary).read_text())
    return {"label": label, "config": config, "overrides": overrides, "command_wall_s": wall,
            **{k: s[k] for k in ("method", "before", "after", "retain_ratio", "steps",
                                 "tokens", "flops", "train_time_s", "wall_time_s")}}


def table(rows: list[dict]) -> str:
    b = rows[0]["before"]
    lines = ["| config | retain acc (ratio to base) | forget acc | retain-ho | forget-ho "
             "| FLOPs | wall / train |", "|---|---|---|---|---|---|---|",
             f"| base model | {b['retain/acc']:.3f} | {b['forget/acc']:.3f} | "
             f"{b['retain_heldout/acc']:.3f} | {b['forget_heldout/acc']:.3f} | | |"]
    for r in rows:
        a = r["after"]
        lines.append(f"| `{r['label']}` | {a['retain/acc']:.3f} ({r['retain_ratio']:.2f}) | "
                     f"{a['forget/acc']:.3f} | {a['retain_heldout/acc']:.3f} | "
                     f"{a['forget_heldout/acc']:.3f} | {r['flops']:.2e} | "
                     f"{r['wall_time_s']:.0f} s / {r['train_time_s']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", nargs="?", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="experiments/results/unlearn_methods.json")
    args = ap.parse_args()
    base = args.base
    if base is None:
        found = sorted(glob.glob("runs/arithmetic-tiny/stages/pretrain-base-*"))
        if not found:
            sys.exit("no base model: run `undo pretrain --which base` or pass BASE_DIR")
        base = found[-1]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_one, *r, base, args.seed, Path(tmp)) for r in runs()]
        rows = [f.result() for f in futures]
    result = {"benchmark": "unlearn_methods", "base": base, "seed": args.seed,
              "workers": args.workers, "runs": rows, "wall_time_s": time.time() - t0,
              "environment": environment()}
    write_json(Path(args.out), result)
    print(table(rows))


if __name__ == "__main__":
    main()
