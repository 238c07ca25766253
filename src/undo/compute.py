"""Token and FLOP accounting.

Convention (Kaplan et al. 2020): a forward pass costs 2·N FLOPs per token and a training
step (forward + backward) 6·N, where N counts the parameters that take part in matrix
multiplies: every weight except the embedding lookups (token and learned position
tables), plus the output head (which with tied embeddings is the embedding matrix used
once as a matmul). The attention-score
term (∝ sequence length) is left out; at our sequence lengths it is < 5% of the total.
FLOPs count every position processed, padding included (it is computed); `tokens`
counts non-padding tokens.
"""

from __future__ import annotations

import torch

from .architectures import embedding_modules, head_is_tied, output_head


def matmul_params(model: torch.nn.Module) -> int:
    """N in the 2N / 6N rule: all parameters minus the embedding lookups (token and, where
    learned, position tables; found by `undo.architectures`), plus a tied output head."""
    total = sum(p.numel() for p in model.parameters())
    lookups = sum(m.weight.numel() for m in embedding_modules(model))
    # Tied: the head's weight is the token embedding's (counted once in `total`, removed
    # with the lookups), so add it back as the output matmul. Untied: already in `total`.
    head = output_head(model).weight.numel() if head_is_tied(model) else 0
    return total - lookups + head


def forward_flops(n_params: int, positions: int) -> float:
    return 2.0 * n_params * positions


def train_flops(n_params: int, positions: int) -> float:
    return 6.0 * n_params * positions


def count_tokens(batch: object) -> tuple[int, int]:
    """(non-padding tokens, positions) in a batch, possibly nested ({'forget': {...}})."""
    if isinstance(batch, dict):
        if "input_ids" in batch:
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            real = int(mask.sum()) if mask is not None else ids.numel()
            return real, ids.numel()
        tok = pos = 0
        for v in batch.values():
            t, p = count_tokens(v)
            tok, pos = tok + t, pos + p
        return tok, pos
    return 0, 0
