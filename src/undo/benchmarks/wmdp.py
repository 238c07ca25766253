"""Text corpora scored by lm-evaluation-harness: the paper's WMDP setting, or any other.

The data side is the text benchmark's (`undo.benchmarks.text.benchmark`): forget and retain
corpora (for WMDP the `cais/wmdp-corpora` forget and retain corpora), an unlabeled
distillation mix, an attack on the forget corpus's attack split, optionally mixed with
retain data (`attack.retain_fraction`). What differs is how models are judged: the
`forget` and `retain` evaluation sets are lm-eval multiple-choice tasks (`undo.benchmarks.lmeval`),
by default WMDP-bio and WMDP-cyber (forget: accuracy, higher = more capable, chance 0.25)
and MMLU 5-shot (retain). Further named sets (default `forget_final`, `retain_final`:
all of WMDP, 40% of MMLU) are scored at the end of every stage but not inside training
or attack curves; the corpora's held-out CE stays available as `forget_ce`, `retain_ce`.

Attack curves and budgets use `forget` and `retain`: the paper scores them on 1000 WMDP
questions per task and 7% of MMLU, and final models on all of WMDP and 40% of MMLU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from ..configlib import check
from .base import EvalSet, MetricSpec
from .lmeval import LmEvalConfig, LmEvalSet, LmEvalTask, common_chance
from .text import benchmark as text

if TYPE_CHECKING:
    from ..config import AttackConfig

CE_SUFFIX = "_ce"


def paper_sets() -> dict[str, list[LmEvalTask]]:
    """The paper's evaluation (Lee et al. 2025, WMDP setting): curves on 1000 questions of
    each WMDP task and 7% of MMLU, final models on all of WMDP and 40% of MMLU, 5-shot."""
    return {
        "forget": [LmEvalTask("wmdp_bio", limit=1000), LmEvalTask("wmdp_cyber", limit=1000)],
        "retain": [LmEvalTask("mmlu", num_fewshot=5, limit=0.07)],
        "forget_final": [LmEvalTask("wmdp_bio"), LmEvalTask("wmdp_cyber")],
        "retain_final": [LmEvalTask("mmlu", num_fewshot=5, limit=0.4)],
    }


@dataclass
class Config(text.Config):
    """`data:` of the wmdp benchmark: the text benchmark's corpora plus lm-eval sets."""

    benchmark: Literal["wmdp"] = "wmdp"  # type: ignore[assignment]
    tokenizer: str = "model"  # a pretrained model's own (lm-eval prompts are plain text)
    lm_eval: LmEvalConfig = field(default_factory=lambda: LmEvalConfig(sets=paper_sets()))
    # Window lengths of their own (null: seq_len): the unlearning data (the forget and
    # retain corpora's train split) and the attack data (their attack split). The authors
    # unlearn and relearn on 256-token sequences and distil on 1024
    # (run_unlearn_wmdp.py, run_relearn_wmdp.py, run_partial_distill_wmdp.py).
    unlearn_seq_len: int | None = None
    attack_seq_len: int | None = None

    def validate(self, p: str) -> None:
        super().validate(p)
        for k in ("unlearn_seq_len", "attack_seq_len"):
            v = getattr(self, k)
            check(v is None or v > 1, f"{p}.{k}", v, "null (data.seq_len) or an integer > 1")
        sets = self.lm_eval.sets
        check("forget" in sets and "retain" in sets, f"{p}.lm_eval.sets", sorted(sets),
               "a mapping with at least the sets 'forget' and 'retain' (lists of tasks)")
        for name in sets:
            check(not name.endswith(CE_SUFFIX) and "/" not in name, f"{p}.lm_eval.sets",
                   name, f"set names without '/' that do not end in '{CE_SUFFIX}' (the "
                   f"corpora's CE sets are named so)")


class Benchmark(text.Benchmark):
    """Forget and retain corpora; judged by lm-eval accuracies (and corpus CE)."""

    name = "wmdp"
    stop_rule = "retain_acc"
    # The paper's WMDP distillation has no stop rule (our configs: distill.stop=budget);
    # a rule asked for reads the lm-eval sets themselves (no validation split).
    stop_sets = ("retain", "forget")

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        sets = cfg.lm_eval.sets
        self.forget_metric = MetricSpec(
            "forget/acc", f"forget accuracy ({', '.join(t.task for t in sets['forget'])})",
            True, common_chance(sets["forget"]))
        self.retain_metric = MetricSpec(
            "retain/acc", f"retain accuracy ({', '.join(t.task for t in sets['retain'])})",
            True, common_chance(sets["retain"]))
        extra = [n for n in sets if n not in ("forget", "retain")]
        self.eval_names = ("retain", "forget", *extra, "retain" + CE_SUFFIX,
                           "forget" + CE_SUFFIX)
        self._sets: dict[tuple[str, int], LmEvalSet] = {}

    def window(self, role: str, split: str) -> int:
        """Tokens per window of a corpus split: `attack_seq_len` for the attack split,
        `unlearn_seq_len` for the forget and retain corpora's train split, else seq_len."""
        c = self.cfg
        if split == "attack" and c.attack_seq_len:
            return c.attack_seq_len
        if split == "train" and role in ("forget", "retain") and c.unlearn_seq_len:
            return c.unlearn_seq_len
        return c.seq_len

    def _pack(self, role: str, split: str, tokenizer: PreTrainedTokenizerBase
              ) -> list[tuple[torch.Tensor, int]]:
        length = self.window(role, split)
        key = (id(tokenizer), role, f"{split}@{length}")
        if key not in self._packed:
            if all(t is not tokenizer for t in self._seen):
                self._seen.append(tokenizer)
            self._packed[key] = [text.pack(per[split], tokenizer, length)
                                 for per in self.corpora[role].docs]
        return self._packed[key]

    def eval_set(self, name: str, tokenizer: PreTrainedTokenizerBase) -> EvalSet:
        if name.endswith(CE_SUFFIX):
            return super().eval_set(name[: -len(CE_SUFFIX)], tokenizer)
        key = (name, id(tokenizer))
        if key not in self._sets:
            if all(t is not tokenizer for t in self._seen):  # keep its id unique (text.py)
                self._seen.append(tokenizer)
            self._sets[key] = LmEvalSet(name, self.cfg.lm_eval.sets[name], self.cfg.lm_eval,
                                        tokenizer)
        return self._sets[key]

    def paper_retain_fraction(self) -> float:
        """0.5: run_relearn_wmdp.py interleaves forget and retain corpora 50/50."""
        return 0.5

    def provenance(self, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Per lm-eval set: tasks, versions, shots, limits, seeds, the lm-eval version."""
        return {n: self.eval_set(n, tokenizer).provenance()  # type: ignore[attr-defined]
                for n in self.cfg.lm_eval.sets}

    def check_attack(self, attack: AttackConfig, data: Sequence[Any], steps: int,
                     tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        info = super().check_attack(attack, data, steps, tokenizer)
        return {**info, "lm_eval": self.provenance(tokenizer)}

    def describe(self, role: str | None = None) -> dict[str, Any]:
        out = super().describe()
        out["benchmark"] = self.name
        out["lm_eval_sets"] = {n: [vars(t) for t in ts]
                               for n, ts in self.cfg.lm_eval.sets.items()}
        # Versions and sizes of the sets this process has scored (a stage describes its
        # data after evaluating its model).
        out["lm_eval"] = {n: es.provenance() for (n, _), es in self._sets.items()}
        return out
