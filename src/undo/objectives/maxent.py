"""Maximum entropy on the forget set: push the forget documents' next-token distribution
to uniform, keep the retain set.

    L = KL(U ‖ p_θ) on forget positions + λ·R(retain)
    (or, `weighting: convex`, (1 − λ)·KL + λ·R: the authors' WMDP teachers)

Which positions: `positions: all` (the default, as the authors' `uniform_forget_loss_fn`
in src/tools/unlearn_langarith/maxent.py) every position whose next token is not padding,
prompt included; `positions: answer` only those whose next token is labelled (the answer
and EOS), the variant this project ran before issue 21.
    KL(U ‖ p) = Σ_v (1/V)·(log(1/V) − log p_v) = −log V − (1/V)·Σ_v log p_v

R is CE on the retain answers (`retain: ce`, the paper's synthetic settings) or
KL(p_original ‖ p_θ) to the frozen original model on retain data (`retain: kl`, the
paper's WMDP variant), or nothing (`retain: none`). λ is `unlearn.retain_weight`.
Unlike gradient ascent the forget term is bounded below (by 0, at uniform), so it
cannot run away. Sources: Yuan et al. 2024 ("A Closer Look at Machine Unlearning for
LLMs", ME loss); Lee et al. 2025 (arXiv 2506.06278), the teacher of the UNDO pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .base import METHODS
from .unlearning import (
    Batch,
    ForgetRetain,
    RetainKind,
    Weighting,
    label_mask,
    logits_of,
    masked_mean,
)


def kl_uniform(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(Uniform ‖ softmax(logits)) averaged over positions where `mask` is true.

    logits (..., V), mask (...). Zero exactly when the logits are uniform.
    """
    logp = F.log_softmax(logits.float(), dim=-1)
    kl = -math.log(logits.size(-1)) - logp.mean(dim=-1)
    return masked_mean(kl, mask)


Positions = Literal["all", "answer"]


def forget_positions(batch: Batch, positions: Positions) -> torch.Tensor:
    """(B, T-1) bool: the next-token positions the forget term covers (see the module)."""
    if positions == "answer":
        return label_mask(batch["labels"])
    return batch["attention_mask"][:, 1:].bool()


def maxent_forget_loss(forget_logits: torch.Tensor, batch: Batch,
                       positions: Positions = "all") -> torch.Tensor:
    """The forget term: KL(U ‖ p) averaged over `forget_positions(batch, positions)`."""
    return kl_uniform(forget_logits[:, :-1], forget_positions(batch, positions))


@dataclass
class MaxEntArgs:
    retain: RetainKind = "ce"  # ce | kl (to the frozen original model) | none
    positions: Positions = "all"  # all non-padding forget positions (the paper) | answer
    # sum: forget + λ·retain (their arithmetic/language); convex: (1 − λ)·forget + λ·retain
    # (their WMDP teachers, λ 0.3 bio / 0.2 cyber)
    weighting: Weighting = "sum"


@METHODS.register("maxent")
class MaxEnt(ForgetRetain):
    Args = MaxEntArgs

    def forget_loss(self, model: torch.nn.Module, f: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        forget = maxent_forget_loss(logits_of(model, f), f, self.args.positions)
        return forget, {"forget_kl_uniform": float(forget.detach())}
