"""Search speed: `undo.attacks.search` with 30 trials x 100 steps on one tiny arithmetic model.

    python experiments/search_speed.py [--model DIR] [--trials 30] [--steps 100]
        [--workers 0] [--out experiments/results/search_speed.json]

Without --model a freshly initialised tiny-preset model is used: a trial's cost (steps,
evaluations) does not depend on what the weights know, only on the drawn recipe (batch
size, LoRA). The floor (issue 15): <= 5 minutes for 30 x 100 on one model. The load
average is recorded: on a shared machine the time is an upper bound, and the CPU seconds
(over the workers) what it costs on otherwise idle cores.
Trials run `attack.workers` at a time (default: one process per core).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from undo.artifacts import environment, read_json, write_json
from undo.attacks.search import search_attack
from undo.config import ModelConfig, load_config
from undo.models import build_model, save_model
from undo.tokenizers import build_char_tokenizer

FLOOR_S = 300.0


def _cpu() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a tiny arithmetic model (default: fresh)")
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--workers", type=int, default=0,
                   help="attack.workers: trials side by side (0: auto, one per core)")
    p.add_argument("--out", type=Path, default=Path("experiments/results/search_speed.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            tok = build_char_tokenizer()
            model = Path(tmp) / "tiny" / "model"
            save_model(build_model(ModelConfig(preset="tiny"), tok, seed=0), tok, model)
        # A one-LR grid: the search's warm start needs the grid, which is not timed here.
        cfg = load_config(None, [f"out_dir={tmp}", "progress=false",
                                 f"attack.steps={args.steps}", "attack.lrs=[0.001]",
                                 f"attack.workers={args.workers}"])
        load0 = os.getloadavg()
        from undo.attacks.grid import attack

        t0 = time.perf_counter()
        attack(cfg, model)
        grid_s = time.perf_counter() - t0
        t0, cpu0 = time.perf_counter(), _cpu()
        d = search_attack(cfg, model, args.trials, log=None)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        rec = read_json(d / "search.json")
    trials = rec["trials"]
    out = {
        "trials": args.trials, "steps": args.steps,
        "model": str(args.model) if args.model else "fresh tiny preset (seed 0)",
        "search_wall_s": wall, "workers": rec["workers"],
        "threads_per_worker": rec["threads_per_worker"],
        # CPU seconds of this process and its trial workers: what the search costs
        # when nothing else competes for the cores (wall ~ cpu_s / workers then).
        "search_cpu_s": cpu, "cpu_s_per_worker": cpu / rec["workers"], "floor_s": FLOOR_S, "within_floor": wall <= FLOOR_S,
        "grid_one_lr_wall_s": grid_s,
        "trial_wall_s": {"mean": sum(t["wall_time_s"] for t in trials) / len(trials),
                         "max": max(t["wall_time_s"] for t in trials)},
        "sum_trial_wall_s": sum(t["wall_time_s"] for t in trials),
        "attack_flops": rec["cost"]["flops"],
        "batch_sizes": [t["params"]["batch_size"] for t in trials],
        "lora_trials": sum(1 for t in trials if t["params"]["lora_rank"]),
        "loadavg_before": load0, "loadavg_after": os.getloadavg(),
        "environment": environment(),
    }
    write_json(args.out, out)
    print(f"{args.trials} trials x {args.steps} steps: {wall:.0f}s, {cpu:.0f} CPU-s, "
          f"{rec['workers']} worker(s) "
          f"(floor {FLOOR_S:.0f}s; mean trial {out['trial_wall_s']['mean']:.1f}s; "
          f"load {load0[0]:.1f} -> {out['loadavg_after'][0]:.1f})")


if __name__ == "__main__":
    main()
