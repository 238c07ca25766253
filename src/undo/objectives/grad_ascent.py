"""Gradient ascent: maximise the forget set's cross-entropy.

    L = −CE(forget)

The simplest unlearning baseline (e.g. Jang et al. 2023, "Knowledge Unlearning for
Mitigating Privacy Risks in Language Models"). Unbounded below: the loss can be pushed
to −∞, which is why it usually wrecks the retain set too; gradient clipping (1.0 by
default) keeps each step bounded. It has no retain term (`retain_weight` is ignored):
that is GradDiff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .base import METHODS
from .unlearning import Batch, logits_of, parse_args, token_ce

if TYPE_CHECKING:
    from ..config import UnlearnConfig


def grad_ascent_loss(forget_logits: torch.Tensor, forget_labels: torch.Tensor) -> torch.Tensor:
    """−CE over the labelled forget positions. logits (B, T, V), labels (B, T)."""
    return -token_ce(forget_logits, forget_labels)


@dataclass
class GradAscentArgs:
    """GradAscent has no options of its own."""


@METHODS.register("grad_ascent")
class GradAscent:
    def __init__(self, args: GradAscentArgs | None = None) -> None:
        self.args = args or GradAscentArgs()

    @classmethod
    def from_config(cls, cfg: UnlearnConfig) -> GradAscent:
        return cls(parse_args(cfg.method_args, GradAscentArgs, "grad_ascent"))

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        f = batch["forget"]
        loss = grad_ascent_loss(logits_of(model, f), f["labels"])
        return loss, {"forget_ce": -float(loss.detach())}
