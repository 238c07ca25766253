"""SimNPO (Fan et al. 2024, "Simplicity Prevails: Rethinking Negative Preference
Optimization for LLM Unlearning"): NPO without a reference model, length-normalised.

    L = (2/β)·E_forget[ softplus(β·log π_θ(y|x)/|y| + γ) ] + λ·R(retain)
      = −(2/β)·E_forget[ log σ(−β·log π_θ(y|x)/|y| − γ) ] + λ·R(retain)

|y| is the number of labelled (answer) tokens, γ ≥ 0 a reward margin, R as in NPO
(CE on retain answers by default). No frozen model is needed (unless `retain: kl`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from ..configlib import check
from .base import METHODS
from .unlearning import (
    Batch,
    ForgetRetain,
    RetainKind,
    label_mask,
    logits_of,
    sequence_logprob,
)

if TYPE_CHECKING:
    pass


def simnpo_loss(logp: torch.Tensor, lengths: torch.Tensor, beta: float,
                gamma: float = 0.0) -> torch.Tensor:
    """(2/β)·mean softplus(β·logp/|y| + γ); logp (B,) sequence log-probs, lengths (B,)."""
    return (2.0 / beta) * F.softplus(beta * logp / lengths.clamp(min=1) + gamma).mean()


@dataclass
class SimNPOArgs:
    beta: float = 2.5
    gamma: float = 0.0
    retain: RetainKind = "ce"

    def validate(self, p: str) -> None:
        check(self.beta > 0, f"{p}.beta", self.beta, "a positive number")
        check(self.gamma >= 0, f"{p}.gamma", self.gamma, "a number >= 0")


@METHODS.register("simnpo")
class SimNPO(ForgetRetain):
    Args = SimNPOArgs

    def forget_loss(self, model: torch.nn.Module, f: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp = sequence_logprob(logits_of(model, f), f["labels"])
        lengths = label_mask(f["labels"]).sum(1).to(logp.dtype)
        forget = simnpo_loss(logp, lengths, self.args.beta, self.args.gamma)
        return forget, {"forget_simnpo": float(forget.detach())}
