"""Metrics of a model on a benchmark's evaluation sets (the benchmark defines them)."""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .base import Benchmark, Metrics


def evaluate(model: PreTrainedModel, bench: Benchmark, tokenizer: PreTrainedTokenizerBase,
             sets: Sequence[str] | None = None) -> Metrics:
    """Flat metrics such as `retain/acc`, `forget/ce`, `forget/acc/mul/word`."""
    out: Metrics = {}
    for name in sets if sets is not None else bench.eval_names:
        es = bench.eval_set(name, tokenizer)
        out.update({f"{name}/{k}": v for k, v in es.metrics(es.score(model)).items()})
    return out
