"""Representation noising (RepNoise; Rosati et al. 2024, "Representation Noising:
A Defence Mechanism Against Harmful Finetuning"), as a term added to another objective.

    L = L_base + w·Σ_{ℓ ∈ layers} MMD²(H_f^ℓ, Z^ℓ),   Z^ℓ ~ N(0, I) of the same shape

H_f^ℓ are the forget batch's hidden states after decoder layer ℓ (non-padding positions,
at most `max_points` of them, subsampled), Z fresh Gaussian noise, MMD² the squared
maximum mean discrepancy with a sum of Gaussian kernels (`mmd2`). Pushing the forget
representations toward noise is meant to remove the information a relearning attack
would reuse. As in Lee et al. 2025 (arXiv 2506.06278) the base is MaxEnt by default
(`base`, `base_args` pick another). The noise is seeded by `seed` and the batch's
`noise_seed` (its step and micro-batch), so runs and resumed runs are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..architectures import blocks
from ..configlib import check
from .base import METHODS
from .unlearning import Batch, Wrapper, layer_outputs

if TYPE_CHECKING:
    pass


def mmd2(x: torch.Tensor, y: torch.Tensor, kernel_mul: float = 2.0,
         kernel_num: int = 5) -> torch.Tensor:
    """Squared MMD between samples x (n, d) and y (m, d), biased estimator:

        MMD² = mean k(x, x') + mean k(y, y') − 2·mean k(x, y),
        k(a, b) = Σ_i exp(−‖a − b‖² / (σ₀·kernel_mul^i)),  i = −⌊num/2⌋ … num−1−⌊num/2⌋

    with σ₀ the mean pairwise squared distance of the pooled samples (detached), the
    multi-bandwidth kernel of the RepNoise code (after Long et al. 2015). Zero when x = y.
    """
    z = torch.cat([x, y]).float()
    d2 = torch.cdist(z, z).pow(2)  # (n+m, n+m)
    n_all = z.size(0)
    base = d2.detach().sum() / max(n_all * n_all - n_all, 1)
    base = base.clamp(min=1e-12)
    k = sum(torch.exp(-d2 / (base * kernel_mul ** (i - kernel_num // 2)))
            for i in range(kernel_num))
    n = x.size(0)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def sample_positions(h: torch.Tensor, mask: torch.Tensor, max_points: int,
                     generator: torch.Generator) -> torch.Tensor:
    """(k, d) hidden states at up to `max_points` masked positions, chosen with `generator`."""
    pts = h[mask.bool()]  # (n, d)
    if pts.size(0) > max_points:
        idx = torch.randperm(pts.size(0), generator=generator)[:max_points]
        pts = pts[idx.to(pts.device)]
    return pts


@dataclass
class RepNoiseArgs:
    base: str = "maxent"  # the objective the noise term is added to
    base_args: dict[str, Any] = field(default_factory=dict)
    noise_weight: float = 1.0  # w
    layers: list[int] | None = None  # 0-based decoder layers; null: all of them
    max_points: int = 256  # positions per layer in the MMD (its cost is quadratic)
    seed: int = 0

    def validate(self, p: str) -> None:
        check(self.noise_weight >= 0, f"{p}.noise_weight", self.noise_weight, "a number >= 0")
        check(self.max_points >= 2, f"{p}.max_points", self.max_points, "an integer >= 2")
        check(self.base not in ("repnoise", "sam"), f"{p}.base", self.base,
               "a non-wrapper unlearning method (e.g. maxent, grad_diff)")


@METHODS.register("repnoise")
class RepNoise(Wrapper):
    Args = RepNoiseArgs

    @property
    def extra_forward_params(self) -> int:
        return int(getattr(self.base, "extra_forward_params", 0))

    def noise_term(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        f = batch["forget"]
        n_layers = len(blocks(model))
        layers = self.args.layers if self.args.layers is not None else list(range(n_layers))
        g = torch.Generator().manual_seed(self.args.seed * 1_000_003 + int(batch.get("noise_seed", 0)))
        total = torch.zeros((), device=f["input_ids"].device)
        for h in layer_outputs(model, f, layers):
            x = sample_positions(h, f["attention_mask"], self.args.max_points, g)
            z = torch.randn(x.shape, generator=g).to(x.device)
            total = total + mmd2(x, z)
        return total

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        base_loss, metrics = self.base.loss(model, batch)
        noise = self.noise_term(model, batch) if self.args.noise_weight else torch.zeros(())
        loss = base_loss + self.args.noise_weight * noise
        return loss, {**metrics, "base_loss": float(base_loss.detach()),
                      "noise_mmd": float(noise.detach())}
