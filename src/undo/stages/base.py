"""Cached, resumable stage folders, and the stage protocol (`run_stage`), written once.

A stage's folder is `<run_dir>/stages/<name>-<hash>`, the hash taken over everything its
result depends on: its config sections, the seed and its inputs' keys. A folder with a
`summary.json` is finished and reused; `summary.json` is written last (atomically), so a
folder without one is unfinished and its stage resumes from `state/` if present.

Every stage (pretrain, import, unlearn, distill, attack) is a function that computes its
key, validates its input (before any lock or file: bad input writes nothing) and hands its
work to `run_stage`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..artifacts import (
    config_hash,
    environment,
    is_done,
    json_text,
    read_json,
    stage_lock,
    write_json,
    write_text,
)
from ..config import ModelConfig, RunConfig
from ..configlib import to_dict
from ..integrity import take_spent, write_manifest
from ..models import save_model
from ..provenance import model_source
from ..runtime import compute_precision, process_state


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def precision_key(cfg: RunConfig) -> dict[str, Any]:
    """What a stage's or cache's key adds for `precision`: nothing at fp32 (so every key
    made before the setting existed stays valid), the setting otherwise."""
    return {} if cfg.precision == "fp32" else {"precision": cfg.precision}


def at_precision(cfg: RunConfig, work: Callable[[], StageResult]) -> Callable[[], StageResult]:
    """`work` run inside `compute_precision` (the stage's training, teacher outputs and
    evaluations alike); saving and the summary happen outside, in `run_stage`."""

    def run() -> StageResult:
        with compute_precision(cfg.precision, cfg.device):
            return work()

    return run


def stage_key(name: str, depends_on: dict[str, Any]) -> str:
    return config_hash({"stage": name, **depends_on})


def stage_dir(cfg: RunConfig, name: str, depends_on: dict[str, Any]) -> Path:
    return run_dir(cfg) / "stages" / f"{name}-{stage_key(name, depends_on)}"


def reset(d: Path) -> None:
    """Forget a stage's result and its partial state (`--force`).

    Never under a live writer: if another process holds the stage, this raises
    `StageBusyError` instead of deleting its folder. Under a multi-process launch only
    the main process deletes, and every process waits for it, so none sees a
    half-deleted folder.
    """
    state = process_state()
    with stage_lock(d, wait=False):
        if state.is_main_process and d.exists():
            shutil.rmtree(d)
    state.wait_for_everyone()


def reuse(d: Path, force: bool) -> bool:
    """Inside a stage's lock: forget its result when `force`, then whether it is done."""
    if force:
        reset(d)
    return is_done(d)


@dataclass
class StageResult:
    """What a stage's work hands back to `run_stage`: its summary (without wall time) and,
    for a stage that makes a model, the model and tokenizer to save in `model/`.
    `accelerator` (a training stage's): only its main process writes, every rank waits."""

    summary: dict[str, Any]
    model: Any = None
    tokenizer: Any = None
    accelerator: Any = None
    device: str | None = None
    # Where the stage's input model came from (`source_of`), for its meta.json.
    source: dict[str, Any] | None = None


def run_stage(d: Path, key: dict[str, Any], work: Callable[[], StageResult], *,
              force: bool = False) -> Path:
    """The stage protocol: one writer (`stage_lock`), a finished folder reused (`force`:
    recomputed), `work()` run, then on the main process the model saved and `finish`
    writing config, provenance and, last, the summary; other ranks return only once the
    stage is on disk. Returns the stage folder."""
    with stage_lock(d):
        if reuse(d, force):
            return d
        t0 = time.time()
        out = work()
        acc = out.accelerator
        if acc is None or acc.is_main_process:
            if out.model is not None:
                save_model(out.model, out.tokenizer, d / "model")
            device = out.device or (str(acc.device) if acc is not None else None)
            finish(d, {**out.summary, "wall_time_s": time.time() - t0}, key, device=device,
                   source=out.source)
        if acc is not None:
            acc.wait_for_everyone()
    return d


def source_of(model: str | Path | ModelConfig | None) -> dict[str, Any] | None:
    """Where a stage's input model came from, for its meta.json: for a model config, its
    hub id or folder (and resolved hub commit); for a stage's `model/` folder, what that
    stage's meta.json recorded (so an UNDO student names the hub commit its base had)."""
    if model is None:
        return None
    if isinstance(model, ModelConfig):
        return model_source(model.name_or_path, model.revision, model.gguf_file)
    d = Path(model).resolve()
    if d.parent.name == "snapshots" and d.parent.parent.name.startswith("models--"):
        # A hub cache snapshot (a hub id given to `undo attack`): the folder is the commit.
        repo = d.parent.parent.name.removeprefix("models--").replace("--", "/")
        return {"name_or_path": repo, "gguf_file": None, "revision": None,
                "hub_commit": d.name}
    if d.name == "model" and (d.parent / "meta.json").is_file():
        return read_json(d.parent / "meta.json").get("model_source")
    return model_source(str(d))


def finish(d: Path, summary: dict[str, Any], depends_on: dict[str, Any],
           device: str | None = None, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write config, provenance (versions, undo's commit, `source`: where the stage's
    model came from), the manifest of every file (the summary's bytes included,
    undo.integrity) and, last, the summary that marks the stage finished."""
    write_text(d / "config.yaml", yaml.safe_dump(_plain(depends_on), sort_keys=False))
    # The integrity work this process did since its last stage finished: this stage's
    # input checks, cache chunks, checkpoints (experiments/integrity_overhead.py sums it).
    write_json(d / "meta.json", {**environment(device, model=source),
                                 "integrity_seconds": take_spent()})
    text = json_text(summary)
    write_manifest(d, pending={"summary.json": text.encode()})
    # The manifest's own cost cannot be in the files it covers; the benchmark times it
    # on the finished folder, so it is not carried into the next stage's count either.
    take_spent()
    write_text(d / "summary.json", text)
    return summary


def _plain(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return to_dict(x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x
