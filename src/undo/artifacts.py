"""How results are written and guarded: atomic writes, provenance, and stage locks.

Every file a later stage trusts is written through `write_text` (temp + rename), and every
stage folder has one writer at a time (`stage_lock`)."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .configlib import ConfigError
from .integrity import check_model, check_stage, write_bytes
from .provenance import git_commit, hub_snapshot, is_hub_id, undo_version
from .runtime import host, load_average, process_state

PACKAGES = ("undo", "torch", "transformers", "accelerate", "tokenizers", "safetensors",
            "peft", "datasets", "lm_eval")


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (`integrity.write_bytes`): a reader never sees half a file."""
    return write_bytes(path, text.encode())


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json_text(obj))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return dataclasses.asdict(x)
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, torch.Tensor):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def config_hash(obj: Any, n: int = 10) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def load_sample() -> dict[str, Any]:
    """The load average now, with the time: the start of a timed piece of work, for
    `environment(started=...)`."""
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "1_5_15_min": load_average()}


# The start of this process's work, for records that name no start of their own: an
# experiment script or a worker process imports undo before it times anything.
_PROCESS_START = load_sample()


def environment(device: str | torch.device | None = None, world_size: int = 1,
                model: dict[str, Any] | None = None,
                started: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, the undo commit, device and host facts that a number may depend on;
    `model`: where the stage's pretrained model came from (`model_source`), if known.

    `host`: the CPU (model, core count, affinity, bfloat16 in hardware) and GPU names
    (`runtime.host`); `load_average`: the machine's load at the start of the work the
    record covers and at the time of writing, so a timing taken beside other jobs reads
    as such. The start is `started` (a `load_sample()` taken when the work began), else
    the moment this process took the lock of the stage folder it is writing (a stage's
    meta.json: the stage's start), else when this process imported undo. Never part of a
    cache key: a stage's key is its config.yaml; meta.json is read for `model_source`
    only."""
    start, what = started, "given"
    if start is None:
        start, what = _lock_sample(), "stage start"
    if start is None:
        start, what = _PROCESS_START, "process start"
    return {
        "versions": versions(),
        "undo": {"version": undo_version(), "git": git_commit()},
        "model_source": model,
        "device": str(device) if device is not None else "cpu",
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "host": host(),
        "load_average": {"start": {**start, "is": what}, "end": load_sample()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class StageBusyError(ConfigError):
    """Another live process is working in the stage folder (`stage_lock(wait=False)`)."""


def lock_path(d: Path) -> Path:
    return d.with_name(f".{d.name}.lock")


# Stage folders this process holds locked: path -> (fd, pid). A nested `stage_lock` on a
# held folder (a stage function, then `train` or `reset` inside it) is a no-op; flock
# would otherwise block on the process's own lock (a second open file is a second lock).
# The pid tells a forked child that the entry is its parent's, not its own.
_held: dict[Path, tuple[int, int]] = {}
# And when each was taken (`load_sample()`), in order: the latest one this process holds
# is the start of the stage whose meta.json `environment` writes.
_taken: dict[Path, tuple[int, dict[str, Any]]] = {}


def _lock_sample() -> dict[str, Any] | None:
    mine = [sample for pid, sample in _taken.values() if pid == os.getpid()]
    return mine[-1] if mine else None


@contextmanager
def stage_lock(d: str | Path, wait: bool = True, quiet: bool = False) -> Iterator[None]:
    """Hold stage folder `d` for this process: the one writer while the block runs.

    If another live process holds it, wait for it (`wait=True`; the caller should then
    check `is_done(d)` again: the other process has usually finished the stage) or raise
    `StageBusyError` naming that process's pid; `quiet`: wait without saying so (short
    waits that are part of sharing, such as a teacher cache's chunks). Under a multi-process launch
    (torchrun) every rank must call it, and only the main process locks: the ranks of
    one launch are one writer, and they enter the block together once it holds the lock
    (so all of them see the same `is_done`).

        with stage_lock(d, wait=True):
            if force:
                reset(d)
            if is_done(d):
                return d
            ...  # train into d, then finish(d, ...)
    """
    d = Path(d).resolve()
    held = _held.get(d)
    if held is not None and held[1] == os.getpid():
        yield
        return
    state = process_state()
    if not state.is_main_process:
        _held[d] = (-1, os.getpid())  # nesting is then the same on every rank
        try:
            state.wait_for_everyone()  # in only once the main process holds the lock
            yield
        finally:
            del _held[d]
        return
    path = lock_path(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise StageBusyError(
                    f"stage folder {d} is in use by another process (pid {holder}); wait "
                    f"for it to finish (its result is then reused) or stop it") from None
            if not quiet:
                print(f"undo: waiting for pid {holder}, which is working in {d}",
                      file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The holder's pid, for the message another process shows (informative only:
        # the flock, not the file's content, is the lock).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[d] = (fd, os.getpid())
        _taken[d] = (os.getpid(), load_sample())
        try:
            state.wait_for_everyone()
            yield
        finally:
            del _held[d]
            _taken.pop(d, None)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text or "unknown"


# ------------------------------------------------------------------- model folders

WEIGHT_SUFFIXES = (".safetensors", ".bin")


def is_done(d: Path) -> bool:
    """A stage folder is finished once its summary.json exists (it is written last). A
    finished folder is checked against its manifest first (`integrity.check_stage`): a
    damaged one raises IntegrityError, so it is never reused (callers test `force`
    before calling this)."""
    if not (d / "summary.json").is_file():
        return False
    check_stage(d)
    return True


def model_folder(path: str | Path, what: str = "model") -> Path:
    """THE resolver of a model argument: a Hugging Face model folder, a stage folder
    holding one in `model/` (then that one), or a hub id (its snapshot in the hub cache,
    downloaded if missing). `what` names the argument in the error."""
    d = Path(path).expanduser()
    if (d / "model" / "config.json").is_file() and not (d / "config.json").is_file():
        d = d / "model"
    if (d / "config.json").is_file():
        check_model(d)  # a stage's model/: before its bytes are fingerprinted or loaded
        return d
    if is_hub_id(str(path)):
        return hub_snapshot(str(path))
    raise ConfigError(f"{what} '{path}': no model there; valid: a Hugging Face model folder "
                      "(with config.json), a stage folder with model/, or a hub id (org/name)")


# Up to this many bytes of model files, a fingerprint hashes every byte (a 0.5M-param
# model: 2 MB, milliseconds). Above it, it hashes the safetensors headers in full and
# SAMPLE_BLOCKS evenly spaced blocks of every file: measured on a 381 MiB safetensors
# file in the page cache, 0.21 s for every byte vs 2.6 ms sampled; a 1B-param model
# (4 GB) would read for ~2 s warm and tens of seconds from a cold disk, on every
# distill call. Trade-off: two files with the same names, sizes,
# tensor layout and sampled bytes but a difference elsewhere get one fingerprint, so a
# model edited in place in a few unsampled weights would reuse the old teacher cache
# and distill stage. A retrained or unlearned model changes nearly every block, so
# sampling sees it; a copy keeps its fingerprint (no mtime: copies reuse caches).
FULL_HASH_MAX_BYTES = 256 << 20
SAMPLE_BLOCKS = 64
SAMPLE_BYTES = 64 << 10
_READ_BYTES = 4 << 20


def fingerprint(path: str | Path, length: int = 16) -> str:
    """sha256 (the first `length` hex digits) over a model folder's config and weight files (names and contents).

    THE identity of a model everywhere a cache key needs one (unlearn, distill, teacher
    cache, attack): content, not path or mtime, so a copied folder reuses every cache and
    a retrained one in the same place reuses none. Folders over FULL_HASH_MAX_BYTES are
    sampled (see above). Stage keys take 16 digits, attack keys all 64 (both as they
    were before the identities were merged, so no cached result is recomputed).
    """
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file()
                   and (f.suffix in WEIGHT_SUFFIXES or f.name == "config.json"))
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files):
        raise ConfigError(f"'{path}' holds no weights (*.safetensors or *.bin); valid: a "
                          "save_pretrained model folder")
    sample = sum(f.stat().st_size for f in files) > FULL_HASH_MAX_BYTES
    h = hashlib.sha256(b"sampled" if sample else b"")
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            if sample and f.name != "config.json":
                _hash_sampled(fh, f.stat().st_size, f.suffix == ".safetensors", h)
            else:
                for block in iter(lambda: fh.read(_READ_BYTES), b""):
                    h.update(block)
    return h.hexdigest()[:length]


def _hash_sampled(fh: BinaryIO, size: int, safetensors: bool, h: Any) -> None:
    """Size, the safetensors header (every tensor's name, dtype, shape and offsets) and
    SAMPLE_BLOCKS blocks spread evenly over the data after it."""
    h.update(size.to_bytes(8, "little"))
    start = 0
    if safetensors and size >= 8:
        head = fh.read(8)
        start = 8 + int.from_bytes(head, "little")
        h.update(head + fh.read(start - 8))
    span = max(0, size - start - SAMPLE_BYTES)
    for i in range(SAMPLE_BLOCKS):
        fh.seek(start + span * i // (SAMPLE_BLOCKS - 1))
        h.update(fh.read(SAMPLE_BYTES))


def model_identity(path: str | Path) -> dict[str, Any]:
    """What a result computed from a model depends on, for a cache key: its fingerprint."""
    return {"sha256": fingerprint(path, 64)}

