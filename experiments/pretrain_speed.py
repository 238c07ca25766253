"""Pretraining speed: our loop vs a bare PyTorch loop, side by side in one run.

    python experiments/pretrain_speed.py [--steps 150] [--rounds 3] [--out experiments/results/pretrain_speed.json]

Both loops train the same `tiny` model from the same init on the same pre-encoded batches
(AdamW, warmup+cosine, clipping). Ours adds everything it does in production: accelerate,
the objective indirection, token/FLOP counters, metrics.jsonl, a progress bar (disabled
output) and checkpoints every 50 steps. Rounds alternate (ours, bare, ours, bare, ...) so
load on this shared machine hits both alike; the ratio uses the median of each.

A second part runs a real `pretrain` stage (short) in a subprocess and records its wall
time, tokens/s and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from undo.artifacts import environment, write_json
from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import ModelConfig, OptimConfig
from undo.models import build_model
from undo.objectives import LOSSES
from undo.objectives.ce import token_ce
from undo.tokenizers import build_char_tokenizer
from undo.train import lr_lambda, train


def bare_loop(model: torch.nn.Module, batches: list[dict], cfg: OptimConfig) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas),
                            weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    t0 = time.perf_counter()
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        loss = token_ce(logits, b["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def ours(model: torch.nn.Module, batches: list[dict], cfg: OptimConfig, out: Path) -> float:
    t0 = time.perf_counter()
    train(model, LOSSES.get("ce")(), lambda step, micro: batches[step], cfg, out,
          progress=False)
    return time.perf_counter() - t0


def pretrain_stage(steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "undo.cli", "pretrain", "--which", "base",
               f"pretrain.steps={steps}", "pretrain.eval_every=0", f"out_dir={tmp}",
               "progress=false", "name=bench"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        summary = json.loads(next(Path(tmp).rglob("summary.json")).read_text())
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"steps": steps, "wall_time_s": wall, "train_time_s": summary["train_time_s"],
            "tokens": summary["tokens"],
            "tokens_per_s": summary["tokens"] / summary["train_time_s"],
            "peak_rss_mib": peak_kib / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--stage-steps", type=int, default=300)
    ap.add_argument("--out", default="experiments/results/pretrain_speed.json")
    args = ap.parse_args()

    tok = build_char_tokenizer()
    bench = ArithmeticData(DataConfig())
    make = ItemBatches(bench.stream(bench.ops), tok, 128, seed=0)
    batches = [make(i) for i in range(args.steps)]
    n_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    cfg = OptimConfig(steps=args.steps, batch_size=128, lr=2e-3, warmup_steps=10,
                      weight_decay=0.1, log_every=25, checkpoint_every=50)
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            times["ours"].append(ours(build_model(ModelConfig(), tok, 0), batches, cfg,
                                      Path(tmp)))
        times["bare"].append(bare_loop(build_model(ModelConfig(), tok, 0), batches, cfg))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "pretrain_speed",
        "model": "tiny",
        "steps_per_round": args.steps,
        "tokens_per_round": n_tokens,
        "rounds": args.rounds,
        "seconds": times,
        "tokens_per_s": {k: n_tokens / v for k, v in med.items()},
        "ours_over_bare_tokens_per_s": med["bare"] / med["ours"],
        "pretrain_stage": pretrain_stage(args.stage_steps),
        "load_average": list(__import__("os").getloadavg()),
        "environment": environment(),
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("tokens_per_s", "ours_over_bare_tokens_per_s",
                                             "pretrain_stage")}, indent=2))


if __name__ == "__main__":
    main()
