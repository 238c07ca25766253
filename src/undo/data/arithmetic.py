"""The embedded arithmetic benchmark: equations and word problems, generated in code.

Retain and forget are configuration (default retain = add, sub; forget = mul, div).

Format (chosen so a ~1M-parameter model learns it in minutes on a CPU):
  - operands zero-padded to a fixed width (2 digits; 3 for a dividend), e.g. `07*12=`;
  - answers as 3 digits written least-significant digit first (84 -> `480`), which
    lets a left-to-right model compute carries in order;
  - loss on the answer tokens (and EOS) only in pretraining; distillation uses every
    position ("unlabeled" data).

Splits, per operation, over operand pairs (fixed by `data.seed` alone):
  - heldout: `heldout_fraction` of the pairs, never trained on by any model; evaluated
    as the held-out-generalisation set together with word problems from held-out
    templates;
  - attack: `attack_fraction` of the remaining (trained) pairs; the base model is
    pretrained on them, and relearning attacks train on them;
  - known: the rest of the trained pairs. Evaluation items ("retain"/"forget") are
    drawn from here, so they are items the base model was trained on that no attack
    ever shows: an attack can only restore them by reviving latent knowledge.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from ..config import DataConfig

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


# Word-problem templates, written for this project. A story names its quantities x and
# y, whose values follow it: "tom has x pens and gets y more. how many? x=05 y=12 ".
# The operation must be read from the words; the values sit at fixed offsets before the
# answer, as in an equation. (With the numbers inside the story a ~1M-parameter model
# stayed near 5% on word problems after 1750 steps; this way it learns them alongside
# equations.) The first 10 of each list train; the last 5 are held out.
TEMPLATES: dict[str, list[str]] = {
    "add": [
        "tom has {a} pens and gets {b} more. how many?",
        "a box holds {a} eggs, we add {b}. total?",
        "sam ran {a} laps then {b} laps. sum?",
        "{a} cats and {b} dogs. how many pets?",
        "ann saved {a} coins, then {b} more. total?",
        "a bus has {a} kids, {b} get on. how many?",
        "add {a} and {b}. what is it?",
        "we read {a} pages and {b} pages. total?",
        "a farm has {a} hens and {b} ducks. birds?",
        "bob baked {a} buns and {b} pies. items?",
        "joe found {a} shells, then {b} more. total?",
        "the sum of {a} and {b} is?",
        "a shop sold {a} hats and {b} caps. total?",
        "mia grew {a} roses and {b} lilies. flowers?",
        "put {a} and {b} together. how many?",
    ],
    "sub": [
        "tom has {a} pens and loses {b}. how many left?",
        "a box holds {a} eggs, {b} break. left?",
        "sam had {a} coins and spent {b}. left?",
        "{a} birds sat, {b} flew off. how many stay?",
        "from {a} take {b}. what is left?",
        "a bus has {a} kids, {b} get off. how many?",
        "ann had {a} cards, gave {b} away. left?",
        "we had {a} cups, {b} broke. how many now?",
        "a tree had {a} figs, {b} fell. left?",
        "bob owes {a}, pays {b}. what is still owed?",
        "joe had {a} nuts and ate {b}. left?",
        "{a} less {b} is?",
        "a shop had {a} hats, sold {b}. left?",
        "mia picked {a} plums, gave {b} away. left?",
        "from {a} remove {b}. how many remain?",
    ],
    "mul": [
        "{a} boxes hold {b} pens each. how many pens?",
        "tom buys {a} packs of {b} cards. total?",
        "a room has {a} rows of {b} seats. seats?",
        "{a} kids each have {b} coins. total coins?",
        "multiply {a} by {b}. what is it?",
        "sam runs {a} days, {b} laps a day. laps?",
        "a tray has {a} rows of {b} buns. buns?",
        "ann reads {a} days, {b} pages a day. pages?",
        "{a} bags with {b} apples each. apples?",
        "bob plants {a} rows of {b} trees. trees?",
        "the product of {a} and {b} is?",
        "{a} teams of {b} players. how many players?",
        "joe stacks {a} piles of {b} cups. cups?",
        "a shelf has {a} rows of {b} books. books?",
        "mia packs {a} jars of {b} figs. figs?",
    ],
    "div": [
        "{a} pens shared by {b} kids. each gets?",
        "split {a} coins into {b} equal piles. each?",
        "{a} eggs go in boxes of {b}. how many boxes?",
        "tom cuts {a} cm into {b} equal parts. each?",
        "divide {a} by {b}. what is it?",
        "{a} seats in {b} equal rows. seats a row?",
        "ann shares {a} buns among {b}. each gets?",
        "{a} cards dealt to {b} players. each?",
        "a bus takes {a} kids in {b} trips. per trip?",
        "bob packs {a} nuts in {b} bags. per bag?",
        "the quotient of {a} and {b} is?",
        "{a} apples in bags of {b}. how many bags?",
        "joe splits {a} cups into {b} stacks. each?",
        "{a} books on {b} equal shelves. per shelf?",
        "mia puts {a} figs in {b} jars. per jar?",
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
        story = TEMPLATES[self.op][self.template].format(a="x", b="y")
        return f"{story} x={a} y={b} "

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


class ArithmeticBenchmark:
    """Splits, sampling streams and evaluation sets, all fixed by `cfg.seed`."""

    def __init__(self, cfg: DataConfig) -> None:
        self.cfg = cfg
        self.retain_ops = list(cfg.retain_ops)
        self.forget_ops = list(cfg.forget_ops)
        self.splits: dict[str, Split] = {}
        for i, op in enumerate(SYMBOLS):
            pairs = _pairs(op)
            random.Random(cfg.seed * 1000 + i).shuffle(pairs)
            n_held = max(1, round(cfg.heldout_fraction * len(pairs)))
            trained = pairs[n_held:]
            n_attack = max(1, round(cfg.attack_fraction * len(trained)))
            self.splits[op] = Split(pairs[:n_held], trained[:n_attack], trained[n_attack:])

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

    def eval_sets(self) -> dict[str, list[Item]]:
        return {
            "retain": self.eval_items(self.retain_ops),
            "forget": self.eval_items(self.forget_ops),
            "retain_heldout": self.eval_items(self.retain_ops, heldout=True),
            "forget_heldout": self.eval_items(self.forget_ops, heldout=True),
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


class Batches:
    """Batch `step` of a stream, encoded; deterministic in (seed, step) so a resumed run
    sees exactly the data an uninterrupted one would."""

    def __init__(self, stream: ItemStream, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, seed: int, rank: int = 0) -> None:
        self.stream, self.tokenizer = stream, tokenizer
        self.batch_size, self.seed, self.rank = batch_size, seed, rank

    def __call__(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        rng = random.Random(f"{self.seed}-{self.rank}-{step}-{micro}")
        return encode(self.stream.sample(rng, self.batch_size), self.tokenizer)
