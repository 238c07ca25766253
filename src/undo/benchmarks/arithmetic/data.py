"""The embedded arithmetic benchmark: equations and word problems, generated in code.

Retain and forget are configuration (default retain = add, sub; forget = mul, div).

Format (chosen so a ~1M-parameter model learns it in minutes on a CPU):
  - operands zero-padded to a fixed width (2 digits; 3 for a dividend), e.g. `07*12=`;
  - answers as 3 digits written least-significant digit first (84 -> `480`), which
    lets a left-to-right model compute carries in order;
  - loss on the answer tokens (and EOS) only in pretraining; distillation uses every
    position ("unlabeled" data).

Splits, by fact (fixed by `data.seed` alone). A fact is what an item tests, whatever
the operation or operand order: `a*b`, `b*a`, `ab/a` and `ab/b` are one fact, and so are
`a+b`, `b+a`, `(a+b)-a` and `(a+b)-b` (`fact_key`). A fact lies wholly in one split, so
no attack item is the commuted or inverse form of an evaluation item:
  - heldout: about `heldout_fraction` of each operation's items, never trained on by any
    model; evaluated as the held-out-generalisation set together with word problems from
    held-out templates;
  - attack: about `attack_fraction` of the remaining (trained) items; the base model is
    pretrained on them, and relearning attacks train on them;
  - known: the rest of the trained items. Evaluation items ("retain"/"forget") are
    drawn from here, so they are items the base model was trained on whose facts no
    attack ever shows: an attack can only restore them by reviving latent knowledge.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedTokenizerBase

if TYPE_CHECKING:
    from .benchmark import Config as DataConfig

ANSWER_DIGITS = 3
EQUATION, WORD = "equation", "word"

SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


def _pairs(op: str) -> list[tuple[int, int]]:
    """All operand pairs of an operation, as (left, right) written in the prompt."""
    if op == "add":
        return [(a, b) for a in range(1, 51) for b in range(1, 51)]
    if op == "sub":  # results stay non-negative: a >= b
        return [(a, b) for a in range(1, 51) for b in range(1, a + 1)]
    if op == "mul":
        return [(a, b) for a in range(1, 21) for b in range(1, 21)]
    if op == "div":  # exact division built as (a*b)/b
        return [(a * b, b) for a in range(1, 21) for b in range(1, 21)]
    raise ValueError(f"unknown operation '{op}'; valid: {', '.join(SYMBOLS)}")


def compute(op: str, a: int, b: int) -> int:
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b}[op]


def _num(x: int, op: str, left: bool) -> str:
    width = 3 if (op == "div" and left) else 2
    return str(x).zfill(width)


# Word-problem templates, written for this project: short stories about quantities x and
# y, followed by the values with the operation left out: "x pens, y more. total? 05?12=".
# The operation must be read from the words. Why this shape: with the numbers inside
# longer stories a ~1M-parameter model stayed near 5% on word problems after 1750 steps
# (it had to learn the arithmetic anew at every position); with the values in an
# equation-like tail it reuses what equations teach. The first 10 of each list train;
# the last 5 are held out.
TEMPLATES: dict[str, list[str]] = {
    "add": [
        "x pens, y more. total?",
        "x eggs and y eggs?",
        "ran x laps, then y?",
        "x cats, y dogs. pets?",
        "saved x, then y more?",
        "x kids, y get on?",
        "add x and y?",
        "read x pages, then y?",
        "x hens, y ducks. birds?",
        "x buns and y pies?",
        "found x, then y more?",
        "sum of x and y?",
        "x hats, y caps. total?",
        "x roses, y lilies?",
        "x and y together?",
    ],
    "sub": [
        "x pens, y lost. left?",
        "x eggs, y break. left?",
        "had x, spent y. left?",
        "x birds, y flew off?",
        "take y from x?",
        "x kids, y get off?",
        "x cards, gave y away?",
        "x cups, y broke. now?",
        "x figs, y fell. left?",
        "owes x, pays y. owed?",
        "x nuts, ate y. left?",
        "x less y?",
        "x hats, sold y. left?",
        "x plums, gave y?",
        "from x remove y?",
    ],
    "mul": [
        "x boxes of y pens?",
        "x packs of y cards?",
        "x rows of y seats?",
        "x kids, y coins each?",
        "multiply x by y?",
        "x days, y laps a day?",
        "x trays of y buns?",
        "x days, y pages a day?",
        "x bags of y apples?",
        "x rows of y trees?",
        "product of x and y?",
        "x teams of y players?",
        "x piles of y cups?",
        "x shelves of y books?",
        "x jars of y figs?",
    ],
    "div": [
        "x pens, y kids. each?",
        "x coins, y piles. each?",
        "x eggs, boxes of y?",
        "cut x into y parts?",
        "divide x by y?",
        "x seats, y rows. a row?",
        "x buns among y?",
        "x cards, y players?",
        "x kids in y trips?",
        "x nuts, y bags. a bag?",
        "quotient of x and y?",
        "x apples, bags of y?",
        "x cups in y stacks?",
        "x books, y shelves?",
        "x figs in y jars?",
    ],
}
TRAIN_TEMPLATES = 10


@dataclass(frozen=True)
class Item:
    """One arithmetic question. `template` is -1 for an equation."""

    op: str
    a: int
    b: int
    template: int = -1

    @property
    def fmt(self) -> str:
        return EQUATION if self.template < 0 else WORD

    @property
    def answer(self) -> int:
        return compute(self.op, self.a, self.b)

    def prompt(self) -> str:
        a, b = _num(self.a, self.op, True), _num(self.b, self.op, False)
        if self.template < 0:
            return f"{a}{SYMBOLS[self.op]}{b}="
        return f"{TEMPLATES[self.op][self.template]} {a}?{b}="

    def answer_text(self) -> str:
        return str(self.answer).zfill(ANSWER_DIGITS)[::-1]


@dataclass
class Split:
    heldout: list[tuple[int, int]]
    attack: list[tuple[int, int]]
    known: list[tuple[int, int]]

    @property
    def trained(self) -> list[tuple[int, int]]:
        return self.attack + self.known


def fact_key(op: str, a: int, b: int) -> tuple[str, int, int]:
    """The fact an item tests: one key for an operation, its commuted form and its inverse.

    add/sub: the unordered addends {x, y} of x + y (a sub item a - b is the fact
    b + (a - b)); a - a has no addition of two positive operands behind it, so it is a
    fact of its own. mul/div: the unordered factors {x, y} of x * y (a div item a / b is
    the fact (a / b) * b).
    """
    if op == "add":
        x, y = a, b
    elif op == "sub":
        if a == b:
            return ("sub-self", a, a)
        x, y = b, a - b
    elif op == "mul":
        x, y = a, b
    elif op == "div":
        x, y = a // b, b
    else:
        raise ValueError(f"unknown operation '{op}'; valid: {', '.join(SYMBOLS)}")
    family = "mul" if op in ("mul", "div") else "add"
    return (family, min(x, y), max(x, y))


def _fact_splits(cfg: DataConfig) -> dict[str, Split]:
    """Heldout / attack / known items per operation, assigned a whole fact at a time.

    Facts differ in how many items of each operation they hold (`a+b` with a + b > 50
    has no subtraction; `a*a` has one product, not two). Facts are therefore split per
    stratum of equal make-up, each by the configured fractions, so every operation
    gets close to the configured share of items.
    """
    facts: dict[tuple[str, int, int], dict[str, list[tuple[int, int]]]] = {}
    for op in SYMBOLS:
        for a, b in _pairs(op):
            facts.setdefault(fact_key(op, a, b), {}).setdefault(op, []).append((a, b))
    strata: dict[tuple[int, ...], list[tuple[str, int, int]]] = {}
    for key, items in facts.items():
        strata.setdefault(tuple(len(items.get(op, [])) for op in SYMBOLS), []).append(key)
    splits = {op: Split([], [], []) for op in SYMBOLS}
    for make_up in sorted(strata):
        keys = sorted(strata[make_up])
        random.Random(f"split-{cfg.seed}-{make_up}").shuffle(keys)
        n_held = round(cfg.heldout_fraction * len(keys))
        n_attack = round(cfg.attack_fraction * (len(keys) - n_held))
        for i, key in enumerate(keys):
            part = "heldout" if i < n_held else "attack" if i < n_held + n_attack else "known"
            for op, pairs in facts[key].items():
                getattr(splits[op], part).extend(pairs)
    return splits


class ArithmeticData:
    """Splits, sampling streams and evaluation sets, all fixed by `cfg.seed`."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.retain_ops = list(cfg.retain_ops)
        self.forget_ops = list(cfg.forget_ops)
        self.splits = _fact_splits(cfg)

    @property
    def ops(self) -> list[str]:
        return self.retain_ops + self.forget_ops

    # ------------------------------------------------------------------ sampling

    def weights(self, ops: Sequence[str]) -> list[float]:
        return [self.cfg.op_weights.get(op, 1.0) for op in ops]

    def retain_share(self) -> float:
        """Expected share of retain items in the base model's pretraining mix."""
        w = dict(zip(self.ops, self.weights(self.ops), strict=True))
        return sum(w[o] for o in self.retain_ops) / sum(w.values())

    def stream(self, ops: Sequence[str], split: str = "trained", *,
               word_fraction: float | None = None) -> ItemStream:
        """Items of `ops` from a split ('trained', 'attack' or 'known'), train templates."""
        pools = {op: getattr(self.splits[op], split) for op in ops}
        wf = self.cfg.word_problem_fraction if word_fraction is None else word_fraction
        return ItemStream(pools, dict(zip(ops, self.weights(ops), strict=True)), wf,
                          self.cfg.word_batch_scale)

    # ---------------------------------------------------------------- evaluation

    def eval_items(self, ops: Iterable[str], heldout: bool = False) -> list[Item]:
        """`eval_items_per_op` equations and as many word problems per operation.

        Seen set: known pairs with training templates. Held-out set: held-out pairs,
        as equations and with held-out templates.
        """
        items: list[Item] = []
        n = self.cfg.eval_items_per_op
        n_templates = len(TEMPLATES["add"])
        for op in ops:
            rng = random.Random(f"eval-{self.cfg.seed}-{op}-{heldout}")
            pool = self.splits[op].heldout if heldout else self.splits[op].known
            pairs = rng.sample(pool, min(n, len(pool)))
            items += [Item(op, a, b) for a, b in pairs]
            lo, hi = (TRAIN_TEMPLATES, n_templates) if heldout else (0, TRAIN_TEMPLATES)
            items += [Item(op, a, b, rng.randrange(lo, hi)) for a, b in pairs]
        return items

    def validation_items(self, ops: Iterable[str]) -> list[Item]:
        """The distillation stop rule's validation set: like the seen eval set (known pairs,
        training templates, as many items), from known facts that no evaluated item tests,
        so the rule never selects on the items the report and the attacks score."""
        evaluated = {fact_key(it.op, it.a, it.b)
                     for it in self.eval_items(self.retain_ops) + self.eval_items(self.forget_ops)}
        items: list[Item] = []
        for op in ops:
            rng = random.Random(f"val-{self.cfg.seed}-{op}")
            pool = [p for p in self.splits[op].known if fact_key(op, *p) not in evaluated]
            pairs = rng.sample(pool, min(self.cfg.eval_items_per_op, len(pool)))
            items += [Item(op, a, b) for a, b in pairs]
            items += [Item(op, a, b, rng.randrange(TRAIN_TEMPLATES)) for a, b in pairs]
        return items

    def eval_sets(self) -> dict[str, list[Item]]:
        return {
            "retain": self.eval_items(self.retain_ops),
            "forget": self.eval_items(self.forget_ops),
            "retain_heldout": self.eval_items(self.retain_ops, heldout=True),
            "forget_heldout": self.eval_items(self.forget_ops, heldout=True),
            "retain_val": self.validation_items(self.retain_ops),
            "forget_val": self.validation_items(self.forget_ops),
        }


class ItemStream:
    """An endless, seeded stream of items; batch `i` depends only on (seed, i)."""

    def __init__(self, pools: dict[str, list[tuple[int, int]]], weights: dict[str, float],
                 word_fraction: float, word_batch_scale: float = 1.0) -> None:
        self.pools = {op: p for op, p in pools.items() if p and weights[op] > 0}
        if not self.pools:
            raise ValueError("an item stream needs at least one operation with items")
        self.ops = list(self.pools)
        self.op_weights = [weights[op] for op in self.ops]
        self.word_fraction = word_fraction
        self.word_batch_scale = word_batch_scale

    def sample(self, rng: random.Random, n: int) -> list[Item]:
        # A batch is all equations or all word problems, so padding stays small.
        words = rng.random() < self.word_fraction
        if words:
            n = max(1, round(n * self.word_batch_scale))
        ops = rng.choices(self.ops, weights=self.op_weights, k=n)
        out = []
        for op in ops:
            a, b = rng.choice(self.pools[op])
            out.append(Item(op, a, b, rng.randrange(TRAIN_TEMPLATES) if words else -1))
        return out


def encode(items: Sequence[Item], tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """Right-padded batch: `<bos> prompt answer <eos>`; labels only on answer and EOS."""
    vocab = tokenizer.get_vocab()
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs, n_prompt = [], []
    for it in items:
        p = [vocab[c] for c in it.prompt()]
        seqs.append([bos] + p + [vocab[c] for c in it.answer_text()] + [eos])
        n_prompt.append(1 + len(p))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, k) in enumerate(zip(seqs, n_prompt, strict=True)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, k : len(s)] = ids[i, k : len(s)]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
