"""fp32 against bf16-mixed (`precision`), side by side in one process: what each part of
a study costs per step on this CPU.

    python experiments/precision_speed.py [--steps 30] [--rounds 3]
        [--out experiments/results/precision_speed.json]

First the bare matmul of the study's largest shape (1536 positions x 128 -> 512) in
float32 and in bfloat16, in GFLOP/s. Then the parts, each on the default study's `tiny`
model and its own batch shape: a
pretraining / distillation training step (batch 128), an attack step (batch 32), an
evaluation forward (batch 128, no grad) and, for the CPU attention kernels, a training
step at bf16-mixed with torch's fused attention left on (what `compute_precision` avoids).
Every part runs under `undo.runtime.compute_precision`, the context the stages use, with
one torch thread (a study worker's). Rounds alternate the precisions so load on this
shared machine hits both alike; ratios are of the medians. Also records whether the CPU
has bfloat16 dot-product instructions (`avx512_bf16` / `amx_bf16` in /proc/cpuinfo):
without them bf16 matmuls are not faster.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

from undo.artifacts import environment, write_json
from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import ModelConfig
from undo.models import build_model
from undo.objectives.ce import token_ce
from undo.runtime import compute_precision
from undo.tokenizers import build_char_tokenizer


def cpu_bf16_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return sorted(f for f in flags if "bf16" in f)


def fused_attention_bf16():
    """bf16 autocast with torch's default attention kernels (fused on CPU)."""
    return torch.autocast("cpu", dtype=torch.bfloat16)


def matmul_gflops(dtype: torch.dtype, reps: int = 200) -> float:
    a = torch.randn(1536, 128, dtype=dtype)
    b = torch.randn(128, 512, dtype=dtype)
    for _ in range(5):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * 1536 * 128 * 512 * reps / (time.perf_counter() - t0) / 1e9


def time_steps(batches: list[dict], context: Callable, train: bool) -> float:
    """Seconds per step (first 3 steps a warm-up, not timed)."""
    model = build_model(ModelConfig(), build_char_tokenizer(), 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(b: dict) -> None:
        with context(), (nullcontext() if train else torch.no_grad()):
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                           use_cache=False).logits
            if train:
                token_ce(logits, b["labels"]).backward()
        if train:
            opt.step()
            opt.zero_grad(set_to_none=True)

    for b in batches[:3]:
        step(b)
    t0 = time.perf_counter()
    for b in batches[3:]:
        step(b)
    return (time.perf_counter() - t0) / (len(batches) - 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="experiments/results/precision_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tok = build_char_tokenizer()
    data = ArithmeticData(DataConfig())
    batches = {b: [ItemBatches(data.stream(data.ops), tok, b, seed=0)(i)
                   for i in range(args.steps + 3)] for b in (128, 32)}
    contexts: dict[str, Callable] = {
        "fp32": lambda: compute_precision("fp32", "cpu"),
        "bf16-mixed": lambda: compute_precision("bf16-mixed", "cpu"),
        "bf16-mixed, fused attention": fused_attention_bf16,
    }
    parts = {"train step, batch 128": (128, True), "attack step, batch 32": (32, True),
             "eval forward, batch 128": (128, False)}
    seconds: dict[str, dict[str, list[float]]] = {p: {c: [] for c in contexts} for p in parts}
    for _ in range(args.rounds):
        for part, (b, train) in parts.items():
            for name, ctx in contexts.items():
                if name.endswith("fused attention") and not train:
                    continue
                seconds[part][name].append(time_steps(batches[b], ctx, train))
    matmul = {str(dt).removeprefix("torch."): statistics.median(
        matmul_gflops(dt) for _ in range(args.rounds)) for dt in (torch.float32, torch.bfloat16)}
    ms = {p: {c: 1e3 * statistics.median(v) for c, v in d.items() if v}
          for p, d in seconds.items()}
    result = {
        "benchmark": "precision_speed",
        "model": "tiny", "threads": 1, "steps_per_round": args.steps, "rounds": args.rounds,
        "cpu_bf16_flags": cpu_bf16_flags(),
        "matmul_gflops_median": matmul,
        "ms_per_step_median": ms,
        "speedup_bf16_mixed_over_fp32": {p: d["fp32"] / d["bf16-mixed"] for p, d in ms.items()},
        "seconds": seconds,
        "load_average": list(os.getloadavg()),
        "environment": environment(),
    }
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("cpu_bf16_flags", "matmul_gflops_median",
                                             "ms_per_step_median",
                                             "speedup_bf16_mixed_over_fp32")}, indent=2))


if __name__ == "__main__":
    main()
