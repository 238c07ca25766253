"""Cached, resumable stage folders.

A stage's folder is `<run_dir>/stages/<name>-<hash>`, the hash taken over everything its
result depends on: its config sections, the seed and its inputs' keys. A folder with a
`summary.json` is finished and reused; `summary.json` is written last (atomically), so a
folder without one is unfinished and its stage resumes from `state/` if present.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState

from ..artifacts import config_hash, environment, write_json, write_text
from ..config import ConfigError, RunConfig, dump_yaml, from_dict, to_dict


class StageBusyError(ConfigError):
    """Another live process is working in the stage folder (`stage_lock(wait=False)`)."""


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


# Settings that say where or how fast a run goes, not what it computes (no stage key
# holds them): a run folder's config.yaml may differ from the config in these alone.
# `name`/`out_dir` locate the folder; `study.stages` selects which stages run.
RESULT_NEUTRAL_KEYS = frozenset({"name", "out_dir", "device", "threads", "progress",
                                 "study.workers", "study.stages", "attack.workers",
                                 # where and how stages run, not what they compute
                                 "sharding", "study.executor", "study.ray_address",
                                 "study.resources"})


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       prefix: str = "") -> list[str]:
    """`key: old -> new` for every setting that differs, except RESULT_NEUTRAL_KEYS."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        key = f"{prefix}{k}"
        if key in RESULT_NEUTRAL_KEYS:
            continue
        a, b = old.get(k, "(absent)"), new.get(k, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{key}.")
        elif a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def write_run_config(cfg: RunConfig) -> Path:
    """Write `<run_dir>/config.yaml`, refusing to replace one of a different config.

    A run folder's summary, report and plots describe one config; a second config
    writing into the same folder would mix its results into them. Differences in
    RESULT_NEUTRAL_KEYS are allowed (the file then records the latest values).
    """
    path = run_dir(cfg) / "config.yaml"
    if path.is_file():
        new = to_dict(cfg)
        try:
            raw = yaml.safe_load(path.read_text())
            # Through the loader, so keys newer than the file get their defaults.
            old = to_dict(from_dict(raw))
        except (yaml.YAMLError, ConfigError) as e:
            diffs = [f"it no longer loads ({e})"]
        else:
            diffs = config_differences(old, new)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5
                                             else "")
            raise ConfigError(
                f"run folder {path.parent} holds the results of a different config "
                f"({shown}); its summary and report would mix two configs. Give this run "
                f"its own folder (name=NEW_NAME or out_dir=DIR), or delete {path} to "
                f"re-use the folder (its cached stages stay valid)")
    return write_text(path, dump_yaml(cfg))


def stage_key(name: str, depends_on: dict[str, Any]) -> str:
    return config_hash({"stage": name, **depends_on})


def stage_dir(cfg: RunConfig, name: str, depends_on: dict[str, Any]) -> Path:
    return run_dir(cfg) / "stages" / f"{name}-{stage_key(name, depends_on)}"


def is_done(d: Path) -> bool:
    return (d / "summary.json").is_file()


def lock_path(d: Path) -> Path:
    return d.with_name(f".{d.name}.lock")


# Stage folders this process holds locked: path -> (fd, pid). A nested `stage_lock` on a
# held folder (a stage function, then `train` or `reset` inside it) is a no-op; flock
# would otherwise block on the process's own lock (a second open file is a second lock).
# The pid tells a forked child that the entry is its parent's, not its own.
_held: dict[Path, tuple[int, int]] = {}


@contextmanager
def stage_lock(d: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold stage folder `d` for this process: the one writer while the block runs.

    If another live process holds it, wait for it (`wait=True`; the caller should then
    check `is_done(d)` again: the other process has usually finished the stage) or raise
    `StageBusyError` naming that process's pid. Under a multi-process launch
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
    state = PartialState()
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
            print(f"undo: waiting for pid {holder}, which is working in {d}",
                  file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        # The holder's pid, for the message another process shows (informative only:
        # the flock, not the file's content, is the lock).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[d] = (fd, os.getpid())
        try:
            state.wait_for_everyone()
            yield
        finally:
            del _held[d]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text or "unknown"


def reset(d: Path) -> None:
    """Forget a stage's result and its partial state (`--force`).

    Never under a live writer: if another process holds the stage, this raises
    `StageBusyError` instead of deleting its folder. Under a multi-process launch only
    the main process deletes, and every process waits for it, so none sees a
    half-deleted folder.
    """
    state = PartialState()
    with stage_lock(d, wait=False):
        if state.is_main_process and d.exists():
            shutil.rmtree(d)
    state.wait_for_everyone()


def reuse(d: Path, force: bool) -> bool:
    """Inside a stage's lock: forget its result when `force`, then whether it is done."""
    if force:
        reset(d)
    return is_done(d)


def finish(d: Path, summary: dict[str, Any], depends_on: dict[str, Any],
           device: str | None = None) -> dict[str, Any]:
    """Write config, provenance and, last, the summary that marks the stage finished."""
    write_text(d / "config.yaml", yaml.safe_dump(_plain(depends_on), sort_keys=False))
    write_json(d / "meta.json", environment(device))
    write_json(d / "summary.json", summary)
    return summary


def _plain(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return to_dict(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
