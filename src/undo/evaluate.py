"""Metrics of a model on the arithmetic benchmark: exact match and answer cross-entropy.

Exact match is computed in one teacher-forced forward pass: greedy decoding reproduces
the answer exactly iff, at every answer position, the argmax given the *correct* prefix
is the correct token. So `argmax == target` at all answer positions (and EOS) is the
same number greedy decoding would give, at the cost of a single forward.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data.arithmetic import ArithmeticBenchmark, Item, encode


@torch.no_grad()
def score_items(model: PreTrainedModel, items: Sequence[Item],
                tokenizer: PreTrainedTokenizerBase, batch_size: int = 512
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per item: exact match (bool), summed answer CE (nats) and answer-token count."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, ce_sum, n_tok = [], [], []
    for i in range(0, len(items), batch_size):
        batch = {k: v.to(device) for k, v in encode(items[i : i + batch_size], tokenizer).items()}
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1]  # (B, T-1, V)
        target = batch["labels"][:, 1:]  # (B, T-1)
        mask = target != -100
        ce = F.cross_entropy(logits.float().transpose(1, 2), target.clamp(min=0),
                             reduction="none")  # (B, T-1)
        hit = (logits.argmax(-1) == target) | ~mask
        correct.append(hit.all(dim=1).cpu())
        ce_sum.append((ce * mask).sum(1).cpu())
        n_tok.append(mask.sum(1).cpu())
    model.train(was_training)
    return torch.cat(correct), torch.cat(ce_sum), torch.cat(n_tok)


def metrics_for(model: PreTrainedModel, items: Sequence[Item],
                tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
    """`acc` and `ce` overall, and `acc/<op>/<format>` for each group present."""
    correct, ce_sum, n_tok = score_items(model, items, tokenizer)
    out = {"acc": correct.float().mean().item(), "ce": (ce_sum.sum() / n_tok.sum()).item()}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[f"{it.op}/{it.fmt}"].append(i)
    for key, idx in sorted(groups.items()):
        out[f"acc/{key}"] = correct[idx].float().mean().item()
    return out


def evaluate_arithmetic(model: PreTrainedModel, bench: ArithmeticBenchmark,
                        tokenizer: PreTrainedTokenizerBase,
                        sets: Sequence[str] = ("retain", "forget")) -> dict[str, float]:
    """Flat metrics such as `retain/acc`, `forget/ce`, `forget/acc/mul/word`."""
    all_sets = bench.eval_sets()
    out: dict[str, float] = {}
    for name in sets:
        for k, v in metrics_for(model, all_sets[name], tokenizer).items():
            out[f"{name}/{k}"] = v
    return out


def score_items_bucketed(model: PreTrainedModel, items: Sequence[Item],
                         tokenizer: PreTrainedTokenizerBase, max_positions: int = 2048
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`score_items`, with items sorted by length into batches of <= `max_positions` tokens.

    Same per-item results, in the original order. Why: one batch of equations (~12
    tokens) and word problems (~50) pads every equation to word length; sorting first
    roughly halves the cost of evaluating a mixed set (used by every attack eval step).
    """
    if not items:
        empty = torch.zeros(0)
        return empty.bool(), empty, empty.long()
    lengths = [len(it.prompt()) + len(it.answer_text()) + 2 for it in items]
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    chunks, cur, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if cur and w * (len(cur) + 1) > max_positions:
            chunks.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    chunks.append(cur)
    parts = [score_items(model, [items[i] for i in c], tokenizer, batch_size=len(c))
             for c in chunks]
    idx = torch.tensor([i for c in chunks for i in c])
    correct, ce_sum, n_tok = (torch.empty_like(torch.cat([p[j] for p in parts]))
                              for j in range(3))
    for j, out in enumerate((correct, ce_sum, n_tok)):
        out[idx] = torch.cat([p[j] for p in parts])
    return correct, ce_sum, n_tok
