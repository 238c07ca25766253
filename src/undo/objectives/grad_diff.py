"""Gradient difference: ascend on the forget set, descend on the retain set.

    L = −CE(forget) + λ·CE(retain)

(Liu et al. 2022, "Continual Learning and Private Unlearning"; used as an unlearning
baseline by Maini et al. 2024, TOFU, and by Lee et al. 2025, arXiv 2506.06278.)
λ is `unlearn.retain_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .base import METHODS
from .unlearning import Batch, logits_of, parse_args, token_ce

if TYPE_CHECKING:
    from ..config import UnlearnConfig


def grad_diff_loss(forget_logits: torch.Tensor, forget_labels: torch.Tensor,
                   retain_logits: torch.Tensor, retain_labels: torch.Tensor,
                   retain_weight: float) -> torch.Tensor:
    """−CE_f + λ·CE_r, each the mean over its labelled positions."""
    return (-token_ce(forget_logits, forget_labels)
            + retain_weight * token_ce(retain_logits, retain_labels))


@dataclass
class GradDiffArgs:
    """GradDiff has no options beyond `unlearn.retain_weight`."""


@METHODS.register("grad_diff")
class GradDiff:
    def __init__(self, retain_weight: float = 1.0, args: GradDiffArgs | None = None) -> None:
        self.retain_weight = retain_weight
        self.args = args or GradDiffArgs()

    @classmethod
    def from_config(cls, cfg: UnlearnConfig) -> GradDiff:
        return cls(cfg.retain_weight, parse_args(cfg.method_args, GradDiffArgs, "grad_diff"))

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        f, r = batch["forget"], batch["retain"]
        ce_f = token_ce(logits_of(model, f), f["labels"])
        ce_r = token_ce(logits_of(model, r), r["labels"])
        loss = -ce_f + self.retain_weight * ce_r
        return loss, {"forget_ce": float(ce_f.detach()), "retain_ce": float(ce_r.detach())}
