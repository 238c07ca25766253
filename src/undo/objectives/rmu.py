"""Representation Misdirection for Unlearning (RMU; Li et al. 2024, "The WMDP Benchmark").

Only the chosen parameters (by default the MLP down-projections of `train_layers`) are
trained. With h_θ(x) the output of decoder layer `layer` (B, T, d):

    L = mean_{forget positions} ‖h_θ − c·u‖²/d  +  α·mean_{retain positions} ‖h_θ − h_orig‖²/d

u is a fixed random unit vector (seeded; `u_dist` uniform = the original code's
`torch.rand` direction, all components positive; gaussian = an isotropic direction),
c the steering coefficient, h_orig the frozen original model's activation and α
`unlearn.retain_weight`. The retain term can be switched off (`retain: none`), as in
the public code of Lee et al. 2025 for the synthetic settings.

Layer indices are explicit and 0-based: `layer` is the decoder layer whose *output*
is steered (hidden_states[layer + 1] in HF's `output_hidden_states` numbering), and
`train_layers` lists decoder layers whose MLP output projection is trained (found by
`undo.architectures`, so any supported family works). The public code
takes `hidden_states[layer]`, the output of layer `layer − 1`, so the last listed layer
gets no gradient (an off-by-one). Here a train layer after `layer` would likewise get
no gradient, so it is rejected with a ConfigError instead of being silently inert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from ..architectures import blocks, family, mlp_out_names
from ..configlib import check
from .base import METHODS
from .unlearning import (
    Batch,
    Reference,
    Weighting,
    check_weighting,
    combine,
    layer_output,
    masked_mean,
    parse_args,
)

if TYPE_CHECKING:
    from ..config import UnlearnConfig


def control_vector(dim: int, coef: float, dist: Literal["uniform", "gaussian"],
                   generator: torch.Generator) -> torch.Tensor:
    """c·u, u a unit vector drawn from `dist` with `generator` (d,)."""
    if dist == "uniform":
        u = torch.rand(dim, generator=generator)
    else:
        u = torch.randn(dim, generator=generator)
    return coef * u / u.norm()


def rmu_loss(h_forget: torch.Tensor, forget_mask: torch.Tensor, control: torch.Tensor,
             h_retain: torch.Tensor | None = None, h_retain_ref: torch.Tensor | None = None,
             retain_mask: torch.Tensor | None = None, alpha: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, forget MSE, retain MSE). h_* (B, T, d), masks (B, T), control (d,).

    MSE is the mean over hidden dimensions, then over masked positions (`F.mse_loss` of
    the original when every position counts). Retain is 0 when `h_retain` is None.
    """
    forget = masked_mean(((h_forget.float() - control) ** 2).mean(-1), forget_mask)
    if h_retain is None:
        retain = torch.zeros((), device=h_forget.device)
    else:
        assert h_retain_ref is not None and retain_mask is not None
        retain = masked_mean(((h_retain.float() - h_retain_ref.float()) ** 2).mean(-1),
                             retain_mask)
    return forget + alpha * retain, forget, retain


@dataclass
class RMUArgs:
    # 0-based decoder layer whose output is steered. Defaults fit any model of >= 2
    # layers (the tiny default has 2); deeper models usually steer a middle layer.
    layer: int = 1
    train_layers: list[int] = field(default_factory=lambda: [0, 1])
    # Module (under each train layer) whose weights train; null: the family's MLP output
    # projection (Llama's mlp.down_proj, GPT-2's mlp.c_proj, GPT-NeoX's mlp.dense_4h_to_h).
    param: str | None = None
    steering_coef: float = 20.0  # c
    u_dist: Literal["uniform", "gaussian"] = "uniform"
    u_seed: int = 0
    retain: Literal["mse", "none"] = "mse"
    positions: Literal["all", "labelled"] = "all"  # which forget/retain positions count
    # sum: forget + α·retain; convex: (1 − α)·forget + α·retain (the authors' WMDP RMU,
    # α 0.5 for the teachers they distilled; src/tools/unlearn_wmdp/rmu.py)
    weighting: Weighting = "sum"

    def validate(self, p: str) -> None:
        check(self.layer >= 0, f"{p}.layer", self.layer, "an integer >= 0")
        check(bool(self.train_layers), f"{p}.train_layers", self.train_layers,
               "a non-empty list of layer indices")
        check(all(0 <= i <= self.layer for i in self.train_layers), f"{p}.train_layers",
               self.train_layers, f"layer indices in [0, layer={self.layer}] (a layer after "
               "the steered one gets no gradient)")
        check(self.steering_coef > 0, f"{p}.steering_coef", self.steering_coef,
               "a positive number")


@METHODS.register("rmu")
class RMU:
    def __init__(self, retain_weight: float = 1.0, args: RMUArgs | None = None) -> None:
        self.alpha = retain_weight
        self.args = args or RMUArgs()
        self.reference = Reference() if self.args.retain == "mse" else None
        self.control: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg: UnlearnConfig) -> RMU:
        args = parse_args(cfg.method_args, RMUArgs, "rmu")
        check_weighting(args.weighting, cfg.retain_weight, "rmu")
        return cls(cfg.retain_weight, args)

    def trained_names(self, model: torch.nn.Module) -> list[str]:
        n = len(blocks(model))
        check(self.args.layer < n, "unlearn.method_args.layer", self.args.layer,
               f"a decoder layer index in [0, {n - 1}] for this model")
        if self.args.param is None:
            return mlp_out_names(model, self.args.train_layers)
        prefix = family(model).blocks
        names = [f"{prefix}.{i}.{self.args.param}.weight" for i in self.args.train_layers]
        params = dict(model.named_parameters())
        missing = [x for x in names if x not in params]
        check(not missing, "unlearn.method_args.param", self.args.param,
               "null (the MLP output projection) or a module name under each decoder layer "
               f"(no parameter {missing[0] if missing else ''})")
        return names

    def prepare(self, model: torch.nn.Module) -> None:
        """Freeze all but the chosen parameters; make u and the frozen reference."""
        if self.reference is not None:  # before freezing: an exact copy of the original
            self.reference.prepare(model)
        keep = set(self.trained_names(model))
        for name, p in model.named_parameters():
            p.requires_grad_(name in keep)
        g = torch.Generator().manual_seed(self.args.u_seed)
        dim = int(model.config.hidden_size)
        device = next(model.parameters()).device
        self.control = control_vector(dim, self.args.steering_coef, self.args.u_dist, g).to(device)

    def _mask(self, enc: Batch) -> torch.Tensor:
        if self.args.positions == "all":
            return enc["attention_mask"].bool()
        # Labelled next-token targets: the positions that predict them are t-1.
        m = torch.zeros_like(enc["attention_mask"], dtype=torch.bool)
        m[:, :-1] = enc["labels"][:, 1:] != -100
        return m

    @property
    def frozen_flops(self) -> float:
        """FLOPs of the frozen reference model's forwards so far (for the training loop)."""
        return self.reference.flops if self.reference is not None else 0.0

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        if self.control is None:
            raise RuntimeError("RMU.loss called before prepare(model)")
        f, r = batch["forget"], batch["retain"]
        self.control = self.control.to(f["input_ids"].device)
        h_f = layer_output(model, f, self.args.layer)
        if self.reference is not None:
            h_r = layer_output(model, r, self.args.layer)
            with torch.no_grad():
                h_ref = self.reference.layer_output(r, self.args.layer)
            _, fl, rl = rmu_loss(h_f, self._mask(f), self.control, h_r, h_ref,
                                 self._mask(r), self.alpha)
            total = combine(fl, rl, self.alpha, self.args.weighting)
        else:
            total, fl, rl = rmu_loss(h_f, self._mask(f), self.control)
        return total, {"forget_mse": float(fl.detach()), "retain_mse": float(rl.detach())}
