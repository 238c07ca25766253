"""Distillation on outputs: forward KL(p_teacher ‖ p_student) over the full vocabulary.

    L = T² · (1/N) Σ_{positions i} Σ_v p_t(v|i) · (log p_t(v|i) − log p_s(v|i)),
    p = softmax(z / T)

at every next-token position i whose input token and next token are both real (not
padding), N of them; the T² factor (Hinton et al. 2015) keeps gradient sizes
independent of the temperature T (default 1: the plain KL of Lee et al. 2025). No
cross-entropy term: the student only imitates the teacher.

Memory and speed: logits for a 256k vocabulary are big, so the KL never materialises
float32 log-probs for a whole batch. A custom autograd function walks the counted
positions in chunks (`chunk_rows`: ~2M elements on CPU so a chunk stays in cache, more
on GPUs), in place. Per row KL = Σ p_t·(log p_t − z + lse(z)) with z = z_s / T, so the
student needs only its logsumexp (N floats, kept for the backward); the backward
recomputes the softmaxes and writes the closed-form gradient ∂L/∂z_s = T·(q − p)/N
(q, p the student's and teacher's tempered distributions). No autograd graph of
log-softmax / subtraction / product is kept. With `logits="full"` the models' own
(B, T, V) logits are still materialised by their HF forward; `logits="chunked"` never
forms them: the loss is computed from the last hidden states, the output head applied
per chunk of positions (`distill_hidden`), with the same per-row math (`_rows_full`,
`_rows_topk`).

Targets come either from a teacher run online (frozen, under `torch.inference_mode`) or
from a cache of its log-probs (`undo.stages.teacher_cache`): full rows, or the top-k log-probs
plus the log of the remaining mass. For top-k, the loss is the KL between the (k + 1)-
bucket coarse-grainings of the two distributions (the k tokens and "everything else"),
a lower bound on the exact KL by the data-processing inequality; its gradient is
T·(q − p̃)/N with p̃ = p on the k tokens and q·r/(1 − Q) elsewhere (r the teacher's, Q
the student's top-k mass).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from ..compute import matmul_params
from ..configlib import ConfigError
from .base import LOSSES
from .distill_hidden import (
    check_head,
    head_chunk_rows,
    head_of,
    hidden_kl,
    student_hidden,
    teacher_hidden,
    unwrap,
)

Tensor = torch.Tensor


# ------------------------------------------------------------------- pure functions


def next_token_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) bool: position t counts iff tokens t and t+1 are both real (last never)."""
    m = attention_mask.bool()
    out = torch.zeros_like(m)
    out[:, :-1] = m[:, :-1] & m[:, 1:]
    return out


def is_right_padded(attention_mask: Tensor) -> bool:
    """True when every row is ones then zeros (so the causal mask alone is exact)."""
    m = attention_mask
    return bool((m[:, :-1] >= m[:, 1:]).all()) if m.size(1) > 1 else True


def kl_per_row(student: Tensor, teacher: Tensor, temperature: float = 1.0,
               teacher_is_logprobs: bool = False) -> Tensor:
    """T²·KL(p_t ‖ p_s) for each row of (n, V) logits, float32, plain autograd.

    The simple, materialising version: the reference the chunked function is tested
    against, and fine for small inputs.
    """
    ls = F.log_softmax(_up(student) / temperature, dim=-1)
    lt = _teacher_logp(teacher, temperature, teacher_is_logprobs)
    return temperature**2 * _xlogy_diff(lt, ls).sum(-1)


def _teacher_logp(teacher: Tensor, temperature: float, is_logprobs: bool) -> Tensor:
    # Cached rows are already tempered log-probs; re-normalising them is idempotent and
    # removes rounding drift, so both cases go through one log_softmax.
    scale = 1.0 if is_logprobs else temperature
    x = _up(teacher)
    return F.log_softmax(x if scale == 1.0 else x / scale, dim=-1)


def _up(x: Tensor) -> Tensor:
    """At least float32 (bf16/fp16 logits are upcast; float64 stays exact for tests)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _scaled(rows: Tensor, temperature: float) -> Tensor:
    """Gathered rows (already a copy) upcast and divided by T, in place where possible."""
    z = _up(rows)
    return z if temperature == 1.0 else z.div_(temperature)


def chunk_rows(vocab: int, device: torch.device, max_rows: int) -> int:
    """Rows per KL chunk: ~2M elements on CPU (stays in cache: measured ~3x faster than
    one big chunk at V = 32k), ~64M on GPUs (few kernel launches), at most `max_rows`."""
    budget = 1 << (26 if device.type == "cuda" else 21)
    return max(1, min(max_rows, budget // max(vocab, 1)))


def _xlogy_diff(lt: Tensor, ls: Tensor) -> Tensor:
    """p_t·(log p_t − log p_s), with 0 where p_t = 0 (a −inf teacher logit)."""
    p = lt.exp()
    return torch.where(p > 0, p * (lt - ls), torch.zeros((), device=lt.device))


class _ChunkedForwardKL(torch.autograd.Function):
    """Mean T²·KL over `positions` rows of `student` (M, V); see the module docstring.

    Per row, with z = z_s / T, lse = log Σ exp z and l_t the teacher's log-probs:
    KL = Σ p_t·(l_t − z + lse), so the student needs only its logsumexp (kept for the
    backward, N floats), not a log-softmax buffer; the gradient is exp(z − lse) − p_t.
    Chunks are small enough to stay in cache, and every step is in place.
    """

    @staticmethod
    def forward(ctx: Any, student: Tensor, positions: Tensor, teacher: Tensor,
                teacher_rows: Tensor, temperature: float, teacher_is_logprobs: bool,
                chunk: int) -> Tensor:
        n = positions.numel()
        total = torch.zeros((), dtype=_up(student[:0]).dtype, device=student.device)
        lses = []
        for i in range(0, n, chunk):
            z = _scaled(student.index_select(0, positions[i:i + chunk]), temperature)
            lse = torch.logsumexp(z, dim=-1)  # (n,)
            lt = _teacher_logp(teacher.index_select(0, teacher_rows[i:i + chunk]),
                               temperature, teacher_is_logprobs)
            pt = lt.exp()
            # p_t·(l_t − z + lse); a −inf teacher log-prob (p_t = 0) is clamped so 0·x = 0.
            lt.clamp_(min=torch.finfo(lt.dtype).min).sub_(z).add_(lse.unsqueeze(-1)).mul_(pt)
            total += lt.sum()
            lses.append(lse)
        # The teacher's tensors may be inference tensors (no autograd): keep them on ctx.
        ctx.save_for_backward(student)
        lse_all = torch.cat(lses) if lses else total.new_zeros(0)
        ctx.rest = (positions, teacher, teacher_rows, temperature, teacher_is_logprobs, chunk,
                    lse_all)
        return total * (temperature**2 / max(n, 1))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (student,) = ctx.saved_tensors
        positions, teacher, teacher_rows, temperature, is_logprobs, chunk, lse = ctx.rest
        n = positions.numel()
        grad = torch.zeros_like(student)
        scale = _up(grad_out) * (temperature / max(n, 1))
        for i in range(0, n, chunk):
            pos = positions[i:i + chunk]
            q = _scaled(student.index_select(0, pos), temperature)
            q.sub_(lse[i:i + chunk].unsqueeze(-1)).exp_()  # student probs
            pt = _teacher_logp(teacher.index_select(0, teacher_rows[i:i + chunk]),
                               temperature, is_logprobs).exp_()
            grad.index_copy_(0, pos, q.sub_(pt).mul_(scale).to(grad.dtype))
        return grad, None, None, None, None, None, None


class _ChunkedTopkKL(torch.autograd.Function):
    """Mean T²·KL between (k+1)-bucket coarse-grainings; see the module docstring."""

    @staticmethod
    def forward(ctx: Any, student: Tensor, positions: Tensor, topk_idx: Tensor,
                topk_logp: Tensor, rest_logp: Tensor, temperature: float, chunk: int) -> Tensor:
        n = positions.numel()
        total = torch.zeros((), dtype=_up(student[:0]).dtype, device=student.device)
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            lq = F.log_softmax(_scaled(student.index_select(0, positions[sl]), temperature), dim=-1)
            total += _topk_rows(lq, topk_idx[sl], _up(topk_logp[sl]),
                                _up(rest_logp[sl]))[0].sum()
        ctx.save_for_backward(student)
        ctx.rest = (positions, topk_idx, topk_logp, rest_logp, temperature, chunk)
        return total * (temperature**2 / max(n, 1))

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (student,) = ctx.saved_tensors
        positions, topk_idx, topk_logp, rest_logp, temperature, chunk = ctx.rest
        n = positions.numel()
        grad = torch.zeros_like(student)
        scale = _up(grad_out) * (temperature / max(n, 1))
        for i in range(0, n, chunk):
            sl = slice(i, i + chunk)
            pos = positions[sl]
            lq = F.log_softmax(_scaled(student.index_select(0, pos), temperature), dim=-1)
            idx, lp, lr = topk_idx[sl], _up(topk_logp[sl]), _up(rest_logp[sl])
            _, l_off = _topk_rows(lq, idx, lp, lr)
            target = _topk_target(lq, idx, lp, lr, l_off)
            grad.index_copy_(0, pos, lq.exp_().sub_(target).mul_(scale).to(grad.dtype))
        return grad, None, None, None, None, None, None


def _topk_target(lq: Tensor, idx: Tensor, lp: Tensor, lr: Tensor, l_off: Tensor) -> Tensor:
    """p̃: the teacher's top-k probabilities, and its rest mass spread in the student's
    own shape off the top k (the bucket KL's gradient is q − p̃)."""
    target = (lq + (lr - l_off).unsqueeze(-1)).exp()
    target = torch.where(torch.isfinite(lr).unsqueeze(-1), target, 0.0)
    return target.scatter_(1, idx.long(), lp.exp())


def _rows_full(z: Tensor, lt: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Σ_rows T²·KL(p_t ‖ softmax(z/T)) and its gradient T·(q − p_t) w.r.t. z (n, V).

    lt: the teacher's tempered log-probs, a fresh tensor; both it and z are overwritten.
    """
    ls = F.log_softmax(_scaled(z, temperature), dim=-1)  # log q (one fused kernel)
    pt = lt.exp()
    # A −inf teacher log-prob (p_t = 0) is clamped so that 0·x = 0.
    kl = lt.clamp_(min=torch.finfo(lt.dtype).min).sub_(ls).mul_(pt).sum()
    grad = ls.exp_().sub_(pt)
    return kl * temperature**2, grad if temperature == 1.0 else grad.mul_(temperature)


def _rows_topk(z: Tensor, idx: Tensor, lp: Tensor, lr: Tensor,
               temperature: float) -> tuple[Tensor, Tensor]:
    """Σ_rows T²·(bucket KL) and its gradient T·(q − p̃) w.r.t. z (n, V)."""
    lq = F.log_softmax(_scaled(z, temperature), dim=-1)
    lp, lr = _up(lp), _up(lr)
    kl, l_off = _topk_rows(lq, idx, lp, lr)
    target = _topk_target(lq, idx, lp, lr, l_off)
    return kl.sum() * temperature**2, lq.exp_().sub_(target).mul_(temperature)


def _topk_rows(lq: Tensor, idx: Tensor, lp: Tensor, lr: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row bucket KL and log of the student's mass off the top k."""
    idx = idx.long()
    l_on = lq.gather(1, idx)  # (n, k)
    l_off = torch.logsumexp(lq.scatter(1, idx, float("-inf")), dim=-1)  # (n,)
    kl_on = _xlogy_diff(lp, l_on).sum(-1)
    kl_rest = torch.where(torch.isfinite(lr), lr.exp() * (lr - l_off), 0.0)
    return kl_on + kl_rest, l_off


def forward_kl(student_logits: Tensor, teacher: Tensor, mask: Tensor, *,
               temperature: float = 1.0, packed: bool = False,
               teacher_is_logprobs: bool = False, chunk: int | None = None) -> Tensor:
    """Mean over counted positions of T²·KL(p_teacher ‖ p_student).

    student_logits (B, T, V); mask (B, T) bool, counted positions (`next_token_mask`).
    teacher: logits (B, T, V) aligned with the student, or, with `packed`, one row per
    counted position (N, V) in row-major order of `mask` (as the cache stores them).
    `chunk`: rows per chunk (default `chunk_rows`).
    """
    v = student_logits.size(-1)
    chunk = chunk or chunk_rows(v, student_logits.device, 4096)
    student = student_logits.reshape(-1, v)
    positions = mask.reshape(-1).nonzero().squeeze(1)
    if packed:
        if teacher.size(0) != positions.numel():
            raise ValueError(f"{teacher.size(0)} teacher rows for {positions.numel()} positions")
        rows = torch.arange(positions.numel(), device=positions.device)
        teacher_flat = teacher
    else:
        rows, teacher_flat = positions, teacher.reshape(-1, v)
    return _ChunkedForwardKL.apply(student, positions, teacher_flat, rows, temperature,
                                   teacher_is_logprobs, chunk)


def topk_kl(student_logits: Tensor, topk_idx: Tensor, topk_logp: Tensor, rest_logp: Tensor,
            mask: Tensor, *, temperature: float = 1.0, chunk: int | None = None) -> Tensor:
    """Mean bucket KL from packed top-k teacher rows: idx/logp (N, k), rest_logp (N,)."""
    student = student_logits.reshape(-1, student_logits.size(-1))
    chunk = chunk or chunk_rows(student.size(1), student.device, 4096)
    positions = mask.reshape(-1).nonzero().squeeze(1)
    if topk_idx.size(0) != positions.numel():
        raise ValueError(f"{topk_idx.size(0)} teacher rows for {positions.numel()} positions")
    return _ChunkedTopkKL.apply(student, positions, topk_idx, topk_logp, rest_logp,
                                temperature, chunk)


# --------------------------------------------------------------------- model calls


def forward_logits(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits (B, T, V) that are exact at every real position.

    Right padding: with causal attention a real token never attends to the padding after
    it, so the attention mask is dropped and the fast `is_causal` attention path is used.
    `use_cache=False`: no key/value cache is built during training.
    """
    am = None if is_right_padded(attention_mask) else attention_mask
    return model(input_ids=input_ids, attention_mask=am, use_cache=False).logits


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


@LOSSES.register("distill_kl")
class DistillKL:
    """L = forward KL(teacher ‖ student) on every non-pad next-token position.

    With `teacher`, runs it online (frozen, held once, under inference mode) and counts
    its forward FLOPs via `extra_forward_params`. Without, each batch must carry cached
    targets: `teacher_logprobs` (N, V), or `teacher_topk_idx`, `teacher_topk_logp` (N, k)
    and `teacher_rest_logp` (N,) (see `undo.stages.teacher_cache.CachedBatches`).

    `logits`: "full" takes the models' (B, T, V) logits from their HF forward; "chunked"
    computes the same loss from their last hidden states, applying the output head to
    `chunk_positions` (at most; see `head_chunk_rows`) positions at a time.
    """

    def __init__(self, teacher: torch.nn.Module | None = None, temperature: float = 1.0,
                 chunk_positions: int = 4096,
                 logits: Literal["full", "chunked"] = "full") -> None:
        if logits not in ("full", "chunked"):
            raise ConfigError(f"config key 'distill.logits': got {logits!r}; valid: "
                              "'full' or 'chunked'")
        self.teacher = freeze(teacher) if teacher is not None else None
        self.temperature = temperature
        self.chunk = chunk_positions
        self.logits = logits
        self.extra_forward_params = matmul_params(teacher) if teacher is not None else 0
        self._checked: set[int] = set()  # models whose head check passed (`check_head`)

    def _teacher_ready(self, input_ids: Tensor) -> torch.nn.Module:
        if self.teacher is None:
            raise ValueError("distill_kl: no teacher and no cached teacher outputs in the batch")
        dev = next(self.teacher.parameters()).device
        if dev != input_ids.device:  # moved once, lazily, to wherever the batches live
            self.teacher.to(input_ids.device)
        return self.teacher

    def teacher_logits(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        teacher = self._teacher_ready(input_ids)
        with torch.inference_mode():
            return forward_logits(teacher, input_ids, attention_mask)

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[Tensor, dict[str, float]]:
        ids, am = batch["input_ids"], batch["attention_mask"]
        mask = next_token_mask(am)
        if self.logits == "chunked":
            return self._chunked_loss(model, batch, mask), {}
        logits = forward_logits(model, ids, am)  # (B, T, V)
        t, c = self.temperature, chunk_rows(logits.size(-1), logits.device, self.chunk)
        if "teacher_logprobs" in batch:
            loss = forward_kl(logits, batch["teacher_logprobs"], mask, temperature=t,
                              packed=True, teacher_is_logprobs=True, chunk=c)
        elif "teacher_topk_idx" in batch:
            loss = topk_kl(logits, batch["teacher_topk_idx"], batch["teacher_topk_logp"],
                           batch["teacher_rest_logp"], mask, temperature=t, chunk=c)
        else:
            loss = forward_kl(logits, self.teacher_logits(ids, am), mask, temperature=t,
                              chunk=c)
        return loss, {}

    def _check_once(self, model: torch.nn.Module, hidden: Any, ids: Tensor) -> None:
        if id(unwrap(model)) not in self._checked:
            check_head(model, hidden, ids)
            self._checked.add(id(unwrap(model)))

    def _chunked_loss(self, model: torch.nn.Module, batch: dict, mask: Tensor) -> Tensor:
        ids, am = batch["input_ids"], batch["attention_mask"]
        am_or_none = None if is_right_padded(am) else am  # as in `forward_logits`
        self._check_once(model, student_hidden, ids)
        positions = mask.reshape(-1).nonzero().squeeze(1)
        h = student_hidden(model, ids, am_or_none)
        hs = h.reshape(-1, h.size(-1)).index_select(0, positions)
        head, t = head_of(model), self.temperature
        if "teacher_logprobs" in batch:
            lt = _packed_rows(batch["teacher_logprobs"], positions)

            def rows(z: Tensor, sl: slice) -> tuple[Tensor, Tensor]:
                return _rows_full(z, _teacher_logp(lt[sl], t, True), t)
        elif "teacher_topk_idx" in batch:
            idx = _packed_rows(batch["teacher_topk_idx"], positions)
            lp, lr = batch["teacher_topk_logp"], batch["teacher_rest_logp"]

            def rows(z: Tensor, sl: slice) -> tuple[Tensor, Tensor]:
                return _rows_topk(z, idx[sl], lp[sl], lr[sl], t)
        else:
            teacher = self._teacher_ready(ids)
            self._check_once(teacher, teacher_hidden, ids)
            with torch.inference_mode():
                th = teacher_hidden(teacher, ids, am_or_none)
                th = th.reshape(-1, th.size(-1)).index_select(0, positions)
            t_head = head_of(teacher)

            def rows(z: Tensor, sl: slice) -> tuple[Tensor, Tensor]:
                return _rows_full(z, _teacher_logp(t_head.logits(th[sl])[0], t, False), t)
        v = head.weight.size(0)
        chunk = head_chunk_rows(v, hs.device, self.chunk)
        return hidden_kl(hs, head, rows, chunk, chunk_rows(v, hs.device, chunk))


def _packed_rows(rows: Tensor, positions: Tensor) -> Tensor:
    if rows.size(0) != positions.numel():
        raise ValueError(f"{rows.size(0)} teacher rows for {positions.numel()} positions")
    return rows
