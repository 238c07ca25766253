"""Cached teacher outputs: run the frozen teacher over the distillation data once.

The teacher and the data (`batches(step, micro)`, deterministic) are fixed across an
α × seed sweep, so its outputs are too: computing them in every run is waste. The cache
stores, for every counted next-token position of every batch (see
`objectives.distill_kl.next_token_mask`), the teacher's tempered log-probs:

- `full`: all V log-probs (exact; for small vocabularies),
- `topk`: the k largest log-probs, their token ids and log(1 − Σ top-k) (the remaining
  mass), for large vocabularies; the KL from it is a lower bound of the exact one.

Layout: `<root>/<key>/chunk-<rank>-<c>.safetensors`, one file per `chunk_steps` optimizer
steps, written atomically with its manifest (`undo.integrity.write_file`) the first time a
run needs it, and checked whole when loaded (a damaged chunk is rebuilt and reported). A
run that stops early so builds only what it used, and a longer budget extends a shorter
one (batch s does not depend on the budget, so `steps` is not in the key). The key hashes
the teacher's weights (content), the data config and seed, the batch shape, the mode, k
and the temperature: not the student, its init or its seed, so every student of a study
distilling one teacher on one data order (`distill.data_order: shared`) reads one cache.

Concurrent runs (two workers of a study distilling from one teacher at once) share it
chunk by chunk: a missing chunk is built under that chunk's lock (`stage_lock`), and a
run that finds the lock held waits and then reads the other's chunk, so each chunk is
built once and no reader sees a chunk whose manifest another writer is replacing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from .. import integrity
from ..artifacts import config_hash, stage_lock
from ..compute import forward_flops, matmul_params
from ..objectives.distill_kl import forward_logits, freeze, next_token_mask

Batch = dict[str, Any]


@torch.inference_mode()
def teacher_targets(teacher: torch.nn.Module, batch: Batch, mode: str, k: int,
                    temperature: float) -> dict[str, torch.Tensor]:
    """The cached form of the teacher's outputs on one batch (CPU tensors, packed rows)."""
    dev = next(teacher.parameters()).device
    ids, am = batch["input_ids"].to(dev), batch["attention_mask"].to(dev)
    logits = forward_logits(teacher, ids, am)  # (B, T, V)
    rows = logits[next_token_mask(am)]  # (N, V), row-major over (b, t)
    logp = torch.log_softmax(rows.float() / temperature, dim=-1)
    if mode == "full":
        return {"teacher_logprobs": logp.cpu()}
    k = min(k, logp.size(-1))
    top, idx = logp.topk(k, dim=-1)  # (N, k)
    rest = torch.logsumexp(logp.scatter(1, idx, float("-inf")), dim=-1)  # log(1 − Σ top)
    return {"teacher_topk_idx": idx.int().cpu(), "teacher_topk_logp": top.cpu(),
            "teacher_rest_logp": rest.cpu()}


class TeacherCache:
    """Lazily built, chunked on-disk cache of a teacher's outputs over `batches`."""

    def __init__(self, root: str | Path, teacher: torch.nn.Module,
                 batches: Callable[[int, int], Batch], *, key: dict[str, Any],
                 mode: str = "full", k: int = 64, temperature: float = 1.0,
                 grad_accum: int = 1, chunk_steps: int = 20, rank: int = 0) -> None:
        if mode not in ("full", "topk"):
            raise ValueError(f"cache mode must be 'full' or 'topk', got {mode!r}")
        self.teacher = freeze(teacher)
        self.batches = batches
        self.mode, self.k, self.temperature = mode, k, temperature
        self.grad_accum, self.chunk_steps, self.rank = grad_accum, chunk_steps, rank
        full_key = {**key, "mode": mode, "k": k if mode == "topk" else None,
                    "temperature": temperature, "grad_accum": grad_accum,
                    "chunk_steps": chunk_steps}
        self.dir = Path(root) / f"teacher-{config_hash(full_key)}"
        self._loaded: tuple[int, dict[str, torch.Tensor]] | None = None
        self._n_teacher = matmul_params(teacher)
        # What this object spent building chunks (0 when every chunk was reused), and
        # the chunks it found damaged and rebuilt (file name -> what was wrong).
        self.rebuilt: dict[str, str] = {}
        self.built_chunks = 0
        self.build_positions = 0
        self.build_time = 0.0

    @property
    def build_flops(self) -> float:
        return forward_flops(self._n_teacher, self.build_positions)

    def _path(self, chunk: int) -> Path:
        return self.dir / f"chunk-{self.rank}-{chunk:05d}.safetensors"

    def _build(self, chunk: int) -> dict[str, torch.Tensor]:
        t0 = time.perf_counter()
        tensors: dict[str, torch.Tensor] = {}
        for step in range(chunk * self.chunk_steps, (chunk + 1) * self.chunk_steps):
            for micro in range(self.grad_accum):
                batch = self.batches(step, micro)
                self.build_positions += batch["input_ids"].numel()
                for name, t in teacher_targets(self.teacher, batch, self.mode, self.k,
                                               self.temperature).items():
                    tensors[f"{step}.{micro}.{name}"] = t.contiguous()
        integrity.write_file(self._path(chunk), save(tensors))  # with its manifest
        self.built_chunks += 1
        self.build_time += time.perf_counter() - t0
        return tensors

    def _read(self, chunk: int, report: bool = True) -> dict[str, torch.Tensor] | None:
        """The chunk from disk, or None if it is missing or damaged (reported when
        `report`: the read that decides to rebuild it, under the chunk's lock)."""
        path = self._path(chunk)
        if not path.is_file():
            return None
        try:  # every byte checked: a chunk is read whole anyway (docs/integrity.md)
            return load(integrity.read_file(path))
        except integrity.IntegrityError as e:  # derived data: rebuilt, and reported
            if report:
                integrity.report_rebuild("teacher cache chunk", e, "rebuilding it from "
                                         "the teacher")
                self.rebuilt[path.name] = str(e)
            return None

    def _chunk(self, chunk: int) -> dict[str, torch.Tensor]:
        if self._loaded is not None and self._loaded[0] == chunk:
            return self._loaded[1]
        # A finished chunk is never rewritten: read without the lock. A damaged one is
        # not reported here but by the read under the lock, which rebuilds it (or finds
        # that another run rebuilt it meanwhile): one line per damaged chunk, not two.
        tensors = self._read(chunk, report=False)
        if tensors is None:
            with self._lock(chunk):
                tensors = self._read(chunk)  # another run may have built it meanwhile
                if tensors is None:
                    tensors = self._build(chunk)
        self._loaded = (chunk, tensors)  # one chunk in memory at a time
        return tensors

    def _lock(self, chunk: int) -> AbstractContextManager[None]:
        # One lock per chunk index, the same path on every rank (only the main process
        # locks; the ranks of a launch build their own files together).
        return stage_lock(self.dir / f"chunk-{chunk:05d}", quiet=True)

    def fill(self, steps: int) -> None:
        """Build (or find) every chunk covering steps 0..steps−1 now."""
        for c in range((steps + self.chunk_steps - 1) // self.chunk_steps):
            if not self._path(c).is_file():
                with self._lock(c):
                    if not self._path(c).is_file():
                        self._build(c)

    def targets(self, step: int, micro: int = 0) -> dict[str, torch.Tensor]:
        tensors = self._chunk(step // self.chunk_steps)
        prefix = f"{step}.{micro}."
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


class CachedBatches:
    """`batches(step, micro)` plus the teacher's cached targets for that batch."""

    def __init__(self, batches: Callable[[int, int], Batch], cache: TeacherCache) -> None:
        self.batches, self.cache = batches, cache

    def __call__(self, step: int, micro: int = 0) -> Batch:
        batch = dict(self.batches(step, micro))
        targets = self.cache.targets(step, micro)
        n = int(next_token_mask(batch["attention_mask"]).sum())
        rows = next(iter(targets.values())).size(0)
        if rows != n:  # a stale or foreign cache: never distill from misaligned targets
            raise RuntimeError(f"teacher cache {self.cache.dir} has {rows} rows for batch "
                               f"({step}, {micro}) with {n} positions; delete that folder")
        batch.update(targets)
        return batch
