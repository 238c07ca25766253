"""What the processes of a data-parallel launch agree on at each step: token counts,
gradients (when not DDP-wrapped), logged metrics and the clipped gradient norm. One
process makes each of these a no-op."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator

from .compute import count_tokens


def count_all_ranks(acc: Accelerator, micro_batches: list[dict[str, Any]],
                     frozen_flops: float) -> tuple[int, int, float]:
    """(tokens, positions, frozen-model FLOPs) of this step over every process: each rank
    sees its own data."""
    tok = pos = 0
    for mb in micro_batches:
        t, p = count_tokens(mb)
        tok, pos = tok + t, pos + p
    if acc.num_processes > 1:
        total = acc.reduce(torch.tensor([tok, pos, frozen_flops], dtype=torch.float64,
                                        device=acc.device), reduction="sum")
        tok, pos, frozen_flops = int(total[0]), int(total[1]), float(total[2])
    return tok, pos, frozen_flops


def average_gradients(acc: Accelerator, params: list[torch.nn.Parameter]) -> None:
    """Mean of each gradient over processes (what DDP's backward would have done)."""
    if acc.num_processes == 1:
        return
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(acc.num_processes)


def mean_over_ranks(acc: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Each logged metric averaged over processes (each saw its own batch), so a log under
    N processes reads like one process with the global batch."""
    if acc.num_processes == 1 or not metrics:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=acc.device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / acc.num_processes for k, v in zip(keys, t.tolist(), strict=True)}


def clip_gradients(acc: Accelerator, params: list[torch.nn.Parameter], max_norm: float,
          mode: str) -> float:
    """Clip to a global gradient norm; FSDP2's gradients are shards (DTensors), whose norm
    torch computes over all ranks."""
    if mode != "fsdp":
        return float(acc.clip_grad_norm_(params, max_norm))
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
