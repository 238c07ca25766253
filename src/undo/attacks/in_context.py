"""In-context: k forget examples from the attack split in the prompt, no weight changed.

The examples are the first k of an attack batch of forget-domain data only (the
benchmark's own `attack_batches`, retain_fraction 0, drawn with the attack seed), each
as the benchmark encodes it (arithmetic: `<bos> prompt answer <eos>`), concatenated
into one prefix that every scored query follows. Works for any benchmark: the prefix is
put in front of whatever token ids its eval sets pass the model.

A model's context is finite: examples that would leave less room than the longest
example (+8 tokens) under `max_position_embeddings` are dropped, and the number kept is
recorded per run (`info.shots_used`): the 2-layer tiny model's 128 positions hold about
8 equations, so `k=16` asks for more than fits there.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutput

from ..configlib import ConfigError
from .scored import Attacked, Context, ScoredAttack

MAX_POSITIONS = 8192  # positions per forward chunk (memory: attention is quadratic)


@dataclass
class Config:
    shots: list[int] = field(default_factory=lambda: [0, 1, 4, 16])

    def validate(self, p: str) -> None:
        if not self.shots or any(k < 0 for k in self.shots) or \
                len(set(self.shots)) != len(self.shots):
            raise ConfigError(f"config key '{p}.shots': got {self.shots!r}; valid: a "
                              f"non-empty list of distinct integers >= 0")


class Prefixed(torch.nn.Module):
    """`model` with `prefix` (token ids) in front of every input; logits of the input's
    positions only. Inputs are right-padded, so the prefix and the input are contiguous."""

    def __init__(self, model: torch.nn.Module, prefix: torch.Tensor) -> None:
        super().__init__()
        self.model, self.prefix = model, prefix

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **_: Any) -> CausalLMOutput:
        b, t = input_ids.shape  # (B, T)
        n = self.prefix.numel()
        if n == 0:
            return CausalLMOutput(logits=self.model(input_ids=input_ids,
                                                    attention_mask=attention_mask,
                                                    use_cache=False).logits)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        chunk = max(1, MAX_POSITIONS // (n + t))
        out = []
        for i in range(0, b, chunk):
            ids, m = input_ids[i:i + chunk], mask[i:i + chunk]
            pre = self.prefix.to(ids.device).expand(len(ids), n)
            logits = self.model(input_ids=torch.cat([pre, ids], 1),
                                attention_mask=torch.cat([torch.ones_like(pre), m], 1),
                                use_cache=False).logits  # (b, n + T, V)
            out.append(logits[:, n:])
        return CausalLMOutput(logits=torch.cat(out))


def examples(ctx: Context, k: int, seed: int) -> list[list[int]]:
    """k forget-domain examples of the attack split, as token-id lists."""
    if k == 0:
        return []
    a = replace(ctx.cfg.attack, retain_fraction=0.0, batch_size=k)
    batch = ctx.bench.attack_batches(a, ctx.tokenizer, seed=f"{ctx.cfg.seed}-in-context-{seed}")(0)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    return [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)][:k]


def fit(shots: list[list[int]], max_positions: int | None) -> list[list[int]]:
    """The leading examples that leave room for a query as long as the longest + 8."""
    if max_positions is None or not shots:
        return shots
    room = max_positions - (max(len(s) for s in shots) + 8)
    kept, used = [], 0
    for s in shots:
        if used + len(s) > room:
            break
        kept.append(s)
        used += len(s)
    return kept


class InContext(ScoredAttack):
    name = "in_context"
    family = "in-context"
    Config = Config

    def settings(self, options: Config) -> list[str]:
        return [f"k={k}" for k in options.shots]

    def apply(self, model: torch.nn.Module, setting: str, ctx: Context, seed: int) -> Attacked:
        k = int(setting.removeprefix("k="))
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        shots = fit(examples(ctx, k, seed), limit)
        prefix = torch.tensor([t for s in shots for t in s], dtype=torch.long)
        return Attacked(Prefixed(model, prefix), per_query_tokens=prefix.numel(),
                        info={"shots": k, "shots_used": len(shots),
                              "prefix_tokens": prefix.numel()})


ATTACK = InContext()
