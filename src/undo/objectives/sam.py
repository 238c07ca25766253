"""Sharpness-aware minimisation of an unlearning loss (SAM; Foret et al. 2021), as used
for robust unlearning by Fan et al. 2025 ("Towards LLM Unlearning Resilient to
Relearning Attacks: A Sharpness-Aware Minimization Perspective").

    ε = ρ·g/‖g‖,  g = ∇L(θ)          (ascent to the worst point within radius ρ)
    θ ← θ − η·∇L(θ + ε)              (the optimiser steps with the perturbed gradient)

L is any other unlearning objective (`base`, `base_args`). Correct under gradient
accumulation: g is the gradient of the loss averaged over ALL micro-batches of the
step, so ε is the perturbation of the full batch; the second pass then accumulates
∇L(θ + ε) over all micro-batches before θ is restored. (The public code of Lee et al.
computes ε per micro-batch and discards earlier micro-batches' gradients.) Each step
costs two forward+backward passes; `extra_forward_params` reports the second one to the
FLOP count (3·N matmul params = one more 6·N per position, plus the base's frozen
model twice).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..compute import matmul_params
from ..configlib import check
from .base import METHODS
from .unlearning import Batch, Wrapper

if TYPE_CHECKING:
    pass


def sam_perturbation(grads: list[torch.Tensor], rho: float, eps: float = 1e-12
                     ) -> list[torch.Tensor]:
    """ε_i = ρ·g_i / ‖g‖ with ‖g‖ the global L2 norm over all tensors."""
    norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    scale = rho / (norm + eps)
    return [g * scale for g in grads]


@dataclass
class SAMArgs:
    base: str = "grad_diff"
    base_args: dict[str, Any] = field(default_factory=dict)
    rho: float = 0.01

    def validate(self, p: str) -> None:
        check(self.rho > 0, f"{p}.rho", self.rho, "a positive number")
        check(self.base != "sam", f"{p}.base", self.base, "an unlearning method other than sam")


@METHODS.register("sam")
class SAM(Wrapper):
    Args = SAMArgs

    def __init__(self, base: Any, args: SAMArgs | None = None) -> None:
        super().__init__(base, args)
        self._n_params = 0

    @property
    def extra_forward_params(self) -> int:
        # The second forward + backward (6·N = 2·3N per position), plus twice any
        # fixed-cost frozen forward of the base objective.
        return 3 * self._n_params + 2 * int(getattr(self.base, "extra_forward_params", 0))

    # frozen_flops (the wrapped objective's) already counts both passes.

    def prepare(self, model: torch.nn.Module) -> None:
        super().prepare(model)
        self._n_params = matmul_params(model)

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The base loss (for evaluation and logging; training goes through `gradients`)."""
        return self.base.loss(model, batch)

    def _pass(self, model: torch.nn.Module, micro_batches: list[Batch],
              backward: Callable[[torch.Tensor], None]) -> dict[str, float]:
        n = len(micro_batches)
        totals: dict[str, float] = {}
        for mb in micro_batches:
            loss, metrics = self.base.loss(model, mb)
            backward(loss / n)
            for k, v in {"loss": float(loss.detach()), **metrics}.items():
                totals[k] = totals.get(k, 0.0) + v / n
        return totals

    def gradients(self, model: torch.nn.Module, micro_batches: list[Batch],
                  backward: Callable[[torch.Tensor], None]) -> dict[str, float]:
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        # Pass 1: g = ∇L(θ) over the whole batch (every micro-batch).
        first = self._pass(model, micro_batches, backward)
        with_grad = [p for p in params if p.grad is not None]
        eps = sam_perturbation([p.grad for p in with_grad], self.args.rho)
        # Keep θ itself: θ + ε − ε is not bit-exact in floating point.
        saved = [p.detach().clone() for p in with_grad]
        with torch.no_grad():
            for p, e in zip(with_grad, eps, strict=True):
                p.add_(e)
        for p in params:
            p.grad = None
        # Pass 2: ∇L(θ + ε), accumulated over every micro-batch, then restore θ.
        second = self._pass(model, micro_batches, backward)
        with torch.no_grad():
            for p, keep in zip(with_grad, saved, strict=True):
                p.copy_(keep)
        out = {k: v for k, v in first.items()}
        out["loss_perturbed"] = second["loss"]
        return out
