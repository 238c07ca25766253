"""Negative Preference Optimization (NPO; Zhang et al. 2024, "Negative Preference
Optimization: From Catastrophic Collapse to Effective Unlearning"), with a retain term.

    L = (2/β)·E_forget[ log(1 + (π_θ(y|x)/π_ref(y|x))^β) ] + λ·R(retain)
      = (2/β)·E_forget[ softplus(β·(log π_θ(y|x) − log π_ref(y|x))) ] + λ·R(retain)

log π(y|x) sums the log-probabilities of the labelled (answer) tokens; π_ref is the
frozen original model. R is CE on retain answers (NPO+RT, the paper's default), KL to
the original (`retain: kl`) or nothing. Limits: as β → 0, L − 2·log2/β → E[log π_θ −
log π_ref], whose gradient is gradient ascent's on the sequence log-likelihood; for
β > 0 the forget term is bounded below by 0 and its gradient vanishes once π_θ ≪ π_ref,
which is what keeps NPO from GA's catastrophic collapse.
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
    logits_of,
    sequence_logprob,
)

if TYPE_CHECKING:
    pass


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """(2/β)·mean softplus(β·(logp − ref_logp)); logp, ref_logp (B,) sequence log-probs."""
    return (2.0 / beta) * F.softplus(beta * (logp - ref_logp)).mean()


@dataclass
class NPOArgs:
    beta: float = 0.1
    retain: RetainKind = "ce"

    def validate(self, p: str) -> None:
        check(self.beta > 0, f"{p}.beta", self.beta, "a positive number")


@METHODS.register("npo")
class NPO(ForgetRetain):
    Args = NPOArgs
    uses_reference = True

    def forget_loss(self, model: torch.nn.Module, f: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logp = sequence_logprob(logits_of(model, f), f["labels"])
        ref_logp = sequence_logprob(self.reference.logits(f), f["labels"])
        forget = npo_loss(logp, ref_logp, self.args.beta)
        return forget, {"forget_npo": float(forget.detach()),
                        "forget_logratio": float((logp - ref_logp).mean().detach())}
