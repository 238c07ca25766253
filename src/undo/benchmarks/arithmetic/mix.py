"""The authors' composition of the arithmetic setting: English text mixed with arithmetic.

Lee et al. 2025 pretrain on English web text and arithmetic interleaved 0.75 / 0.25, both
packed into sequences of 256 tokens with the loss on every token
(`run_pretrain_arithmetic.py`); the gold standard keeps the base model's share of
addition and subtraction and replaces the forget operations by more English (0.875 /
0.125); distillation and the relearning attack train on the base model's mix. This
module gives the arithmetic benchmark that composition (`data.english`, `data.seq_len`,
`data.english_share`, `data.loss_positions`; configs/arithmetic/paper.yaml):

- English: any text source of the text benchmark (e.g. `shipped: linux-doc`, which
  `scripts/corpora.sh` builds from Debian's kernel documentation), lower-cased and
  reduced to the arithmetic tokenizer's characters (letters, digits, ` ?.,'`; the
  operators `+-*/=` become spaces, so no English sequence writes an equation), documents
  joined by spaces into one character stream. Documents go to train / held out by hash
  (`undo.benchmarks.text.corpus`); only the train part is ever trained on.
- Rows: every training row holds exactly `seq_len` tokens, as the authors' packed
  sequences. An English row is `<bos>` and `seq_len - 1` consecutive characters at a
  random offset; an arithmetic row is items `<bos> prompt answer <eos>` one after another,
  cut at `seq_len` (the last item is usually cut, as in the authors' packing).
- A batch of `batch_size` rows holds round(share x rows) English rows: `english_share`
  for the base model, distillation and the paper's attack; 1 - (1 - share) x r for the
  gold standard, r the retain operations' share of the arithmetic (`op_weights`), so it
  sees the base model's retain tokens and English in place of the forget operations.
- Labels: `loss_positions: all` labels every token (the authors' loss); `answer` only
  the answers and EOS (this benchmark's own default), English rows always every token.

Evaluation is unchanged: single items from `<bos>`, exact match of the answer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from .data import Item, ItemStream

ENGLISH_EVAL_FRACTION = 0.05  # held-out English documents (never trained on)
_KEEP = re.compile(r"[^a-z0-9 ?.,']+")
_SPACES = re.compile(r" {2,}")


def normalise(text: str) -> str:
    """Lower-case `text` and keep only the characters English rows may hold."""
    return _SPACES.sub(" ", _KEEP.sub(" ", text.lower())).strip()


@lru_cache(maxsize=4)
def _english_chars(sources_key: str, seed: int) -> str:
    """The train documents of the English sources, normalised and joined (one per run)."""
    import json

    from ..text.benchmark import Source
    from ..text.corpus import Corpus

    sources = [Source(**s) for s in json.loads(sources_key)]
    corpus = Corpus("english", sources, seed=seed, eval_fraction=ENGLISH_EVAL_FRACTION,
                    attack_fraction=0.0)
    return " ".join(n for n in (normalise(t) for t in corpus.texts("train")) if n)


class English:
    """The English training characters as token ids of one tokenizer (uint8)."""

    def __init__(self, sources: Sequence[Any], seed: int,
                 tokenizer: PreTrainedTokenizerBase) -> None:
        import json
        from dataclasses import asdict

        key = json.dumps([asdict(s) for s in sources], sort_keys=True)
        text = _english_chars(key, seed)
        vocab = tokenizer.get_vocab()
        table = np.zeros(256, dtype=np.uint8)
        for c in set(text):
            table[ord(c)] = vocab[c]
        self.ids = torch.from_numpy(table[np.frombuffer(text.encode("ascii"), np.uint8)])
        self.chars = len(text)

    def row(self, rng: random.Random, length: int) -> list[int]:
        start = rng.randrange(len(self.ids) - length)
        return self.ids[start : start + length].tolist()


def item_tokens(it: Item, vocab: dict[str, int], bos: int, eos: int) -> tuple[list[int], int]:
    """`<bos> prompt answer <eos>` as ids, and the index of the first answer token."""
    p = [vocab[c] for c in it.prompt()]
    return [bos, *p, *(vocab[c] for c in it.answer_text()), eos], 1 + len(p)


def encode_items(items: Sequence[Item], tokenizer: PreTrainedTokenizerBase,
                 loss_positions: str = "answer") -> dict[str, torch.Tensor]:
    """Right-padded batch of single items; labels on the answers and EOS, or (`all`) on
    every token of the item."""
    vocab = tokenizer.get_vocab()
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    seqs = [item_tokens(it, vocab, bos, eos) for it in items]
    width = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (s, k) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        first = 0 if loss_positions == "all" else k
        labels[i, first : len(s)] = ids[i, first : len(s)]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class PackedBatches:
    """Rows of `seq_len` tokens: round(`english_share` x rows) English rows, the others
    arithmetic items packed one after another (see the module). Deterministic in (tag,
    seed, rank, step, micro), as `ItemBatches`.

    `streams` are (stream, share of the arithmetic items) pairs: one stream for
    pretraining and distillation, the attack's forget and retain parts for an attack.
    """

    def __init__(self, english: English | None, streams: Sequence[tuple[ItemStream, float]],
                 tokenizer: PreTrainedTokenizerBase, rows: int, seq_len: int,
                 english_share: float, seed: Any, rank: int = 0, tag: str = "",
                 loss_positions: str = "all") -> None:
        self.english, self.streams, self.tokenizer = english, list(streams), tokenizer
        self.rows, self.seq_len, self.seed, self.rank, self.tag = rows, seq_len, seed, rank, tag
        self.n_english = round(rows * english_share) if english is not None else 0
        if self.n_english >= rows and english_share < 1:
            self.n_english = rows - 1  # keep one arithmetic row whenever the mix has any
        self.loss_positions = loss_positions
        self.vocab = tokenizer.get_vocab()
        # Enough items to fill a row: every item is at least 11 tokens long.
        self.per_row = seq_len // 10 + 2

    def _rng(self, step: int, micro: int) -> random.Random:
        return random.Random(f"{self.tag}{self.seed}-{self.rank}-{step}-{micro}")

    def _row_items(self, rng: random.Random) -> list[Item]:
        out: list[Item] = []
        for stream, share in self.streams:
            n = max(1, round(self.per_row * share)) if share > 0 else 0
            if n:
                out += stream.sample(rng, n)
        rng.shuffle(out)
        return out

    def _plan(self, step: int, micro: int) -> tuple[random.Random, list[list[Item]]]:
        rng = self._rng(step, micro)
        return rng, [self._row_items(rng) for _ in range(self.rows - self.n_english)]

    def items(self, step: int, micro: int = 0) -> list[Item]:
        """The arithmetic items the batch is packed from (for the attack's checks)."""
        return [it for row in self._plan(step, micro)[1] for it in row]

    def __call__(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        rng, plan = self._plan(step, micro)
        tok = self.tokenizer
        bos, eos = tok.bos_token_id, tok.eos_token_id
        L = self.seq_len
        ids = torch.empty((self.rows, L), dtype=torch.long)
        labels = torch.full((self.rows, L), -100, dtype=torch.long)
        for r, row_items in enumerate(plan):
            seq: list[int] = []
            lab: list[int] = []
            for it in row_items:
                s, k = item_tokens(it, self.vocab, bos, eos)
                seq += s
                lab += s if self.loss_positions == "all" else [-100] * k + s[k:]
                if len(seq) >= L:
                    break
            while len(seq) < L:  # too few items drawn (never with per_row): more
                more = self._row_items(rng)
                for it in more:
                    s, k = item_tokens(it, self.vocab, bos, eos)
                    seq += s
                    lab += s if self.loss_positions == "all" else [-100] * k + s[k:]
            ids[r] = torch.tensor(seq[:L])
            labels[r] = torch.tensor(lab[:L])
        for r in range(len(plan), self.rows):
            assert self.english is not None
            ids[r, 0] = bos
            ids[r, 1:] = torch.tensor(self.english.row(rng, L - 1))
            labels[r] = ids[r]
        order = list(range(self.rows))
        rng.shuffle(order)  # English and arithmetic rows interleaved in the batch
        ids, labels = ids[order], labels[order]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
