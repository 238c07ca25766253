"""Cross-entropy on labelled positions: pretraining and relearning attacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LOSSES


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE. logits (B, T, V) predict labels shifted by one; -100 is ignored."""
    return F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
        ignore_index=-100,
    )


@LOSSES.register("ce")
class CrossEntropy:
    """L = CE(batch) on positions whose label is not -100 (answers, in arithmetic)."""

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return token_ce(logits, batch["labels"]), {}
