"""Attack speed: one model's default attack grid, in-process vs parallel worker processes.

    python experiments/attack_speed.py [--model DIR] [--rounds 2] [--out experiments/results/attack_speed.json]

Part 1, the pieces of one run (1 thread): a training step, a curve evaluation (forget
subset), a budget evaluation (full forget + retain sets) bucketed by length and in one
padded batch (`score_items`).

Part 2, the whole default grid (`undo.attacks.grid.attack`, cache off) three ways, rounds
alternating so load on a shared machine hits each alike:
    seq-1t   one process, 1 thread        (workers=1, threads=1)
    seq-2t   one process, 2 threads       (workers=1, threads=2)
    par-2x1  two processes, 1 thread each (workers=2, threads=2)
The load average is recorded before and after: on a shared machine the absolute times
are upper bounds, the ratios are what to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from undo.artifacts import environment, write_json
from undo.attacks.grid import AttackEval, attack, attack_optim
from undo.benchmarks.arithmetic.benchmark import Benchmark, score_items
from undo.config import ModelConfig, load_config
from undo.models import build_model, load_model, load_tokenizer, save_model
from undo.objectives import LOSSES
from undo.tokenizers import build_char_tokenizer
from undo.train import train

MODES = {"seq-1t": ["attack.workers=1", "threads=1"],
         "seq-2t": ["attack.workers=1", "threads=2"],
         "par-2x1": ["attack.workers=2", "threads=2"]}


def timed(f, n: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t0) / n


def pieces(model_dir: Path) -> dict[str, float]:
    torch.set_num_threads(1)
    cfg = load_config()
    bench = Benchmark(cfg.data)
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    ev = AttackEval(bench, tok, cfg.attack.curve_items_per_op)
    batches = bench.attack_batches(cfg.attack, tok, seed="0")
    optim = attack_optim(cfg.attack, 1e-4)
    optim.steps, optim.eval_every = 20, 0
    t0 = time.perf_counter()
    train(model, LOSSES.get("ce")(), batches, optim, None, progress=False)
    return {
        "train_step_s": (time.perf_counter() - t0) / optim.steps,
        "curve_eval_s": timed(lambda: ev.curve(model), 5),
        "budget_eval_bucketed_s": timed(lambda: ev.full(model), 2),
        "budget_eval_one_batch_s": timed(
            lambda: (score_items(model, ev.forget.items, tok),
                     score_items(model, ev.retain.items, tok)), 2),
        "curve_items": len(ev.curve_idx),
        "full_items": len(ev.forget) + len(ev.retain),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="a model folder (default: a random-init tiny model)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", nargs="*", default=list(MODES))
    ap.add_argument("--out", default="experiments/results/attack_speed.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else Path(tmp) / "tiny" / "model"
        if not args.model:
            tok = build_char_tokenizer()
            save_model(build_model(ModelConfig(), tok, seed=0), tok, model_dir)
        load_before = os.getloadavg()
        part1 = pieces(model_dir)
        times: dict[str, list[float]] = {m: [] for m in args.modes}
        for r in range(args.rounds):
            for mode in args.modes:
                cfg = load_config(None, [f"out_dir={tmp}/runs-{mode}-{r}", "progress=false",
                                         *MODES[mode]])
                t0 = time.perf_counter()
                attack(cfg, model_dir, force=True)
                times[mode].append(time.perf_counter() - t0)
                print(f"round {r} {mode}: {times[mode][-1]:.1f}s", flush=True)
        cfg = load_config()
        med = {m: statistics.median(v) for m, v in times.items()}
        ref = med.get("seq-1t")
        result = {
            "grid": {"lrs": cfg.attack.lrs, "seeds": cfg.attack.seeds,
                     "steps": cfg.attack.steps, "eval_every": cfg.attack.eval_every,
                     "batch_size": cfg.attack.batch_size},
            "model": str(args.model or "random-init tiny"),
            "pieces_1thread": part1,
            "grid_wall_s": times,
            "grid_median_s": med,
            "speedup_vs_seq_1t": {m: ref / v for m, v in med.items()} if ref else None,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "cpu_count": os.cpu_count(),
            "env": environment(),
        }
    write_json(args.out, result)
    print(f"pieces (1 thread): {part1}")
    print(f"median grid wall time: {med}  load {load_before} -> {os.getloadavg()}")


if __name__ == "__main__":
    main()
