"""The embedded arithmetic benchmark as a `Benchmark` (data generation: `undo.benchmarks.arithmetic.data`).

Metrics: exact-match accuracy (greedy decoding of the answer) and answer cross-entropy
on four sets: `retain`, `forget` (items the base model was trained on that no attack
ever shows) and their held-out-generalisation twins. The forget and retain metrics are
the accuracies; chance is ~0 (a 3-digit answer among 1,000).

Exact match is computed in one teacher-forced forward pass: greedy decoding reproduces
the answer exactly iff, at every answer position, the argmax given the *correct* prefix
is the correct token. So `argmax == target` at all answer positions (and EOS) is the
same number greedy decoding gives, at the cost of a single forward.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ...configlib import KEYED_IF_SET, ConfigError, check
from ...tokenizers import build_char_tokenizer
from ..base import Batch, BatchFn, Metrics, MetricSpec, Scores, UnlearnBatches, retain_share
from ..text.benchmark import Source
from .data import ArithmeticData, Item, ItemStream, encode, fact_key
from .mix import English, PackedBatches, encode_items

if TYPE_CHECKING:
    from ...config import AttackConfig

CHANCE_ACC = 1e-3  # a 3-digit answer guessed uniformly


@dataclass
class Config:
    """`data:` of the embedded arithmetic benchmark (generated in code, seeded)."""

    # Positions per sequence, for plans made before any data exists (`undo run --dry-run`):
    # the smoke study's distillation processed 2,616 positions in 160 padded sequences.
    typical_positions: ClassVar[int] = 17

    benchmark: Literal["arithmetic"] = "arithmetic"
    # How items are split into held-out / attack / evaluation: by fact (a*b, b*a, ab/a
    # and ab/b together; likewise + and -). In the config, and so in every cache key,
    # so that models trained on an earlier split scheme are never reused.
    split: Literal["facts"] = "facts"
    # Operations: add, sub, mul, div (names, not symbols: `*` is special in YAML).
    retain_ops: list[str] = field(default_factory=lambda: ["add", "sub"])
    forget_ops: list[str] = field(default_factory=lambda: ["mul", "div"])
    # Relative sampling weight of each operation in pretraining batches (harder ops more).
    # Measured on the 2-layer tiny model, seed 0, 2500 steps: add/sub at 1.0 left retain
    # word problems behind (retain 0.938: add 0.86, sub 0.89 on words); 1.5 gives retain
    # 0.993 and forget 0.985.
    op_weights: dict[str, float] = field(
        default_factory=lambda: {"add": 1.5, "sub": 1.5, "mul": 2.0, "div": 2.0}
    )
    word_problem_fraction: float = 0.25  # share of batches made of word problems
    # Word problems are ~4x longer than equations: their batches hold this fraction of
    # batch_size items, so every step costs about the same.
    word_batch_scale: float = 0.75
    heldout_fraction: float = 0.1  # operand pairs never trained on (generalisation set)
    attack_fraction: float = 0.35  # share of trained forget pairs reserved for attacks
    eval_items_per_op: int = 100  # evaluation items per operation and format
    seed: int = 0  # the split and templates depend only on this seed
    # The authors' composition (undo.benchmarks.arithmetic.mix; configs/arithmetic/
    # paper.yaml). Tokens per training row, items packed one after another; 0: one item
    # per row, padded (this benchmark's own format). Batch sizes then count rows.
    seq_len: int = field(default=0, metadata=KEYED_IF_SET)
    # English text sources (the text benchmark's `Source`: path, dataset or shipped),
    # mixed in at `english_share` of the rows of the base model, distillation and the
    # paper's attack; the gold standard gets 1 - (1 - share) x (retain share of the
    # arithmetic). Needs seq_len > 0. []: arithmetic only.
    english: list[Source] = field(default_factory=list, metadata=KEYED_IF_SET)
    # the authors' 0.75 / 0.25 (run_pretrain_arithmetic.py)
    english_share: float = field(default=0.75, metadata=KEYED_IF_SET)
    # Which training tokens carry the loss: `answer` (answers and EOS) or `all` (every
    # token, prompt included: the authors' loss). Evaluation is always on the answers.
    loss_positions: Literal["answer", "all"] = field(default="answer", metadata=KEYED_IF_SET)

    def validate(self, p: str) -> None:
        ops = {"add", "sub", "mul", "div"}
        for k in ("retain_ops", "forget_ops"):
            for op in getattr(self, k):
                check(op in ops, f"{p}.{k}", op, "operations from add, sub, mul, div")
        overlap = set(self.retain_ops) & set(self.forget_ops)
        check(not overlap, f"{p}.forget_ops", self.forget_ops,
               "operations disjoint from retain_ops")
        check(bool(self.retain_ops), f"{p}.retain_ops", self.retain_ops, "at least one op")
        check(bool(self.forget_ops), f"{p}.forget_ops", self.forget_ops, "at least one op")
        for op, w in self.op_weights.items():
            check(op in ops and w >= 0, f"{p}.op_weights", {op: w},
                   "non-negative weights keyed by add, sub, mul, div")
        check(0 <= self.word_problem_fraction <= 1, f"{p}.word_problem_fraction",
               self.word_problem_fraction, "a number in [0, 1]")
        check(0 < self.word_batch_scale <= 1, f"{p}.word_batch_scale",
               self.word_batch_scale, "a number in (0, 1]")
        check(0 < self.heldout_fraction < 0.5, f"{p}.heldout_fraction",
               self.heldout_fraction, "a number in (0, 0.5)")
        check(0 < self.attack_fraction < 0.9, f"{p}.attack_fraction",
               self.attack_fraction, "a number in (0, 0.9)")
        check(self.eval_items_per_op > 0, f"{p}.eval_items_per_op", self.eval_items_per_op,
               "a positive integer")
        check(self.seq_len == 0 or self.seq_len >= 32, f"{p}.seq_len", self.seq_len,
               "0 (one item per row) or an integer >= 32 (tokens per packed row)")
        check(not self.english or self.seq_len > 0, f"{p}.seq_len", self.seq_len,
               "an integer >= 32 when data.english is set (English rows are packed)")
        check(0 <= self.english_share < 1, f"{p}.english_share", self.english_share,
               "a number in [0, 1)")
        for i, src in enumerate(self.english):
            src.validate(f"{p}.english[{i}]")


    def check_run(self, run: Any) -> None:
        """Settings of other sections that must fit this benchmark."""
        ops = {"add", "sub", "mul", "div"}
        a = run.attack
        check(a.ops is None or (bool(a.ops) and set(a.ops) <= ops), "attack.ops",
               a.ops, "null or a non-empty list of add, sub, mul, div")




class ItemBatches:
    """Batch `step` of an item stream, encoded; deterministic in (tag, seed, rank, step,
    micro), so a resumed run sees exactly the data an uninterrupted one would."""

    def __init__(self, stream: ItemStream, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, seed: int, rank: int = 0, tag: str = "",
                 loss_positions: str = "answer") -> None:
        self.stream, self.tokenizer = stream, tokenizer
        self.batch_size, self.seed, self.rank, self.tag = batch_size, seed, rank, tag
        self.loss_positions = loss_positions

    def __call__(self, step: int, micro: int = 0) -> Batch:
        rng = random.Random(f"{self.tag}{self.seed}-{self.rank}-{step}-{micro}")
        return encode_items(self.stream.sample(rng, self.batch_size), self.tokenizer,
                            self.loss_positions)


class AttackBatches:
    """Batch `step` of an attack: `attack.ops` items, plus `retain_fraction` retain items.

    Deterministic in (seed, step, micro). A batch is all equations or all word problems
    (one draw for both parts), so padding stays small, as in pretraining.
    """

    def __init__(self, data: ArithmeticData, a: AttackConfig,
                 tokenizer: PreTrainedTokenizerBase, seed: str, retain: float) -> None:
        self.tokenizer, self.seed = tokenizer, seed
        self.loss_positions = data.cfg.loss_positions
        self.ops = list(a.ops or data.forget_ops)
        self.word_fraction = (data.cfg.word_problem_fraction if a.word_fraction is None
                              else a.word_fraction)
        self.n_retain = round(a.batch_size * retain)
        self.n_main = a.batch_size - self.n_retain
        self.parts = [((data.stream(ops, "attack", word_fraction=0.0),
                        data.stream(ops, "attack", word_fraction=1.0)), n)
                      for ops, n in ((self.ops, self.n_main), (data.retain_ops, self.n_retain))
                      if n > 0]

    def items(self, step: int, micro: int = 0) -> list[Item]:
        rng = random.Random(f"attack-{self.seed}-{step}-{micro}")
        words = rng.random() < self.word_fraction
        return [it for streams, n in self.parts for it in streams[words].sample(rng, n)]

    def __call__(self, step: int, micro: int = 0) -> Batch:
        return encode_items(self.items(step, micro), self.tokenizer, self.loss_positions)


# ------------------------------------------------------------------- evaluation


@torch.no_grad()
def score_items(model: PreTrainedModel, items: Sequence[Item],
                tokenizer: PreTrainedTokenizerBase, batch_size: int = 512
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per item: exact match (bool), summed answer CE (nats) and answer-token count.

    `use_cache=False`: a key/value cache would be built and never read (the same numbers,
    bit for bit, in less time: experiments/eval_speed.py)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct, ce_sum, n_tok = [], [], []
    for i in range(0, len(items), batch_size):
        batch = {k: v.to(device) for k, v in encode(items[i : i + batch_size], tokenizer).items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits[:, :-1]  # (B, T-1, V)
        target = batch["labels"][:, 1:]  # (B, T-1)
        mask = target != -100
        ce = F.cross_entropy(logits.float().transpose(1, 2), target.clamp(min=0),
                             reduction="none")  # (B, T-1)
        hit = (logits.argmax(-1) == target) | ~mask
        correct.append(hit.all(dim=1).cpu())
        ce_sum.append((ce * mask).sum(1).cpu())
        n_tok.append(mask.sum(1).cpu())
    model.train(was_training)
    return torch.cat(correct), torch.cat(ce_sum), torch.cat(n_tok)


def score_items_bucketed(model: PreTrainedModel, items: Sequence[Item],
                         tokenizer: PreTrainedTokenizerBase, max_positions: int = 2048
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`score_items`, with items sorted by length into batches of <= `max_positions` tokens.

    Same per-item results, in the original order. Why: one batch of equations (~12
    tokens) and word problems (~50) pads every equation to word length; sorting first
    roughly halves the cost of evaluating a mixed set.
    """
    if not items:
        empty = torch.zeros(0)
        return empty.bool(), empty, empty.long()
    lengths = [len(it.prompt()) + len(it.answer_text()) + 2 for it in items]
    order = sorted(range(len(items)), key=lambda i: lengths[i])
    chunks, cur, width = [], [], 0
    for i in order:
        w = max(width, lengths[i])
        if cur and w * (len(cur) + 1) > max_positions:
            chunks.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    chunks.append(cur)
    parts = [score_items(model, [items[i] for i in c], tokenizer, batch_size=len(c))
             for c in chunks]
    idx = torch.tensor([i for c in chunks for i in c])
    correct, ce_sum, n_tok = (torch.empty_like(torch.cat([p[j] for p in parts]))
                              for j in range(3))
    for j, out in enumerate((correct, ce_sum, n_tok)):
        out[idx] = torch.cat([p[j] for p in parts])
    return correct, ce_sum, n_tok


class ItemEvalSet:
    """A fixed list of items; `acc` = exact match, `ce` = nats per answer token."""

    def __init__(self, name: str, items: list[Item], tokenizer: PreTrainedTokenizerBase
                 ) -> None:
        self.name, self.items, self.tokenizer = name, items, tokenizer

    def __len__(self) -> int:
        return len(self.items)

    def score(self, model: PreTrainedModel, idx: Sequence[int] | None = None) -> Scores:
        items = self.items if idx is None else [self.items[i] for i in idx]
        correct, ce_sum, n_tok = score_items_bucketed(model, items, self.tokenizer)
        return {"correct": correct, "ce_sum": ce_sum, "n_tok": n_tok,
                "index": torch.arange(len(self.items)) if idx is None
                else torch.as_tensor(list(idx), dtype=torch.long)}

    def metrics(self, scores: Scores, groups: bool = True) -> Metrics:
        correct, ce_sum, n_tok = scores["correct"], scores["ce_sum"], scores["n_tok"]
        out = {"acc": correct.float().mean().item(),
               "ce": (ce_sum.sum() / n_tok.sum().clamp(min=1)).item()}
        if groups:
            by: dict[str, list[int]] = defaultdict(list)
            for j, i in enumerate(scores["index"].tolist()):
                it = self.items[i]
                by[f"{it.op}/{it.fmt}"].append(j)
            for key, jj in sorted(by.items()):
                out[f"acc/{key}"] = correct[jj].float().mean().item()
        return out

    def subset(self, per_group: int) -> list[int]:
        """The first `per_group` items of each (op, format); 0 keeps all."""
        if per_group <= 0:
            return list(range(len(self.items)))
        seen: dict[tuple[str, str], int] = defaultdict(int)
        keep = []
        for i, it in enumerate(self.items):
            if seen[(it.op, it.fmt)] < per_group:
                seen[(it.op, it.fmt)] += 1
                keep.append(i)
        return keep


# -------------------------------------------------------------------- benchmark


class Benchmark:
    """Retain = some operations, forget = others; equations and word problems."""

    name = "arithmetic"
    forget_metric = MetricSpec("forget/acc", "forget accuracy", True, CHANCE_ACC)
    retain_metric = MetricSpec("retain/acc", "retain accuracy", True, CHANCE_ACC)
    stop_rule = "retain_acc"
    stop_sets = ("retain_val", "forget_val")
    eval_names = ("retain", "forget", "retain_heldout", "forget_heldout", *stop_sets)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data = ArithmeticData(cfg)
        self._sets: dict[str, list[Item]] | None = None
        self._english: tuple[PreTrainedTokenizerBase, English] | None = None

    def own_tokenizer(self) -> PreTrainedTokenizerBase:
        return build_char_tokenizer()

    def batches(self, role: str, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                seed: int, rank: int = 0) -> BatchFn:
        d, loss = self.data, self.cfg.loss_positions
        if role == "unlearn":  # single items, as the authors' unlearning data (no English)
            return UnlearnBatches(
                ItemBatches(d.stream(d.forget_ops), tokenizer, batch_size, seed, rank,
                            tag="unlearn-forget-", loss_positions=loss),
                ItemBatches(d.stream(d.retain_ops), tokenizer, batch_size, seed, rank,
                            tag="unlearn-retain-", loss_positions=loss), rank)
        if role not in ("base", "distill", "gold"):
            raise ValueError(f"unknown data role '{role}'")
        # base and distill: the unlabeled pretraining mix; gold: retain operations only
        ops = d.retain_ops if role == "gold" else d.ops
        if self.cfg.seq_len > 0:
            return PackedBatches(self.english(tokenizer), [(d.stream(ops), 1.0)], tokenizer,
                                 batch_size, self.cfg.seq_len, self.english_share(role),
                                 seed, rank, tag=f"{role}-packed-", loss_positions=loss)
        return ItemBatches(d.stream(ops), tokenizer, batch_size, seed, rank,
                           loss_positions=loss)

    def english(self, tokenizer: PreTrainedTokenizerBase) -> English | None:
        """The English training text under `tokenizer`, or None without `data.english`."""
        if not self.cfg.english:
            return None
        if self._english is None or self._english[0] is not tokenizer:
            self._english = (tokenizer, English(self.cfg.english, self.cfg.seed, tokenizer))
        return self._english[1]

    def english_share(self, role: str) -> float:
        """English rows' share of a batch: `english_share` for the base model's mix
        (pretraining, distillation, the paper's attack); for the gold standard the forget
        operations' rows become English, so it keeps the base model's retain rows."""
        if not self.cfg.english:
            return 0.0
        e = self.cfg.english_share
        return 1 - (1 - e) * self.data.retain_share() if role == "gold" else e

    def attack_batches(self, attack: AttackConfig, tokenizer: PreTrainedTokenizerBase,
                       seed: str) -> AttackBatches:
        share = retain_share(self, attack)
        if self.cfg.seq_len > 0:
            return self._packed_attack(attack, tokenizer, seed, share)
        return AttackBatches(self.data, attack, tokenizer, seed, share)

    def _packed_attack(self, attack: AttackConfig, tokenizer: PreTrainedTokenizerBase,
                       seed: str, share: float) -> PackedBatches:
        """Packed rows of the attack split: the paper's attack (retain_fraction null) on
        the base model's whole mix, English included (run_relearn_arithmetic.py's
        `..._all_data`); any other retain_fraction on arithmetic rows only, that share of
        each row's items retain operations."""
        d = self.data
        ops = list(attack.ops or d.forget_ops)
        wf = attack.word_fraction
        paper = attack.retain_fraction is None
        if paper and attack.ops is None:  # the whole mix: every op by its weight
            streams = [(d.stream(d.ops, "attack", word_fraction=wf), 1.0)]
        else:
            streams = [(d.stream(ops, "attack", word_fraction=wf), 1 - share)]
            if share > 0:
                streams.append((d.stream(d.retain_ops, "attack", word_fraction=wf), share))
        english = self.english(tokenizer) if paper else None
        return PackedBatches(english, streams, tokenizer, attack.batch_size,
                             self.cfg.seq_len, self.english_share("base") if paper else 0.0,
                             f"attack-{seed}", tag="attack-packed-",
                             loss_positions=self.cfg.loss_positions)

    def paper_retain_fraction(self) -> float:
        """The retain ops' share of the base model's pretraining mix (`op_weights`): the
        authors' arithmetic attack trains on the whole pretraining mix."""
        return self.data.retain_share()

    def attack_knobs(self) -> dict[str, dict[str, Any]]:
        """The attack search may also choose the share of word-problem batches."""
        return {"word_fraction": {"type": "float", "low": 0.0, "high": 1.0,
                                  "default": self.cfg.word_problem_fraction}}

    def check_attack(self, attack: AttackConfig, data: Sequence[Any], steps: int,
                     tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Count the ops of every item the attack will train on; refuse if none is
        forget-domain, or if any evaluated item's operand pair is in the attack split."""
        counts: dict[str, int] = defaultdict(int)
        for b in data:
            for step in range(steps):
                for it in b.items(step):
                    counts[it.op] += 1
        forget_ops = self.data.forget_ops
        n_forget = sum(counts[op] for op in forget_ops)
        if n_forget == 0 and not attack.allow_no_forget:
            raise ConfigError(
                f"the attack data holds no forget-domain items (attack.ops={attack.ops}, "
                f"attack.retain_fraction={retain_share(self, attack):g}; forget ops are "
                f"{', '.join(forget_ops)}): a relearning attack must train on forget-domain "
                f"data. Valid: attack.ops with a forget op and retain_fraction < 1, or "
                f"attack.allow_no_forget=true to attack without forget data on purpose")
        # Disjoint by fact: no evaluated item's fact (a*b, b*a, ab/a, ab/b; likewise for
        # +/-) is ever trained on by an attack, in any of its forms.
        attack_facts = {fact_key(op, a, b) for op, split in self.data.splits.items()
                        for a, b in split.attack}
        for name in self.eval_names:
            for it in self._eval_items()[name]:
                if fact_key(it.op, it.a, it.b) in attack_facts:
                    raise RuntimeError(f"evaluated item {it} is a fact of the attack split")
        return {"train_ops": list(attack.ops or forget_ops),
                "retain_ops": self.data.retain_ops if retain_share(self, attack) > 0 else [],
                "forget_ops": forget_ops, "split": "attack",
                "item_counts": {"forget_items": n_forget, "total_items": sum(counts.values()),
                                **counts},
                "eval_disjoint_from_attack": True}

    def _eval_items(self) -> dict[str, list[Item]]:
        if self._sets is None:
            self._sets = self.data.eval_sets()
        return self._sets

    def eval_set(self, name: str, tokenizer: PreTrainedTokenizerBase) -> ItemEvalSet:
        return ItemEvalSet(name, self._eval_items()[name], tokenizer)

    def describe(self, role: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"benchmark": self.name, "retain_ops": self.data.retain_ops,
                               "forget_ops": self.data.forget_ops,
                               "eval_items": {k: len(v) for k, v in self._eval_items().items()}}
        if role is not None:  # the operations that role trains on
            out["ops"] = self.data.retain_ops if role == "gold" else self.data.ops
        return out

