"""Text corpora as a `Benchmark`: forget one corpus, keep another (data: `undo.benchmarks.text.corpus`).

Sources are local JSONL / .txt files (or folders of them) or `datasets` ids. Documents
are split by a hash of their text into train / eval / attack (disjoint, stable as a
corpus grows); each split is packed into windows of `seq_len` tokens. Pretraining mixes
forget and retain training windows; the attack trains on the forget corpus's attack
split (or a separate `attack` corpus checked against the eval documents). Metrics are
per-token: cross-entropy (nats/token, *the* metric, lower = more capability) and top-1
next-token accuracy on held-out eval windows of each corpus.

The tokenizer is the model's (`tokenizer: model`), a byte-level BPE trained here on the
training documents of forget and retain only (`tokenizer: bpe`, for preset models), or a
named one (a hub id or a local folder, for preset models: the paper trained its 0.1B
Gemma-2 shape with Gemma's tokenizer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from ...configlib import ConfigError, check
from ...tokenizers import train_bpe_tokenizer
from ..base import BatchFn, MetricSpec, UnlearnBatches, retain_share
from .corpus import SUFFIXES, AttackBatches, Corpus, Mixture, WindowBatches, pack
from .windows import WindowEvalSet

if TYPE_CHECKING:
    from ...config import AttackConfig


@dataclass
class Source:
    """One corpus source: a local `path`, a `datasets` id or a `shipped` corpus (exactly one).

    `path`: a .jsonl file (one JSON object per line, text in `field`), a .txt file (one
    document per paragraph: blocks separated by blank lines) or a folder of such files
    (its .jsonl and .txt files, not sub-folders, in name order).
    `dataset`: `datasets.load_dataset(dataset, name, split=split, streaming=streaming,
    data_files=data_files)`; a packaged builder reads local files (`dataset: json`,
    `data_files: [corpus.jsonl]`). With `streaming`, the first `max_documents` records.
    `shipped`: real text an installed package carries (`undo.benchmarks.text.shipped`: python-docs,
    python-source, korean-law, korean-bills; linux-doc and korean-help once
    `scripts/corpora.sh` has built them from Debian's documentation packages).
    """

    path: str | None = None
    dataset: str | None = None
    shipped: str | None = None
    name: str | None = None  # the dataset's config (e.g. a language subset)
    split: str = "train"
    data_files: list[str] | None = None
    streaming: bool = False
    field: str = "text"
    max_documents: int | None = None  # the first N non-empty documents; null: all
    weight: float = 1.0  # share of this source in its corpus's batches (relative)

    def label(self) -> str:
        if self.path is not None:
            return self.path
        if self.shipped is not None:
            return f"shipped:{self.shipped}"
        return f"{self.dataset}{'/' + self.name if self.name else ''}:{self.split}"

    def validate(self, p: str) -> None:
        given = {k: v for k, v in (("path", self.path), ("dataset", self.dataset),
                                   ("shipped", self.shipped)) if v is not None}
        check(len(given) == 1, p, given, "exactly one of path, dataset, shipped")
        if self.shipped is not None:
            from .shipped import SHIPPED

            check(self.shipped in SHIPPED, f"{p}.shipped", self.shipped, ", ".join(SHIPPED))
        if self.path is not None:
            path = Path(self.path)
            check(path.exists(), f"{p}.path", self.path, "an existing file or folder")
            check(path.is_dir() or path.suffix in SUFFIXES, f"{p}.path", self.path,
                   "a .jsonl or .txt file, or a folder of them")
            for k in ("name", "data_files"):
                check(getattr(self, k) is None, f"{p}.{k}", getattr(self, k),
                       "null for a path source (it is a `dataset` option)")
            check(not self.streaming, f"{p}.streaming", self.streaming,
                   "false for a path source (it is a `dataset` option)")
        check(bool(self.field), f"{p}.field", self.field, "a non-empty field name")
        check(self.max_documents is None or self.max_documents > 0, f"{p}.max_documents",
               self.max_documents, "a positive integer or null")
        check(not self.streaming or self.max_documents is not None, f"{p}.max_documents",
               self.max_documents, "a positive integer when streaming=true")
        check(self.weight > 0, f"{p}.weight", self.weight, "a positive number")


@dataclass
class Config:
    """`data:` of the text benchmark: a forget and a retain corpus."""

    benchmark: Literal["text"] = "text"
    forget: list[Source] = field(default_factory=list)
    retain: list[Source] = field(default_factory=list)
    # Unlabeled distillation data, used whole; null: the base mix (forget + retain train).
    distill: list[Source] | None = None
    # The attack's forget-domain data, used whole; null: the forget corpus's attack split.
    attack: list[Source] | None = None
    seq_len: int = 128  # tokens per packed window (fits the tiny preset's 128 positions)
    eval_fraction: float = 0.1  # share of documents held out for evaluation (by hash)
    attack_fraction: float = 0.1  # share of documents reserved for attacks (by hash)
    forget_weight: float = 0.5  # share of forget windows in the base pretraining mix
    eval_windows: int = 256  # at most this many windows per evaluation set
    # model | bpe | a tokenizer's hub id or local folder (for a preset model)
    tokenizer: str = "bpe"
    vocab_size: int = 4096  # of the BPE (tokenizer: bpe), special tokens included
    seed: int = 0  # salts the document hash that decides the splits

    def validate(self, p: str) -> None:
        for k in ("forget", "retain"):
            check(bool(getattr(self, k)), f"{p}.{k}", getattr(self, k),
                   "a non-empty list of sources ({path: ...} or {dataset: ...})")
        for k in ("distill", "attack"):
            v = getattr(self, k)
            check(v is None or bool(v), f"{p}.{k}", v, "null or a non-empty list of sources")
        check(self.seq_len > 1, f"{p}.seq_len", self.seq_len, "an integer > 1")
        check(0 < self.eval_fraction < 1, f"{p}.eval_fraction", self.eval_fraction,
               "a number in (0, 1)")
        check(0 <= self.attack_fraction < 1 - self.eval_fraction, f"{p}.attack_fraction",
               self.attack_fraction, f"a number in [0, 1 - eval_fraction = "
               f"{1 - self.eval_fraction:g}) (the rest is training data)")
        check(self.attack_fraction > 0 or self.attack is not None, f"{p}.attack_fraction",
               self.attack_fraction, f"a number > 0 unless {p}.attack names an attack corpus")
        check(0 <= self.forget_weight <= 1, f"{p}.forget_weight", self.forget_weight,
               "a number in [0, 1]")
        check(self.eval_windows > 0, f"{p}.eval_windows", self.eval_windows,
               "a positive integer")
        check(bool(self.tokenizer.strip()), f"{p}.tokenizer", self.tokenizer,
               "'model', 'bpe', or a tokenizer's hub id or local folder")
        check(self.vocab_size >= 260, f"{p}.vocab_size", self.vocab_size,
               "an integer >= 260 (256 bytes + 4 special tokens)")

    def check_run(self, run: Any) -> None:
        """Settings of other sections that must fit this benchmark."""
        a = run.attack
        check(a.ops is None, "attack.ops", a.ops,
               "null with data.benchmark=text (operations are arithmetic-only; the attack "
               "trains on the forget corpus's attack split or data.attack)")
        check(a.word_fraction is None, "attack.word_fraction", a.word_fraction,
               "null with data.benchmark=text (word problems are arithmetic-only)")
        check(self.distill is None or run.distill.inputs == "mix", "distill.inputs",
              run.distill.inputs, "'mix' when data.distill names a distillation corpus "
              "(both choose what the student distils on; drop one)")
        has_model = run.model.name_or_path is not None
        check(has_model or self.tokenizer != "model", "data.tokenizer", self.tokenizer,
               "'bpe' or a tokenizer's hub id or folder with a preset model (a preset has "
               "no tokenizer), or set model.name_or_path to use its tokenizer")
        check(not has_model or self.tokenizer == "model", "data.tokenizer", self.tokenizer,
               f"'model' with model.name_or_path={run.model.name_or_path!r} (a locally "
               f"trained BPE does not match the model's vocabulary)")
        if not has_model:
            from ...models import model_shape

            positions = model_shape(run.model)["max_position_embeddings"]
            check(self.seq_len <= positions, "data.seq_len", self.seq_len,
                   f"at most the model's max_position_embeddings ({positions})")


# -------------------------------------------------------------------- benchmark


class Benchmark:
    """Forget one corpus, keep another; evaluated by per-token CE on held-out windows."""

    name = "text"
    forget_metric = MetricSpec("forget/ce", "forget CE (nats/token)", False, None)
    retain_metric = MetricSpec("retain/ce", "retain CE (nats/token)", False, None)
    stop_rule = "retain_ce"
    stop_sets = ("retain_val", "forget_val")
    eval_names = ("retain", "forget", *stop_sets)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        hashing = dict(seed=cfg.seed, eval_fraction=cfg.eval_fraction,
                       attack_fraction=cfg.attack_fraction)
        self.corpora = {role: Corpus(role, getattr(cfg, role), **hashing)
                        for role in ("forget", "retain")}
        if cfg.distill is not None:  # a separate corpus is used whole, as training data
            self.corpora["distill"] = Corpus("distill", cfg.distill, **hashing, only="train")
        if cfg.attack is not None:
            self.corpora["attack"] = Corpus("attack", cfg.attack, **hashing, only="attack")
        self._check_corpora()
        self._tokenizer: PreTrainedTokenizerBase | None = None
        # (id(tokenizer), role, split) -> per source (windows, tokens); the tokenizers are
        # kept alive in `_seen` so that no other object can take over their id.
        self._packed: dict[tuple[int, str, str], list[tuple[torch.Tensor, int]]] = {}
        self._seen: list[PreTrainedTokenizerBase] = []

    def _check_corpora(self) -> None:
        """Refuse corpora that cannot give honest splits, before any training."""
        c, forget, retain = self.cfg, self.corpora["forget"], self.corpora["retain"]
        if forget.ids() == retain.ids():
            raise ConfigError(f"data.forget and data.retain hold the same "
                              f"{len(forget.ids())} documents; valid: two different corpora")
        needed = ["train", "eval"] + (["attack"] if c.attack_fraction > 0 else [])
        for corpus in (forget, retain):
            counts = corpus.counts()
            if any(counts[s] == 0 for s in needed):
                raise ConfigError(
                    f"data.{corpus.role} ({', '.join(corpus.labels)}) is too small for the "
                    f"splits: {counts} documents with data.eval_fraction={c.eval_fraction}, "
                    f"data.attack_fraction={c.attack_fraction}; valid: at least one document "
                    f"in each of {', '.join(needed)} (add documents or raise the fractions)")
        evaluated = forget.ids("eval") | retain.ids("eval")
        for role in ("distill", "attack"):
            if role in self.corpora:
                n = len(self.corpora[role].ids() & evaluated)
                if n:
                    raise ConfigError(
                        f"data.{role}: {n} of its documents are also evaluation documents of "
                        f"data.forget or data.retain; valid: a {role} corpus without the "
                        f"evaluated documents (remove them from it)")

    # ------------------------------------------------------------------ data

    def own_tokenizer(self) -> PreTrainedTokenizerBase | None:
        """None (the model's tokenizer), the BPE of the forget + retain training docs, or
        the named tokenizer."""
        if self.cfg.tokenizer == "model":
            return None
        if self._tokenizer is None and self.cfg.tokenizer != "bpe":
            from ...models import load_tokenizer  # a ConfigError when it cannot be loaded

            self._tokenizer = load_tokenizer(self.cfg.tokenizer)
        if self._tokenizer is None:
            texts = self.corpora["forget"].texts("train") + self.corpora["retain"].texts("train")
            self._tokenizer = train_bpe_tokenizer(texts, self.cfg.vocab_size)
        return self._tokenizer

    def _pack(self, role: str, split: str, tokenizer: PreTrainedTokenizerBase
              ) -> list[tuple[torch.Tensor, int]]:
        key = (id(tokenizer), role, split)
        if key not in self._packed:
            if all(t is not tokenizer for t in self._seen):
                self._seen.append(tokenizer)
            self._packed[key] = [pack(per[split], tokenizer, self.cfg.seq_len)
                                 for per in self.corpora[role].docs]
        return self._packed[key]

    def _mixture(self, role: str, split: str, tokenizer: PreTrainedTokenizerBase,
                 share: float = 1.0) -> list[tuple[torch.Tensor, float]]:
        """Every source's windows, weighted by `share` x its weight in the corpus."""
        corpus = self.corpora[role]
        total = sum(corpus.weights)
        packed = self._pack(role, split, tokenizer)
        for i, (windows, tokens) in enumerate(packed):
            if len(windows) == 0:
                raise ConfigError(
                    f"data.{role}[{i}] ({corpus.labels[i]}) is too small: its {split} split "
                    f"has {len(corpus.docs[i][split])} documents, {tokens} tokens, not one "
                    f"window of data.seq_len={self.cfg.seq_len}; valid: more documents or a "
                    f"smaller seq_len")
        return [(w, share * x / total) for (w, _), x in zip(packed, corpus.weights, strict=True)]

    def batches(self, role: str, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                seed: int, rank: int = 0) -> BatchFn:
        def stream(parts: list[tuple[torch.Tensor, float]], tag: str) -> WindowBatches:
            return WindowBatches(Mixture(parts), batch_size, seed, rank, tag)

        fw = self.cfg.forget_weight
        if role == "gold":
            return stream(self._mixture("retain", "train", tokenizer), "gold-")
        if role == "unlearn":
            return UnlearnBatches(
                stream(self._mixture("forget", "train", tokenizer), "unlearn-forget-"),
                stream(self._mixture("retain", "train", tokenizer), "unlearn-retain-"), rank)
        if role == "distill" and "distill" in self.corpora:
            return stream(self._mixture("distill", "train", tokenizer), "distill-")
        if role in ("base", "distill"):
            return stream(self._mixture("forget", "train", tokenizer, fw)
                          + self._mixture("retain", "train", tokenizer, 1 - fw), f"{role}-")
        raise ValueError(f"unknown data role '{role}'")

    def _attack_role(self) -> str:
        return "attack" if "attack" in self.corpora else "forget"

    def attack_batches(self, attack: AttackConfig, tokenizer: PreTrainedTokenizerBase,
                       seed: str) -> AttackBatches:
        share = retain_share(self, attack)
        forget = Mixture(self._mixture(self._attack_role(), "attack", tokenizer))
        retain = (Mixture(self._mixture("retain", "attack", tokenizer))
                  if share > 0 else None)
        n_retain = round(attack.batch_size * share)
        return AttackBatches(forget, retain, attack.batch_size - n_retain, n_retain, seed)

    def paper_retain_fraction(self) -> float:
        """0: the authors' language attack trains on the forget language only."""
        return 0.0

    def attack_knobs(self) -> dict[str, dict[str, Any]]:
        """None beyond the search's own (the forget / retain share is one of them)."""
        return {}

    def check_attack(self, attack: AttackConfig, data: Sequence[AttackBatches], steps: int,
                     tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        """Refuse an attack without forget-domain windows or with evaluated documents;
        describe its data (sources, split sizes, windows it trains on) for relearn.json."""
        n_forget = sum(b.n_forget for b in data) * steps
        n_retain = sum(b.n_retain for b in data) * steps
        if n_forget == 0 and not attack.allow_no_forget:
            raise ConfigError(
                f"the attack data holds no forget-domain windows (attack.retain_fraction="
                f"{retain_share(self, attack):g}, attack.batch_size={attack.batch_size}): a "
                f"relearning attack must train on forget-domain data. Valid: retain_fraction "
                f"< 1, or attack.allow_no_forget=true to attack without forget data on purpose")
        role = self._attack_role()
        roles = [role] + (["retain"] if retain_share(self, attack) > 0 else [])
        evaluated = self.corpora["forget"].ids("eval") | self.corpora["retain"].ids("eval")
        overlap = sum(len(self.corpora[r].ids("attack") & evaluated) for r in roles)
        if overlap:
            raise ConfigError(f"{overlap} attack documents are also evaluation documents; "
                              f"valid: attack data disjoint from the evaluated documents")

        def sizes(r: str) -> dict[str, int]:
            packed = self._pack(r, "attack", tokenizer)
            return {"documents": self.corpora[r].counts()["attack"],
                    "windows": sum(len(w) for w, _ in packed),
                    "tokens": sum(t for _, t in packed)}

        return {"forget_sources": self.corpora[role].labels,
                "retain_sources": self.corpora["retain"].labels if len(roles) > 1 else [],
                "split": "attack" if role == "forget" else "data.attack (whole corpus)",
                "split_sizes": {r: sizes(r) for r in roles},
                "window_counts": {"forget_windows": n_forget, "retain_windows": n_retain,
                                  "total_windows": n_forget + n_retain},
                "eval_disjoint_from_attack": True}

    # ------------------------------------------------------------ evaluation

    def eval_set(self, name: str, tokenizer: PreTrainedTokenizerBase) -> WindowEvalSet:
        """The first `eval_windows` eval windows of corpus `name`, sources interleaved;
        `<name>_val` (the stop rule's validation set) the next `eval_windows` ones, so it
        never holds a window the report or the attacks score."""
        role = name.removesuffix("_val")
        corpus, cap = self.corpora[role], self.cfg.eval_windows
        skip = cap if name.endswith("_val") else 0
        packed = self._pack(role, "eval", tokenizer)
        rows: list[torch.Tensor] = []
        keys: list[str] = []
        seen = 0
        for j in range(max(len(w) for w, _ in packed)):
            for (w, _), key in zip(packed, corpus.keys, strict=True):
                if j < len(w) and len(rows) < cap:
                    seen += 1
                    if seen > skip:
                        rows.append(w[j])
                        keys.append(key)
        if not rows and skip:
            raise ConfigError(
                f"data.{role} has no eval windows left for the stop rule's validation set "
                f"'{name}' after the {cap} evaluated ones; valid: more documents, a larger "
                f"data.eval_fraction or a smaller data.eval_windows")
        if not rows:
            raise ConfigError(
                f"data.{name} is too small: its eval split has {corpus.counts()['eval']} "
                f"documents, {sum(t for _, t in packed)} tokens, not one window of "
                f"data.seq_len={self.cfg.seq_len}; valid: more documents, a larger "
                f"data.eval_fraction or a smaller seq_len")
        return WindowEvalSet(name, torch.stack(rows), keys)

    def describe(self, role: str | None = None) -> dict[str, Any]:
        """Sources and documents per split; windows too when the tokenizer is ours; with
        `role`, the corpora that data role trains on."""
        c = self.cfg
        out: dict[str, Any] = {"benchmark": self.name, "tokenizer": c.tokenizer,
                               "seq_len": c.seq_len, "corpora": {}}
        tok = self.own_tokenizer()
        for name, corpus in self.corpora.items():
            d: dict[str, Any] = {"sources": corpus.labels,
                                 "documents": {s: n for s, n in corpus.counts().items() if n}}
            if tok is not None:
                d["windows"] = {s: sum(len(w) for w, _ in self._pack(name, s, tok))
                                for s in d["documents"]}
            out["corpora"][name] = d
        if tok is not None:
            out["vocab_size"] = len(tok)
        out["shared_forget_retain_documents"] = len(
            self.corpora["forget"].ids() & self.corpora["retain"].ids())
        if role is not None:
            out["trains_on"] = {"base": ["forget", "retain"], "gold": ["retain"],
                                "unlearn": ["forget", "retain"],
                                "distill": ["distill"] if "distill" in self.corpora
                                else ["forget", "retain"]}[role]
        return out
