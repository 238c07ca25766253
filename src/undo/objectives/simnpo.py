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
from .base import OBJECTIVES
from .unlearning import (
    Batch,
    Reference,
    RetainKind,
    label_mask,
    logits_of,
    parse_args,
    retain_loss,
    sequence_logprob,
)

if TYPE_CHECKING:
    from ..config import UnlearnConfig


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


@OBJECTIVES.register("simnpo")
class SimNPO:
    def __init__(self, retain_weight: float = 1.0, args: SimNPOArgs | None = None) -> None:
        self.retain_weight = retain_weight
        self.args = args or SimNPOArgs()
        self.reference = Reference() if self.args.retain == "kl" else None

    @classmethod
    def from_config(cls, cfg: UnlearnConfig) -> SimNPO:
        return cls(cfg.retain_weight, parse_args(cfg.method_args, SimNPOArgs, "simnpo"))

    def prepare(self, model: torch.nn.Module) -> None:
        if self.reference is not None:
            self.reference.prepare(model)

    @property
    def frozen_flops(self) -> float:
        """FLOPs of the frozen reference model's forwards so far (for the training loop)."""
        return self.reference.flops if self.reference is not None else 0.0

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        f = batch["forget"]
        logp = sequence_logprob(logits_of(model, f), f["labels"])
        lengths = label_mask(f["labels"]).sum(1).to(logp.dtype)
        forget = simnpo_loss(logp, lengths, self.args.beta, self.args.gamma)
        retain, metrics = retain_loss(self.args.retain, model, batch["retain"], self.reference)
        loss = forget + self.retain_weight * retain
        return loss, {"forget_simnpo": float(forget.detach()), **metrics}
