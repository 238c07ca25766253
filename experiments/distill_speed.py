"""Distillation speed: ours vs a straightforward loop, and a cached vs online α sweep.

    python experiments/distill_speed.py [--threads 1] [--rounds 3] [--steps 20]
        [--sweep-steps 40] [--teacher /work/models/base]
        [--out experiments/results/distill_speed.json]

Part 1, tokens/s, side by side, rounds alternating (ref, ref_no_grad, ours, ...) so the
load of this shared machine hits every arm alike; ratios use the medians. Same model,
same init, same pre-encoded batches, AdamW + clipping in every arm.

- `reference`: the straightforward loop: teacher and student HF forwards each step
  (the teacher called like the student, with autograd on, then `.detach()`), full-vocab
  KL via `F.kl_div` on float32 log-softmaxes of all positions, masked for padding.
- `reference_no_grad`: the same with the teacher under `torch.no_grad()` (a stronger
  baseline, reported so the gain is not only that).
- `ours`: `train()` with `DistillKL(teacher)`: teacher under inference mode, the mask
  dropped for right padding (`is_causal` attention), no KV cache, and the chunked
  in-place KL kernel with its closed-form gradient.

Two settings: `tiny` (the study's model and data: 0.5M parameters, 50-token character
vocabulary, batch 128 arithmetic items) and `wide_vocab` (a Llama body of the same
width with a 32k vocabulary, random right-padded token sequences of length 64, batch 8):
a CPU-sized stand-in for real tokenizers (Gemma-2's is 256k) where the softmax / KL over
the vocabulary, not the transformer, dominates a step.

Part 2, the α sweep (tiny setting): 4 noised students (α = 0.2, 0.4, 0.6, 0.8), the same
fixed number of steps each, once with the online teacher and once from the teacher cache;
the cached sweep's wall time includes building the cache (from empty) inside its first run;
runs alternate between the two sweeps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from undo.artifacts import environment, model_folder, write_json
from undo.benchmarks.arithmetic.benchmark import Config as DataConfig
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import ModelConfig, NoiseConfig, OptimConfig
from undo.models import build_model, load_model, reinit_like
from undo.objectives import LOSSES
from undo.stages.noise import noised_copy
from undo.stages.teacher_cache import CachedBatches, TeacherCache
from undo.tokenizers import build_char_tokenizer
from undo.train import train

Batch = dict[str, torch.Tensor]


def reference_loop(teacher: torch.nn.Module, student: torch.nn.Module, batches: list[Batch],
                   cfg: OptimConfig, no_grad: bool) -> tuple[float, int]:
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    tokens = 0
    t0 = time.perf_counter()
    for b in batches:
        ids, am = b["input_ids"], b["attention_mask"]
        if no_grad:
            with torch.no_grad():
                t_logits = teacher(input_ids=ids, attention_mask=am).logits
        else:
            t_logits = teacher(input_ids=ids, attention_mask=am).logits.detach()
        s_logits = student(input_ids=ids, attention_mask=am).logits
        mask = (am[:, :-1] * am[:, 1:]).float()  # next-token positions inside the text
        kl = F.kl_div(F.log_softmax(s_logits[:, :-1].float(), dim=-1),
                      F.log_softmax(t_logits[:, :-1].float(), dim=-1),
                      log_target=True, reduction="none").sum(-1)  # (B, T-1)
        loss = (kl * mask).sum() / mask.sum()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(am.sum())
    return time.perf_counter() - t0, tokens


def ours_loop(teacher: torch.nn.Module, student: torch.nn.Module, batches: list[Batch],
              cfg: OptimConfig) -> tuple[float, int]:
    t0 = time.perf_counter()
    r = train(student, LOSSES.get("distill_kl")(teacher), lambda s, m: batches[s], cfg,
              progress=False)
    return time.perf_counter() - t0, r.tokens


def throughput(name: str, teacher: torch.nn.Module, make_student: Callable[[], torch.nn.Module],
               batches: list[Batch], rounds: int) -> dict:
    cfg = OptimConfig(steps=len(batches), batch_size=batches[0]["input_ids"].size(0),
                      lr=1e-3, schedule="constant", log_every=0, grad_clip=1.0)
    arms = {
        "reference": lambda s: reference_loop(teacher, s, batches, cfg, no_grad=False),
        "reference_no_grad": lambda s: reference_loop(teacher, s, batches, cfg, no_grad=True),
        "ours": lambda s: ours_loop(teacher, s, batches, cfg),
    }
    for fn in arms.values():  # warm-up: allocator, kernels, HF mask caches
        fn(make_student())
    tps: dict[str, list[float]] = {k: [] for k in arms}
    for _ in range(rounds):
        for k, fn in arms.items():
            teacher.requires_grad_(True)  # the reference's teacher is an ordinary model
            wall, tokens = fn(make_student())
            tps[k].append(tokens / wall)
    med = {k: statistics.median(v) for k, v in tps.items()}
    out = {
        "setting": name, "steps_per_round": len(batches), "rounds": rounds,
        "tokens_per_step": sum(int(b["attention_mask"].sum()) for b in batches) / len(batches),
        "tokens_per_s": {k: {"median": med[k], "all": v} for k, v in tps.items()},
        "speedup_vs_reference": med["ours"] / med["reference"],
        "speedup_vs_reference_no_grad": med["ours"] / med["reference_no_grad"],
    }
    print(f"[{name}] tokens/s median: " + ", ".join(f"{k} {v:,.0f}" for k, v in med.items())
          + f"  -> ours/reference {out['speedup_vs_reference']:.2f}x, "
          f"ours/reference_no_grad {out['speedup_vs_reference_no_grad']:.2f}x", flush=True)
    return out


def tiny_setting(teacher_path: str | None, steps: int) -> tuple:
    tok = build_char_tokenizer()
    bench = ArithmeticData(DataConfig())
    teacher = (load_model(model_folder(teacher_path, "teacher")) if teacher_path
               else build_model(ModelConfig(preset="tiny"), tok, seed=1))
    data = ItemBatches(bench.stream(bench.ops), tok, 128, seed=0)
    batches = [data(s, 0) for s in range(steps)]
    return teacher, (lambda: reinit_like(teacher, 0)), batches, data


def wide_vocab_setting(steps: int, vocab: int = 32768, batch: int = 8, length: int = 64) -> tuple:
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, intermediate_size=512,
                      max_position_embeddings=length, tie_word_embeddings=True)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        teacher = AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        ids = torch.randint(4, vocab, (batch, length), generator=g)
        lens = torch.randint(length // 2, length + 1, (batch,), generator=g)
        am = (torch.arange(length)[None] < lens[:, None]).long()
        batches.append({"input_ids": ids * am, "attention_mask": am})
    return teacher, (lambda: reinit_like(teacher, 0)), batches


def alpha_sweep(teacher: torch.nn.Module, data: ItemBatches, steps: int,
                alphas: tuple[float, ...]) -> dict:
    cfg = OptimConfig(steps=steps, batch_size=data.batch_size, lr=2e-3, log_every=0,
                      grad_clip=1.0, warmup_steps=0)
    ncfg = NoiseConfig(beta=0.1)

    def one(alpha: float, cache: TeacherCache | None) -> tuple[float, float]:
        student, _ = noised_copy(teacher, replace(ncfg, alpha=alpha), seed=0)
        student.requires_grad_(True)
        if cache is not None:
            obj, batches = LOSSES.get("distill_kl")(), CachedBatches(data, cache)
        else:
            obj, batches = LOSSES.get("distill_kl")(teacher), data
        t0 = time.perf_counter()
        r = train(student, obj, batches, cfg, progress=False)
        return time.perf_counter() - t0, r.last_metrics["loss"]

    # Runs alternate (online α1, cached α1, online α2, ...) so load drift on this shared
    # machine hits both sweeps alike. The cache starts empty: its first run builds it.
    online = cached = build = 0.0
    l_online, l_cached = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for a in alphas:
            wall, loss = one(a, None)
            online += wall
            l_online.append(loss)
            cache = TeacherCache(Path(tmp), teacher, data, key={"bench": "distill_speed"})
            wall, loss = one(a, cache)
            cached += wall
            build += cache.build_time
            l_cached.append(loss)
    out = {
        "alphas": list(alphas), "steps_per_run": steps, "batch_size": data.batch_size,
        "online_wall_s": online, "cached_wall_s": cached, "cache_build_s": build,
        "cached_over_online": cached / online,
        "cached_over_online_excluding_build": (cached - build) / online,
        "final_loss_online": l_online, "final_loss_cached": l_cached,
    }
    print(f"[sweep] online {online:.1f}s, cached {cached:.1f}s (build {build:.1f}s) -> "
          f"{out['cached_over_online']:.3f}x ({out['cached_over_online_excluding_build']:.3f}x "
          "with the cache already built)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20, help="steps per throughput round (tiny)")
    ap.add_argument("--wide-steps", type=int, default=6, help="steps per round (wide_vocab)")
    ap.add_argument("--sweep-steps", type=int, default=40)
    ap.add_argument("--teacher", default=None, help="a tiny teacher folder (default: built)")
    ap.add_argument("--out", default="experiments/results/distill_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    t0 = time.time()
    teacher, make_student, batches, data = tiny_setting(args.teacher, args.steps)
    tiny = throughput("tiny", teacher, make_student, batches, args.rounds)
    w_teacher, w_student, w_batches = wide_vocab_setting(args.wide_steps)
    wide = throughput("wide_vocab", w_teacher, w_student, w_batches, args.rounds)
    sweep = alpha_sweep(teacher, data, args.sweep_steps, (0.2, 0.4, 0.6, 0.8))
    result = {
        "benchmark": "distill_speed",
        "command": "python experiments/distill_speed.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "teacher": args.teacher or "tiny preset, seed 1 (random weights)",
        "throughput": {"tiny": tiny, "wide_vocab": wide},
        "alpha_sweep": sweep,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_time_s": time.time() - t0,
        "environment": environment("cpu"),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
