"""Distillation KL from the models' last hidden states: (B, T, V) logits are never formed.

For a 256k vocabulary the logits dominate memory (110 × 1024 positions × 256k in bf16 is
~58 GB per model). Here each model runs its transformer only; the counted positions'
last hidden states (N, H) are gathered, and the output head (the projection plus any
logit transform: Gemma-2's final softcapping c·tanh(z/c), Cohere's `logit_scale`,
Granite's `logits_scaling`) is applied to one chunk of positions at a time.

`_HeadKL` is fused (as in fused linear cross-entropy kernels): per chunk it forms the
student's logits, asks a `rows` callback for the loss and its gradient with respect to
those logits (closed form, `distill_kl`), and immediately turns that gradient into the
chunk's gradients for the hidden states and the head weight, accumulated in float32 (at
least). The backward only scales them by the incoming gradient. Nothing is recomputed
(the head costs one matmul forward and two for gradients, as in the HF forward), and
peak memory grows with the chunk size, not with B·T·V. The price is a float32 copy of
the head's gradient (V × H) held from the forward to the backward.

Exactness: the student's hidden states come from its own forward (through any wrapper,
e.g. DDP) with `output_hidden_states=True` and an empty `logits_to_keep`; the teacher's
from its base transformer (`model.base_model`). Since an architecture could post-process
its logits in a way `Head` does not know, `check_head` compares, once per model, the
head applied to those hidden states with the model's own logits (transformers >= 4.50,
for `logits_to_keep`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..configlib import ConfigError

Tensor = torch.Tensor
# rows(z, sl) -> (Σ_rows T²·KL, ∂/∂z of it): z the chunk's final logits (n, V), which the
# callback may overwrite; sl the chunk's slice of the N counted positions.
RowsKL = Callable[[Tensor, slice], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Head:
    """The output projection and logit transform of a causal LM, in HF's order of ops:
    z = softcap(((h Wᵀ + b) · mul) / div)."""

    weight: Tensor
    bias: Tensor | None
    mul: float | None = None  # Cohere: logits * logit_scale
    div: float | None = None  # Granite: logits / logits_scaling
    softcap: float | None = None  # Gemma-2/3: c·tanh(z / c)

    @property
    def factor(self) -> float:
        """∂z/∂(h Wᵀ + b) without the softcap: mul / div."""
        return (self.mul or 1.0) / (self.div or 1.0)

    def logits(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        """Final logits (n, V) in the model's dtype, and the softcap's derivative
        1 − (z/c)² in float32 (None without a softcap)."""
        z = F.linear(h, self.weight, self.bias)
        if self.mul is not None:
            z = z * self.mul
        if self.div is not None:
            z = z / self.div
        if self.softcap is None:
            return z, None
        z = torch.tanh(z / self.softcap) * self.softcap
        # d(c·tanh(y/c))/dy = 1 − tanh² = 1 − (z/c)², computed before a callback overwrites z
        t = (z / self.softcap).to(torch.promote_types(z.dtype, torch.float32))
        return z, t.square_().neg_().add_(1.0)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside a DDP / accelerate wrapper (wrappers keep it as `.module`)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


def head_of(model: torch.nn.Module) -> Head:
    m = unwrap(model)
    lin = m.get_output_embeddings()
    cfg = m.config
    cfg = getattr(cfg, "get_text_config", lambda: cfg)()
    mul, div = getattr(cfg, "logit_scale", None), getattr(cfg, "logits_scaling", None)
    return Head(lin.weight, lin.bias, mul=mul if mul not in (None, 1.0) else None,
                div=div if div not in (None, 1.0) else None,
                softcap=getattr(cfg, "final_logit_softcapping", None))


def student_hidden(model: torch.nn.Module, input_ids: Tensor,
                   attention_mask: Tensor | None) -> Tensor:
    """(B, T, H) last hidden states through the model's own forward (wrappers included),
    with no logits computed (`logits_to_keep` = no position)."""
    keep = torch.zeros(0, dtype=torch.long, device=input_ids.device)
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                output_hidden_states=True, logits_to_keep=keep)
    if out.logits.size(1) != 0:
        raise ConfigError("distill.logits='chunked': this model's forward ignores "
                          "`logits_to_keep` (transformers < 4.50?); valid: 'full'")
    return out.hidden_states[-1]


def teacher_hidden(model: torch.nn.Module, input_ids: Tensor,
                   attention_mask: Tensor | None) -> Tensor:
    """(B, T, H) last hidden states of the base transformer (no logits, no tuple of every
    layer's states); for a frozen teacher, which is never wrapped."""
    base = unwrap(model).base_model
    return base(input_ids=input_ids, attention_mask=attention_mask,
                use_cache=False).last_hidden_state


def check_head(model: torch.nn.Module, hidden: Callable[..., Tensor], input_ids: Tensor) -> None:
    """Raise unless head(hidden(model, x)) equals the model's logits on a short input."""
    m = unwrap(model)
    was = m.training
    m.eval()  # dropout would make the two forwards differ
    try:
        with torch.no_grad():
            x = input_ids[:1, :8]
            ref = m(input_ids=x, use_cache=False).logits[0].float()
            ours = head_of(m).logits(hidden(m, x, None)[0])[0].float()
    finally:
        m.train(was)
    tol = (1e-4 if m.dtype in (torch.float32, torch.float64) else 3e-2) * max(1.0, float(ref.abs().max()))
    err = float((ours - ref).abs().max())
    if not err <= tol:
        raise ConfigError(f"distill.logits='chunked': {type(m).__name__}'s logits are not its "
                          f"output head applied to its last hidden state (max |diff| {err:.3g});"
                          " valid: 'full' for this architecture")


class _HeadKL(torch.autograd.Function):
    """Σ over chunks of rows(head(hidden[chunk])) / N; gradients computed in the forward."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, head: Head,
                rows: RowsKL, chunk: int, sub: int, grad_mode: bool) -> Tensor:
        n = hidden.size(0)
        acc = torch.promote_types(weight.dtype, torch.float32)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        # needs_input_grad ignores no_grad(): without grad mode no gradient is formed
        want_h, want_w, want_b = (grad_mode and w for w in ctx.needs_input_grad[:3])
        gh = torch.zeros_like(hidden) if want_h else None
        gw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_w else None
        gb = torch.zeros(bias.shape, dtype=acc, device=bias.device) if want_b else None
        scale = 1.0 / max(n, 1)
        for i in range(0, n, chunk):
            sl = slice(i, min(i + chunk, n))
            h = hidden[sl]
            z, dz = head.logits(h)
            g = torch.empty(z.shape, dtype=weight.dtype, device=z.device) \
                if want_h or want_w or want_b else None
            # The per-row math runs on cache-sized sub-chunks (each pass over the logits
            # then stays in cache); the matmuls on the whole chunk (few (V, H) updates).
            for j in range(0, z.size(0), sub):
                part = slice(j, j + sub)
                loss, gj = rows(z[part], slice(i + j, min(i + j + sub, sl.stop)))
                total += loss
                if g is not None:  # 1/N: the mean, as in the full loss's gradient
                    gj.mul_(scale * head.factor)
                    g[part] = gj if dz is None else gj.mul_(dz[part])
            if g is None:
                continue
            if gh is not None:
                gh[sl] = (g @ weight).to(gh.dtype)
            if gw is not None:  # in place when the dtypes allow it (no (V, H) temporary)
                if g.dtype == acc:
                    gw.addmm_(g.t(), h.to(acc))
                else:
                    gw += g.t() @ h
            if gb is not None:
                gb += g.sum(0)
        ctx.grads = (gh, gw, gb)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total * scale

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grads = tuple(None if g is None else g.mul_(grad_out).to(dt)
                      for g, dt in zip(ctx.grads, ctx.dtypes, strict=True))
        ctx.grads = None  # free the (V, H) buffer as soon as autograd has it
        return (*grads, None, None, None, None, None)


def hidden_kl(hidden: Tensor, head: Head, rows: RowsKL, chunk: int, sub: int) -> Tensor:
    """(1/N)·Σ rows(head(hidden[rows])) for hidden (N, H): the head applied to `chunk`
    positions at a time, `rows` called on `sub` of them at a time."""
    return _HeadKL.apply(hidden, head.weight, head.bias, head, rows, chunk, sub,
                         torch.is_grad_enabled())


def head_chunk_rows(vocab: int, device: torch.device, max_rows: int) -> int:
    """Positions per head chunk: ~32M logits on CPU, ~256M on GPUs. Larger than the KL's
    cache-sized chunks because each chunk re-reads and re-writes the (V, H) gradient
    accumulator: at 256k tokens, 128 rows on CPU, 1024 on GPUs."""
    budget = 1 << (28 if device.type == "cuda" else 25)
    return max(1, min(max_rows, budget // max(vocab, 1)))
