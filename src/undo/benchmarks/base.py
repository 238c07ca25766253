"""The Benchmark protocol: everything a stage may ask of a benchmark.

A stage never knows which benchmark it runs. It asks the benchmark (selected by
`data.benchmark`, built from the `data:` section) for:

- its tokenizer policy: `own_tokenizer()` returns a tokenizer the benchmark builds
  (arithmetic's characters, a locally trained BPE), or None: use the model's;
- deterministic data streams by role, `batches(role, tokenizer, batch_size, seed, rank)`,
  each a callable `(step, micro) -> batch`; roles: `base` (retain + forget pretraining),
  `gold` (retain only), `unlearn` (nested `{"forget": ..., "retain": ...}`), `distill`
  (the unlabeled mix);
- the attack's data, `attack_batches(attack_cfg, tokenizer, seed)`, and the honesty
  checks on it (`check_attack`: forget-domain data present; attack data disjoint from
  everything evaluated);
- the attack knobs an adaptive attacker may search (`attack_knobs()`, undo.attacks.search):
  `{attack field: {"type": "float" | "int", "low", "high", "default"}}` or
  `{field: {"type": "categorical", "choices", "default"}}`, `default` being what the
  grid uses; the field is set on the AttackConfig of each trial;
- evaluation sets by name (`eval_set(name, tokenizer)`) and `evaluate(model, ...)`;
- which metric is *the* forget metric and *the* retain metric, each with its direction
  and chance level, and the distillation stop rule that fits the retain metric.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

Batch = dict[str, Any]
Metrics = dict[str, float]
Scores = dict[str, torch.Tensor]  # per evaluation unit (item, window): one entry each
Role = Literal["base", "gold", "unlearn", "distill"]
ROLES: tuple[str, ...] = ("base", "gold", "unlearn", "distill")
BatchFn = Callable[[int, int], Batch]


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a benchmark: its key in the flat metrics dict and how to read it.

    `higher_is_better` is about the *capability*: accuracy rises as a model knows more,
    cross-entropy falls. For the forget metric that makes a higher accuracy (or a lower
    CE) worse for the defender. `chance` is what a model that knows nothing scores
    (None where it has no meaning, e.g. CE of an open vocabulary).
    """

    name: str  # e.g. "forget/acc", "retain/ce"
    label: str  # for plots and tables: "forget accuracy", "forget CE (nats/token)"
    higher_is_better: bool
    chance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label,
                "higher_is_better": self.higher_is_better, "chance": self.chance}

    def better(self, a: float, b: float) -> bool:
        """a shows more capability than b."""
        return a > b if self.higher_is_better else a < b


class UnlearnBatches:
    """`{"forget": ..., "retain": ..., "noise_seed": int}`: independent streams of the
    base model's training items; `noise_seed` seeds stochastic objectives (RepNoise)."""

    def __init__(self, forget: BatchFn, retain: BatchFn, rank: int) -> None:
        self.forget, self.retain, self.rank = forget, retain, rank

    def __call__(self, step: int, micro: int = 0) -> Batch:
        return {"forget": self.forget(step, micro), "retain": self.retain(step, micro),
                "noise_seed": (step * 1009 + micro) * 101 + self.rank}


class EvalSet(Protocol):
    """A fixed, held-out evaluation set: score once, summarise any subset."""

    name: str

    def __len__(self) -> int: ...

    def score(self, model: PreTrainedModel, idx: Sequence[int] | None = None) -> Scores:
        """Per-unit scores of the units `idx` (all when None), in that order."""

    def metrics(self, scores: Scores, groups: bool = True) -> Metrics:
        """Metrics without prefix (`acc`, `ce`, and per-group ones when `groups`)."""

    def subset(self, per_group: int) -> list[int]:
        """Indices of a fixed small subset (attack curves); 0 keeps all."""


class AttackData(Protocol):
    """The attack's batches: `(step, micro) -> batch`, plus what they hold, for checks."""

    def __call__(self, step: int, micro: int = 0) -> Batch: ...


class Benchmark(Protocol):
    name: str
    forget_metric: MetricSpec
    retain_metric: MetricSpec
    stop_rule: str  # the distillation stop rule that reads the retain metric
    # The (retain, forget) evaluation sets the stop rule reads: validation sets disjoint
    # from "retain" and "forget", which the report quotes and the attacks score.
    stop_sets: tuple[str, str]
    eval_names: tuple[str, ...]  # every evaluation set, first "retain" and "forget"

    def own_tokenizer(self) -> PreTrainedTokenizerBase | None: ...

    def batches(self, role: str, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                seed: int, rank: int = 0) -> BatchFn: ...

    def attack_batches(self, attack: Any, tokenizer: PreTrainedTokenizerBase,
                       seed: str) -> AttackData: ...

    def attack_knobs(self) -> dict[str, dict[str, Any]]:
        """AttackConfig fields the attack search may vary, as parameter specs."""

    def paper_retain_fraction(self) -> float:
        """The share of retain data in the paper's attack on this benchmark (what
        `attack.retain_fraction: null` means)."""

    def check_attack(self, attack: Any, data: Sequence[AttackData], steps: int,
                     tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Refuse attack data without forget-domain data or overlapping evaluation data;
        return a description of the data for relearn.json."""

    def eval_set(self, name: str, tokenizer: PreTrainedTokenizerBase) -> EvalSet: ...

    def describe(self, role: str | None = None) -> dict[str, Any]:
        """What the benchmark is, for summaries (name, sizes, sources), and with `role`,
        what that data role trains on."""


def retain_share(bench: Any, attack: Any) -> float:
    """The share of retain data in an attack's batches: `attack.retain_fraction`, or the
    benchmark's paper attack (`paper_retain_fraction`) where it is null."""
    share = attack.retain_fraction
    return bench.paper_retain_fraction() if share is None else float(share)


def take(scores: Scores, idx: Sequence[int]) -> Scores:
    """The scores of the units `idx` (positions into `scores`)."""
    ii = torch.as_tensor(list(idx), dtype=torch.long)
    return {k: v[ii] for k, v in scores.items()}
