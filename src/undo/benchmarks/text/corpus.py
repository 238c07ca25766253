"""Text corpora for the `text` benchmark: reading, hash splits, packing, sampling.

A corpus is a list of sources (local JSONL / .txt files or folders, or a `datasets` id),
read once into documents. Each document goes to the `train`, `eval` or `attack` split by
a hash of its text (salted with the data seed), so a document's split never depends on
the rest of the corpus: appending documents leaves every earlier decision unchanged, and
exact duplicates always land together. A `.txt` file holds one document per paragraph
(blocks separated by blank lines); a JSONL file one document per line (its `field`).

Packing: documents are tokenized, each followed by EOS, concatenated per (source, split)
and cut into windows of `seq_len` tokens (the tail that fills no window is dropped).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ...configlib import ConfigError
from .jsonl import read_jsonl

if TYPE_CHECKING:
    from .benchmark import Source

SPLITS = ("train", "eval", "attack")
SUFFIXES = (".jsonl", ".txt")
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")


def doc_id(text: str) -> bytes:
    """The identity of a document: sha256 of its text (equal texts, equal ids)."""
    return hashlib.sha256(text.encode()).digest()


def split_of(text: str, seed: int, eval_fraction: float, attack_fraction: float) -> str:
    """`eval`, `attack` or `train`, from the document's salted hash mapped to [0, 1)."""
    h = hashlib.sha256(f"{seed}\n{text}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < eval_fraction:
        return "eval"
    return "attack" if u < eval_fraction + attack_fraction else "train"


# ----------------------------------------------------------------------- reading


def _read_txt(path: Path) -> list[str]:
    paragraphs = _PARAGRAPH.split(path.read_text(encoding="utf-8"))
    return [p.strip() for p in paragraphs if p.strip()]


def _read_path(src: Source, key: str) -> list[str]:
    path = Path(src.path or "")
    if not path.exists():
        raise ConfigError(f"config key '{key}.path': got {src.path!r}, which does not exist; "
                          f"valid: a .jsonl or .txt file, or a folder of them")
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() \
        else [path]
    if not files:
        raise ConfigError(f"config key '{key}.path': folder {src.path!r} holds no .jsonl or "
                          f".txt file; valid: a folder with at least one")
    docs: list[str] = []
    for f in files:
        docs += read_jsonl(f, src.field, key) if f.suffix == ".jsonl" else _read_txt(f)
        if src.max_documents is not None and len(docs) >= src.max_documents:
            break
    return docs


def _read_dataset(src: Source, key: str) -> list[str]:
    import datasets  # only for corpora that use it: the import takes seconds

    where = (f"{src.dataset!r} (name={src.name!r}, split={src.split!r}, "
             f"streaming={src.streaming})")
    docs: list[str] = []
    try:
        ds = datasets.load_dataset(src.dataset, src.name, split=src.split,
                                   streaming=src.streaming, data_files=src.data_files)
        for i, record in enumerate(ds):
            if src.max_documents is not None and len(docs) >= src.max_documents:
                break
            if src.field not in record or not isinstance(record[src.field], str):
                raise ConfigError(f"config key '{key}.field': record {i} of {where} has no "
                                  f"string field {src.field!r}; valid: one of "
                                  f"{', '.join(map(repr, record))}")
            if record[src.field].strip():
                docs.append(record[src.field])
    except ConfigError:
        raise
    except Exception as e:  # any loader failure is a config problem: say which, in one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConfigError(f"config key '{key}.dataset': could not load {where}: "
                          f"{type(e).__name__}: {msg}") from None
    return docs


def read_source(src: Source, key: str) -> list[str]:
    """The non-empty documents of one source, in order, at most `max_documents`."""
    if src.shipped is not None:
        from .shipped import shipped_documents

        docs = shipped_documents(src.shipped, key)
    else:
        docs = _read_path(src, key) if src.path is not None else _read_dataset(src, key)
    docs = docs[: src.max_documents] if src.max_documents is not None else docs
    if not docs:
        raise ConfigError(f"config key '{key}': {src.label()} holds no documents; valid: a "
                          f"corpus with at least one non-empty document")
    return docs


class Corpus:
    """The documents of one role (forget, retain, distill, attack), by source and split.

    `only` puts every document in that one split (a separate distill or attack corpus is
    used whole); otherwise each document's hash decides its split.
    """

    def __init__(self, role: str, sources: Sequence[Source], seed: int, eval_fraction: float,
                 attack_fraction: float, only: str | None = None) -> None:
        self.role, self.sources = role, list(sources)
        self.labels = [s.label() for s in self.sources]
        # Short unique names for per-source metrics (`ce/<key>`): the file or dataset name.
        names = [Path(s.path).stem if s.path is not None
                 else "_".join(filter(None, [s.dataset, s.name])).replace("/", "_")
                 for s in self.sources]
        self.keys = [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]
        self.weights = [s.weight for s in self.sources]
        self.docs: list[dict[str, list[str]]] = []  # per source: split -> documents
        for i, src in enumerate(self.sources):
            per: dict[str, list[str]] = {s: [] for s in SPLITS}
            for text in read_source(src, f"data.{role}[{i}]"):
                per[only or split_of(text, seed, eval_fraction, attack_fraction)].append(text)
            self.docs.append(per)

    def texts(self, split: str) -> list[str]:
        return [t for per in self.docs for t in per[split]]

    def ids(self, split: str | None = None) -> set[bytes]:
        return {doc_id(t) for per in self.docs for s in SPLITS if split in (None, s)
                for t in per[s]}

    def counts(self) -> dict[str, int]:
        return {s: sum(len(per[s]) for per in self.docs) for s in SPLITS}


# ----------------------------------------------------------------- packing, sampling


def pack(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, seq_len: int
         ) -> tuple[torch.Tensor, int]:
    """Windows (n, seq_len) int32 of the documents joined by EOS, and the token count."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ConfigError("the tokenizer has no EOS token; valid for data.benchmark=text: a "
                          "tokenizer with an EOS token (it separates packed documents)")
    chunks = [np.zeros(0, dtype=np.int32)]  # int32: 4 bytes a token, not a Python int
    for i in range(0, len(texts), 1024):  # batched: fast tokenizers encode in parallel
        enc = tokenizer(list(texts[i : i + 1024]), add_special_tokens=False, verbose=False)
        chunks.append(np.fromiter((t for row in enc["input_ids"] for t in (*row, eos)),
                                  dtype=np.int32))
    ids = torch.from_numpy(np.concatenate(chunks))
    n = len(ids) // seq_len
    return ids[: n * seq_len].view(n, seq_len), len(ids)


class Mixture:
    """Windows drawn from several pools with weights: pool by weight, window uniformly."""

    def __init__(self, pools: Sequence[tuple[torch.Tensor, float]]) -> None:
        kept = [(w, x) for w, x in pools if x > 0]
        self.pools = [w for w, _ in kept]
        self.weights = [x for _, x in kept]

    def draw(self, rng: random.Random, n: int) -> torch.Tensor:
        """(n, seq_len) int64 token ids."""
        picks = rng.choices(range(len(self.pools)), weights=self.weights, k=n)
        rows = [self.pools[i][rng.randrange(len(self.pools[i]))] for i in picks]
        return torch.stack(rows).long()


def lm_batch(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """A causal-LM batch over full windows: no padding, loss on every next token."""
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


class WindowBatches:
    """Batch `step` of a window mixture; deterministic in (tag, seed, rank, step, micro),
    so a resumed run sees exactly the data an uninterrupted one would."""

    def __init__(self, mix: Mixture, batch_size: int, seed: int, rank: int = 0,
                 tag: str = "") -> None:
        self.mix, self.batch_size, self.seed, self.rank, self.tag = (
            mix, batch_size, seed, rank, tag)

    def __call__(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        rng = random.Random(f"{self.tag}{self.seed}-{self.rank}-{step}-{micro}")
        return lm_batch(self.mix.draw(rng, self.batch_size))


class AttackBatches:
    """Attack batches: `n_forget` forget-domain windows, then `n_retain` retain windows;
    deterministic in (seed, step, micro)."""

    def __init__(self, forget: Mixture, retain: Mixture | None, n_forget: int, n_retain: int,
                 seed: str) -> None:
        self.forget, self.retain, self.seed = forget, retain, seed
        self.n_forget, self.n_retain = n_forget, n_retain

    def __call__(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        rng = random.Random(f"attack-{self.seed}-{step}-{micro}")
        rows = [self.forget.draw(rng, self.n_forget)] if self.n_forget else []
        if self.n_retain:
            assert self.retain is not None  # built whenever retain_fraction > 0
            rows.append(self.retain.draw(rng, self.n_retain))
        return lm_batch(torch.cat(rows))
