"""Peak memory and speed of the distillation loss at a 256k vocabulary: full vs chunked logits.

    python experiments/chunked_kl.py [--threads 1] [--batch 8] [--seq 512] [--vocab 256000]
        [--hidden 64] [--layers 2] [--steps 2] [--rounds 1]
        [--out experiments/results/chunked_kl.json]

One step = `DistillKL.loss` (online teacher: its forward under inference mode, the
student's forward) + `backward()`: everything the objective costs per batch, without the
optimizer. Student and teacher are Llama bodies built from config (random weights,
float32, untied heads: head and embedding are each vocab × hidden), the batch is random
tokens, no padding. Variants: `full` (the models' HF forwards form (B, T, V) logits,
`logits="full"`) and `chunked` (`logits="chunked"`: KL from the last hidden states, the
head applied per chunk of positions).

Memory, measured honestly for torch (tracemalloc does not see its allocations): each
variant runs in its own fresh subprocess, which reports its peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`: the kernel's high-water mark of the whole
process: Python, torch, both models, the batch, every step) and its RSS just before the
first step (`/proc/self/statm`), so `step_peak_mb` = peak − that is what the loss and its
backward added. Speed: positions (B·T) per second over `--steps` steps after one warm-up
step, median over `--rounds` rounds whose variants alternate. The losses of the two
variants are recorded to show they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from undo.artifacts import environment, write_json
from undo.objectives.distill_kl import DistillKL

VARIANTS = ("full", "chunked")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(args: argparse.Namespace, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                      intermediate_size=4 * args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=args.seq, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg)


def child(args: argparse.Namespace) -> dict:
    """One variant in this (fresh) process: prints its measurements as one JSON line."""
    torch.set_num_threads(args.threads)
    student, teacher = build(args, 0), build(args, 1)
    obj = DistillKL(teacher, temperature=1.0, logits=args.child)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    rss_before = rss_mb()
    times, losses = [], []
    for step in range(args.steps + 1):  # step 0 warms up
        student.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        loss, _ = obj.loss(student, batch)
        loss.backward()
        if step:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"variant": args.child, "positions_per_s": args.batch * args.seq / statistics.mean(times),
            "step_s": times, "loss": losses[0], "rss_before_step_mb": rss_before,
            "peak_rss_mb": peak, "step_peak_mb": peak - rss_before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=256000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default="experiments/results/chunked_kl.json")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    shape = ["--threads", str(args.threads), "--batch", str(args.batch), "--seq", str(args.seq),
             "--vocab", str(args.vocab), "--hidden", str(args.hidden), "--layers",
             str(args.layers), "--steps", str(args.steps)]
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for v in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            out = subprocess.run([sys.executable, __file__, *shape, "--child", v],
                                 check=True, capture_output=True, text=True).stdout
            runs[v].append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[v][-1]), flush=True)
    med = {v: {k: statistics.median(x[k] for x in runs[v])
               for k in ("positions_per_s", "peak_rss_mb", "step_peak_mb", "rss_before_step_mb")}
           for v in VARIANTS}
    f, c = med["full"], med["chunked"]
    result = {
        "setting": {k: getattr(args, k) for k in ("threads", "batch", "seq", "vocab", "hidden",
                                                   "layers", "steps", "rounds")},
        "median": med, "runs": runs,
        "ratios": {"peak_rss": c["peak_rss_mb"] / f["peak_rss_mb"],
                   "step_peak": c["step_peak_mb"] / f["step_peak_mb"],
                   "throughput": c["positions_per_s"] / f["positions_per_s"]},
        "loss_abs_diff": abs(runs["full"][0]["loss"] - runs["chunked"][0]["loss"]),
        "floors": {"peak_rss_max_ratio": 0.35, "throughput_min_ratio": 0.9},
        "environment": environment(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({"median": med, "ratios": result["ratios"]}, indent=1))


if __name__ == "__main__":
    main()
