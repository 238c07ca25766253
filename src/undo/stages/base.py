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

import copy
import json
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
from ..config import RESULT_NEUTRAL_KEYS, ModelConfig, RunConfig, run_config
from ..configlib import ConfigError, differing, dump_yaml, to_dict
from ..integrity import take_spent, write_manifest
from ..models import save_model
from ..provenance import model_source
from ..runtime import compute_precision, process_state


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name



# Settings that choose which replicates and arms a study holds, not how any one model is
# made: a folder may run the study again with other values (another run seed, more
# distillation seeds or α, the Unlearn-and-Distill / oracle arms, other attack seeds).
# Their stages have their own cache keys, so nothing cached is overwritten.
REPLICATE_KEYS = frozenset({"seed", "study.seeds", "study.alphas", "study.unlearn_distill",
                            "study.oracles", "study.attack_search", "attack.seeds"})


def config_differences(old: dict[str, Any], new: dict[str, Any],
                       ignore: frozenset[str] = RESULT_NEUTRAL_KEYS) -> list[str]:
    """`key: old -> new` for every setting that differs, in key order, except those in
    `ignore` (a key there covers the keys under it)."""
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(differing([old, new], ignore).items())]


RUNS_FILE = "runs.jsonl"


def write_run_config(cfg: RunConfig) -> Path:
    """Write `<run_dir>/config.yaml` (the latest config run in the folder) once
    `check_run_folder` accepts it; `record_run` adds it to `<run_dir>/runs.jsonl` once the
    run has finished."""
    return write_text(check_run_folder(cfg), dump_yaml(cfg))


def check_run_folder(cfg: RunConfig) -> Path:
    """`<run_dir>/config.yaml`, if the folder may hold this config's study (it raises
    otherwise); writes nothing.

    A folder holds one study: the same data, model and recipes. Another run seed, more
    distillation seeds or α, or other arms are the same study (REPLICATE_KEYS) and are
    accepted; summary.json and the report then cover the latest run's config (earlier
    runs' stages stay cached: running their config again rebuilds their summary, and a
    config naming the union of their seeds and α summarises them together). A change
    of recipe, data or model is refused: the folder's models of the same name would
    mean different things from one run to the next. Differences in RESULT_NEUTRAL_KEYS
    never matter.
    """
    path = run_dir(cfg) / "config.yaml"
    new = _settled(to_dict(cfg))
    if path.is_file():
        try:
            old = loaded_config(yaml.safe_load(path.read_text()))
        except (yaml.YAMLError, ConfigError) as e:
            diffs = [f"it no longer loads ({e})"]
        else:
            diffs = config_differences(old, new, ignore=RESULT_NEUTRAL_KEYS | REPLICATE_KEYS)
        if diffs:
            shown = "; ".join(diffs[:5]) + (f"; and {len(diffs) - 5} more" if len(diffs) > 5
                                             else "")
            raise ConfigError(
                f"run folder {path.parent} holds the results of a different config "
                f"({shown}); its summary and report would mix two studies (only "
                f"{', '.join(sorted(REPLICATE_KEYS))} may change between runs of one "
                f"folder). Give this run its own folder (name=NEW_NAME or out_dir=DIR), or "
                f"delete {path} to re-use the folder (its cached stages stay valid)")
    return path


def record_run(cfg: RunConfig, timing: dict[str, Any] | None = None) -> None:
    """Append a finished run's config to `<run_dir>/runs.jsonl` (every config the folder
    ran, with the time and what changed since the run before, and `timing`: a study's
    wall time and stage schedule). Called at the end, so a run that stopped (bad input,
    a damaged file) leaves the record as it was."""
    path = run_dir(cfg) / RUNS_FILE
    new = _settled(to_dict(cfg))
    lines = path.read_text().splitlines() if path.is_file() else []
    changed = config_differences(json.loads(lines[-1])["config"], new) if lines else []
    _append_line(path, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        "config_hash": config_hash(new), "changed": changed, "config": new,
                        **({"timing": timing} if timing else {})})


def loaded_config(raw: Any) -> dict[str, Any]:
    """A run's config mapping (a folder's config.yaml, a summary's `config`) as this undo
    reads it, for `config_differences`: through the loader, so a setting newer than the
    mapping gets the value its run ran (`_as_run`) or its default, and `study.gold: auto`
    settled. Raises ConfigError for a mapping that no longer loads; `raw` is not changed."""
    return _settled(to_dict(run_config(_as_run(copy.deepcopy(raw)))))


def _as_run(raw: Any) -> Any:
    """A folder's config.yaml as its run ran it where a newer default differs: one
    written before `distill.data_order` existed distilled each seed on its own data order
    (`per_seed`), so a run with the new default (`shared`) is a different study there;
    one written before `attack.precision` existed attacked at the run's `precision`."""
    if isinstance(raw, dict) and isinstance(raw.get("distill"), dict):
        raw["distill"].setdefault("data_order", "per_seed")
    if isinstance(raw, dict) and isinstance(raw.get("attack"), dict):
        raw["attack"].setdefault("precision", raw.get("precision", "fp32"))
    return raw


def _settled(config: dict[str, Any]) -> dict[str, Any]:
    """`study.gold: auto` as the study runs it: a study either runs it as `pretrain` or
    stops before any work (undo.study.gold.resolve_gold), so the two name the same results."""
    if config["study"]["gold"] == "auto":
        config["study"]["gold"] = "pretrain"
    return config


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, appended in a single write (whole lines even if two runs append)."""
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True, default=str) + "\n")


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
