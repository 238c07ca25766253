"""Shared pieces of the unlearning objectives: masks, log-likelihoods, the retain term,
the frozen reference model, and building an objective from `cfg.unlearn`.

An unlearning batch is nested: `{"forget": encoded, "retain": encoded, "noise_seed": int}`
where `encoded` has `input_ids`, `attention_mask` and `labels` (-100 where no loss is
taken; in arithmetic the answer digits and EOS are labelled). Every loss below is a pure
function of tensors; the objective classes only run the model and call them.

Each unlearning objective class is registered in `METHODS` and has
`from_config(cfg: UnlearnConfig)`, which validates `cfg.method_args` against the
method's own dataclass (unknown keys and bad values raise a `ConfigError`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F

from ..architectures import blocks
from ..compute import forward_flops, matmul_params
from ..configlib import ConfigError, from_dict
from .base import METHODS

if TYPE_CHECKING:
    from ..config import UnlearnConfig

Batch = dict[str, Any]
RetainKind = Literal["ce", "kl", "none"]
# How the forget and retain terms add up, w = `unlearn.retain_weight`: `sum`, forget +
# w·retain (the authors' arithmetic and language unlearning, `balance_alpha`); `convex`,
# (1 − w)·forget + w·retain with 0 < w < 1 (their WMDP unlearning, `alpha`:
# src/tools/unlearn_wmdp/maxent.py and rmu.py).
Weighting = Literal["sum", "convex"]


def combine(forget: torch.Tensor, retain: torch.Tensor, weight: float,
            weighting: Weighting = "sum") -> torch.Tensor:
    """The unlearning loss from its two terms (see `Weighting`)."""
    if weighting == "convex":
        return (1 - weight) * forget + weight * retain
    return forget + weight * retain


def check_weighting(weighting: str, weight: float, method: str) -> None:
    """`convex` needs a retain weight strictly between 0 and 1, as the authors assert."""
    if weighting == "convex" and not 0 < weight < 1:
        raise ConfigError(f"config key 'unlearn.retain_weight': got {weight!r}; valid: a "
                          f"number in (0, 1) with unlearn.method_args.weighting=convex "
                          f"(method '{method}')")


class UnlearnObjective(Protocol):
    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        ...


# ------------------------------------------------------------------------- pure math


def label_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) bool: next-token positions that carry a label (logits[:, t] predict t+1)."""
    return labels[:, 1:] != -100


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B, T-1) log p(label_{t+1} | ≤t), 0 where unlabelled. logits (B, T, V)."""
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
    target = labels[:, 1:].clamp(min=0)
    lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return lp * label_mask(labels)


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) log π(y|x) = Σ_t log p(y_t | x, y_<t) over the labelled (answer) tokens."""
    return token_logprobs(logits, labels).sum(dim=1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over positions where `mask` is true (0 if none)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def forward_kl(ref_logits: torch.Tensor, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(p_ref ‖ p_θ) = Σ_v p_ref,v (log p_ref,v − log p_θ,v), averaged over `mask`.

    Both logits (B, T, V) at the same positions; `mask` (B, T). Used as the retain term
    "stay close to the original model" (MaxEnt's WMDP variant, option `retain: kl`).
    """
    ref_logp = F.log_softmax(ref_logits.float(), dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1)  # (B, T)
    return masked_mean(kl, mask)


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE over labelled positions (the same as `objectives.ce.token_ce`)."""
    return -masked_mean(token_logprobs(logits, labels), label_mask(labels))


# ------------------------------------------------------------------- model helpers


def logits_of(model: torch.nn.Module, enc: Batch) -> torch.Tensor:
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The reference model: one deep copy, eval mode, no gradients (held once)."""
    ref = copy.deepcopy(model)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


class _Stop(Exception):
    """Raised by a capture hook: nothing after the last needed layer is computed."""


def layer_outputs(model: torch.nn.Module, enc: Batch, layers: list[int]) -> list[torch.Tensor]:
    """Outputs of the given 0-based decoder layers, each (B, T, d), in the order given.

    Forward hooks capture them; the forward stops right after the deepest one, so
    nothing downstream is computed. Indices are checked against the model.
    """
    decoder = blocks(model)
    for i in layers:
        if not 0 <= i < len(decoder):
            raise ConfigError(f"layer index {i} is out of range; valid: 0..{len(decoder) - 1} "
                              "for this model")
    captured: dict[int, torch.Tensor] = {}
    last = max(layers)

    def make_hook(i: int):
        def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            captured[i] = output[0] if isinstance(output, tuple) else output
            if i == last:
                raise _Stop

        return hook

    handles = [decoder[i].register_forward_hook(make_hook(i)) for i in set(layers)]
    try:
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return [captured[i] for i in layers]


def layer_output(model: torch.nn.Module, enc: Batch, layer: int) -> torch.Tensor:
    """Output of decoder layer `layer` (B, T, d)."""
    return layer_outputs(model, enc, [layer])[0]


@dataclass
class Reference:
    """Holds the frozen original model, made at `prepare` time (before any update).

    Objectives that need one own a `Reference`; it adds up the FLOPs of the forwards it
    runs (`flops`: 2·N per position of the batches it actually sees, e.g. only retain
    data), which the objective reports as `frozen_flops` to the training loop.
    """

    model: torch.nn.Module | None = None
    n_params: int = 0
    flops: float = 0.0

    def prepare(self, model: torch.nn.Module) -> int:
        if self.model is None:
            self.model = frozen_copy(model)
            self.n_params = matmul_params(self.model)
        return self.n_params

    @torch.no_grad()
    def logits(self, enc: Batch) -> torch.Tensor:
        self.flops += forward_flops(self.n_params, enc["input_ids"].numel())
        return logits_of(self.on_device(enc["input_ids"].device), enc)

    @torch.no_grad()
    def layer_output(self, enc: Batch, layer: int) -> torch.Tensor:
        """Output of decoder layer `layer`; the forward stops there, so it costs about
        (layer + 1) / n_layers of a full one (the output head is not run)."""
        model = self.on_device(enc["input_ids"].device)
        share = (layer + 1) / len(blocks(model))
        self.flops += share * forward_flops(self.n_params, enc["input_ids"].numel())
        return layer_output(model, enc, layer)

    def on_device(self, device: torch.device) -> torch.nn.Module:
        """The frozen model, moved once to where the batches are (the loop moves the
        trained model after `prepare`, e.g. to the GPU)."""
        if self.model is None:
            raise RuntimeError("reference model used before prepare(model)")
        if next(self.model.parameters()).device != device:
            self.model.to(device)
        return self.model


def retain_loss(kind: RetainKind, model: torch.nn.Module, enc: Batch,
                reference: Reference | None) -> tuple[torch.Tensor, dict[str, float]]:
    """The retain term: CE on retain answers, KL(original ‖ θ) on them, or nothing."""
    if kind == "none":
        return torch.zeros((), device=enc["input_ids"].device), {}
    logits = logits_of(model, enc)
    if kind == "ce":
        ce = token_ce(logits, enc["labels"])
        return ce, {"retain_ce": float(ce.detach())}
    assert reference is not None, "retain: kl needs a reference model"
    ref = reference.logits(enc)
    kl = forward_kl(ref[:, :-1], logits[:, :-1], label_mask(enc["labels"]))
    return kl, {"retain_kl": float(kl.detach())}


class ForgetRetain:
    """Base of the methods that add a forget term to a retain term (`retain`: CE on retain
    answers, KL to the frozen original model, or none): MaxEnt, NPO, SimNPO.

    A subclass names its `Args` dataclass (with a `retain` field) and defines
    `forget_loss`; `uses_reference` says it needs the frozen original model whatever the
    retain term (NPO's log-ratio).
    """

    Args: ClassVar[type]
    uses_reference: ClassVar[bool] = False

    def __init__(self, retain_weight: float = 1.0, args: Any = None) -> None:
        self.retain_weight = retain_weight
        self.args = args or self.Args()
        self.reference = (Reference() if self.uses_reference or self.args.retain == "kl"
                          else None)

    @classmethod
    def from_config(cls, cfg: UnlearnConfig) -> ForgetRetain:
        args = parse_args(cfg.method_args, cls.Args, cfg.method)
        check_weighting(getattr(args, "weighting", "sum"), cfg.retain_weight, cfg.method)
        return cls(cfg.retain_weight, args)

    def prepare(self, model: torch.nn.Module) -> None:
        if self.reference is not None:
            self.reference.prepare(model)

    @property
    def frozen_flops(self) -> float:
        """FLOPs of the frozen reference model's forwards so far (for the training loop)."""
        return self.reference.flops if self.reference is not None else 0.0

    def forget_loss(self, model: torch.nn.Module, forget: Batch
                    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        forget, forget_metrics = self.forget_loss(model, batch["forget"])
        retain, metrics = retain_loss(self.args.retain, model, batch["retain"], self.reference)
        total = combine(forget, retain, self.retain_weight, getattr(self.args, "weighting", "sum"))
        return total, {**forget_metrics, **metrics}


class Wrapper:
    """Base of the methods that wrap another unlearning objective (`method_args.base` with
    its `base_args`): RepNoise adds a term to its loss, SAM changes how its gradients are
    taken. The wrapped objective's hooks (prepare, frozen FLOPs) pass through."""

    Args: ClassVar[type]

    def __init__(self, base: Any, args: Any = None) -> None:
        self.base = base
        self.args = args or self.Args()

    @classmethod
    def from_config(cls, cfg: UnlearnConfig) -> Wrapper:
        args = parse_args(cfg.method_args, cls.Args, cfg.method)
        return cls(build_base(cfg, args.base, args.base_args), args)

    @property
    def frozen_flops(self) -> float:
        return float(getattr(self.base, "frozen_flops", 0.0))

    def prepare(self, model: torch.nn.Module) -> None:
        if hasattr(self.base, "prepare"):
            self.base.prepare(model)


# ------------------------------------------------------------------- configuration


def parse_args(raw: dict[str, Any], cls: type, method: str) -> Any:
    """Validate `unlearn.method_args` against a method's dataclass; errors name the key."""
    try:
        return from_dict(dict(raw), cls)
    except ConfigError as e:
        msg = str(e).replace("config key '", "config key 'unlearn.method_args.")
        msg = msg.replace("method_args..", "method_args.")  # validate() gets prefix ""
        raise ConfigError(f"{msg} (method '{method}')") from None


def build_objective(cfg: UnlearnConfig) -> UnlearnObjective:
    """The objective `cfg.method` with its validated `method_args`."""
    # Unlearning methods are the objectives built from an `unlearn:` section.
    methods = METHODS.names()
    if cfg.method not in methods:
        raise ConfigError(f"config key 'unlearn.method': got {cfg.method!r}; valid: "
                          f"{', '.join(methods)}")
    return METHODS.get(cfg.method).from_config(cfg)


def build_base(cfg: UnlearnConfig, method: str, args: dict[str, Any]) -> UnlearnObjective:
    """The objective a wrapper (SAM, RepNoise) wraps: `cfg` with another method and args.
    Errors name the wrapper's keys (`unlearn.method_args.base_args.x`)."""
    try:
        return build_objective(replace(cfg, method=method, method_args=dict(args)))
    except ConfigError as e:
        msg = str(e).replace("'unlearn.method_args.", "'unlearn.method_args.base_args.")
        msg = msg.replace("'unlearn.method'", "'unlearn.method_args.base'")
        raise ConfigError(msg) from None
