"""Scoring fixed held-out windows of text: per-window next-token hits and CE, and the
evaluation set the text benchmark reports (`ce`, `acc`, per source)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from ..base import Metrics, Scores


@torch.no_grad()
def score_windows(model: PreTrainedModel, windows: torch.Tensor, max_positions: int = 4096
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per window: top-1 next-token hits, summed CE (nats) and predicted-token count."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    step = max(1, max_positions // windows.shape[1])
    hits, ce_sum = [], []
    for i in range(0, len(windows), step):
        ids = windows[i : i + step].long().to(device)  # (B, T)
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
        target = ids[:, 1:]  # (B, T-1): position t predicts token t+1
        ce = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
        hits.append((logits.argmax(-1) == target).sum(1).cpu())
        ce_sum.append(ce.sum(1).cpu())
    model.train(was_training)
    n = len(windows)
    return (torch.cat(hits) if n else torch.zeros(0, dtype=torch.long),
            torch.cat(ce_sum) if n else torch.zeros(0),
            torch.full((n,), windows.shape[1] - 1, dtype=torch.long))


class WindowEvalSet:
    """Fixed held-out windows; `ce` = nats per token, `acc` = top-1 next-token accuracy.

    `sources[i]` is the short name of window i's source: with several sources, `metrics`
    also gives `ce/<source>` and `acc/<source>` per source.
    """

    def __init__(self, name: str, windows: torch.Tensor, sources: list[str]) -> None:
        self.name, self.windows, self.sources = name, windows, sources

    def __len__(self) -> int:
        return len(self.windows)

    def score(self, model: PreTrainedModel, idx: Sequence[int] | None = None) -> Scores:
        index = (torch.arange(len(self.windows)) if idx is None
                 else torch.as_tensor(list(idx), dtype=torch.long))
        hits, ce_sum, n_tok = score_windows(model, self.windows[index])
        return {"hits": hits, "ce_sum": ce_sum, "n_tok": n_tok, "index": index}

    def metrics(self, scores: Scores, groups: bool = True) -> Metrics:
        def summary(jj: torch.Tensor | slice) -> Metrics:
            n = scores["n_tok"][jj].sum().clamp(min=1)
            return {"ce": (scores["ce_sum"][jj].sum() / n).item(),
                    "acc": (scores["hits"][jj].sum() / n).item()}

        out = summary(slice(None))
        names = [self.sources[i] for i in scores["index"].tolist()]
        if groups and len(set(self.sources)) > 1:
            for source in sorted(set(names)):
                jj = torch.tensor([j for j, x in enumerate(names) if x == source])
                out.update({f"{k}/{source}": v for k, v in summary(jj).items()})
        return out

    def subset(self, per_group: int) -> list[int]:
        """The first `per_group` windows; 0 keeps all."""
        n = len(self.windows)
        return list(range(n if per_group <= 0 else min(per_group, n)))
