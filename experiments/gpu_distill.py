"""Distillation throughput, MFU and peak memory on one CUDA GPU, at a 256k vocabulary.

    python experiments/gpu_distill.py [--models 0.1b 2b] [--logits full chunked]
        [--steps 200] [--warmup 10] [--batch 0.1b=32 2b=8] [--seq 1024]
        [--attn eager] [--peak-tflops X] [--out experiments/results/gpu_distill.json]
    python experiments/gpu_distill.py --dry-run     # tiny shapes, 2 steps, CPU or GPU

Student and teacher are Gemma-2 models built from config with random weights (no
download), in bfloat16 (parameters, gradients and AdamW state; no float32 master copy),
teacher frozen and online. Shapes:

- `0.1b`: 14 layers, hidden 320, 4 heads (head_dim 80, 4 KV heads), MLP 1280, vocab 256000;
- `2b`: the gemma-2-2b config: 26 layers, hidden 2304, 8 heads, 4 KV heads, head_dim 256,
  MLP 9216, vocab 256000, final logit softcap 30.

One step: `DistillKL.loss` (teacher forward under inference mode + student forward),
`backward()`, `AdamW.step()`, on B × T random tokens (no padding). Per (model, logits)
run: tokens/s = B·T / mean step time over `--steps` steps after `--warmup` steps (CUDA
synchronised), peak memory = `torch.cuda.max_memory_allocated()` (reset per run).

MFU = FLOPs/s ÷ the GPU's dense bf16 peak (table `PEAK_BF16` by device name, or
`--peak-tflops`). FLOPs per token = 6·N_student + 2·N_teacher (student forward + backward,
teacher forward), N = `undo.compute.matmul_params` (every weight except the input
embedding lookup, plus the output head once); attention-score FLOPs (∝ T) and the KL's
softmaxes are not counted, so MFU is a slight underestimate of the hardware's work.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM

from undo.artifacts import environment, write_json
from undo.compute import matmul_params
from undo.objectives.distill_kl import DistillKL

SHAPES = {
    "0.1b": dict(num_hidden_layers=14, hidden_size=320, num_attention_heads=4,
                 num_key_value_heads=4, head_dim=80, intermediate_size=1280, vocab_size=256000),
    "2b": dict(num_hidden_layers=26, hidden_size=2304, num_attention_heads=8,
               num_key_value_heads=4, head_dim=256, intermediate_size=9216, vocab_size=256000),
    "tiny": dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, intermediate_size=64, vocab_size=1000),
}
DEFAULT_BATCH = {"0.1b": 32, "2b": 8, "tiny": 2}
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, from NVIDIA's data sheets; the first
# entry whose words all occur in the device name wins (PCIe before the SXM default).
PEAK_BF16 = [
    (("H200",), 989.4e12), (("H100", "PCIe"), 756.0e12), (("H100", "NVL"), 835.0e12),
    (("H100",), 989.4e12), (("A100",), 312.0e12),
]


def peak_flops(name: str) -> float | None:
    for words, peak in PEAK_BF16:
        if all(w.lower() in name.lower() for w in words):
            return peak
    return None


def build(shape: str, seed: int, device: torch.device, dtype: torch.dtype,
          attn: str) -> Gemma2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Gemma2Config(**SHAPES[shape], final_logit_softcapping=30.0,
                       attn_logit_softcapping=50.0, query_pre_attn_scalar=256,
                       sliding_window=4096, max_position_embeddings=8192,
                       attn_implementation=attn)
    with torch.device(device):
        return Gemma2ForCausalLM(cfg).to(dtype)


def run(shape: str, logits: str, args: argparse.Namespace, device: torch.device,
        dtype: torch.dtype) -> dict:
    student = build(shape, 0, device, dtype, args.attn)
    teacher = build(shape, 1, device, dtype, args.attn)
    n_s, n_t = matmul_params(student), matmul_params(teacher)
    obj = DistillKL(teacher, temperature=1.0, logits=logits)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-5, fused=device.type == "cuda")
    b = args.batch.get(shape, DEFAULT_BATCH[shape])
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, SHAPES[shape]["vocab_size"], (b, args.seq), generator=g).to(device)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(args.warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        loss, _ = obj.loss(student, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(loss.item())
    tok_s = b * args.seq / statistics.mean(times)
    flops_per_token = 6.0 * n_s + 2.0 * n_t
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (
        peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None)
    out = {
        "model": shape, "logits": logits, "batch": b, "seq": args.seq,
        "params": sum(p.numel() for p in student.parameters()), "matmul_params": n_s,
        "tokens_per_s": tok_s, "step_s_median": statistics.median(times),
        "flops_per_token": flops_per_token,
        "mfu": tok_s * flops_per_token / peak if peak else None, "peak_flops": peak,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30
        if device.type == "cuda" else None,
        "loss_first": losses[0], "loss_last": losses[-1],
    }
    del student, teacher, obj, opt
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["0.1b", "2b"], choices=["0.1b", "2b"])
    ap.add_argument("--logits", nargs="+", default=["full", "chunked"],
                    choices=["full", "chunked"])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch", nargs="*", default=[], metavar="MODEL=B",
                    help="batch size per model, e.g. 2b=8")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--attn", default="eager",
                    help="attention implementation: eager (HF's default for Gemma-2: exact "
                         "with its attention softcap; transformers refuses sdpa for it), "
                         "flex_attention, flash_attention_2 (needs the flash-attn package)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the GPU's dense bf16 peak, if its name is not in the table")
    ap.add_argument("--dry-run", "--cpu-smoke", action="store_true",
                    help="tiny shapes, 2 steps, on CPU when there is no GPU (proves the script)")
    ap.add_argument("--out", default=None,
                    help="default experiments/results/gpu_distill.json "
                         "(gpu_distill_dry_run.json with --dry-run)")
    args = ap.parse_args()
    args.batch = {k: int(v) for k, v in (kv.split("=", 1) for kv in args.batch)}
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        sys.exit("gpu_distill.py: no CUDA device here (torch.cuda.is_available() is False); "
                 "run it on a machine with an NVIDIA GPU, or use --dry-run for a tiny CPU check")
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(1)  # the CPU smoke test shares a small machine
    models = ["tiny"] if args.dry_run else args.models
    if args.dry_run:
        args.steps, args.warmup, args.seq = 2, 1, 16
    out = Path(args.out or "experiments/results/"
               f"gpu_distill{'_dry_run' if args.dry_run else ''}.json")
    results = []
    for shape in models:
        for logits in args.logits:
            r = run(shape, logits, args, device, torch.bfloat16)
            print({k: r[k] for k in ("model", "logits", "tokens_per_s", "mfu",
                                     "peak_memory_gb")}, flush=True)
            results.append(r)
    write_json(out, {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "dry_run": args.dry_run, "steps": args.steps, "warmup": args.warmup,
        "dtype": "bfloat16 (parameters, gradients, AdamW state)", "attention": args.attn,
        "flops_per_token": "6*N_student + 2*N_teacher, N = undo.compute.matmul_params",
        "results": results, "environment": environment(device),
    })
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
