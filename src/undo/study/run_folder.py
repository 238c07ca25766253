"""A run folder's bookkeeping: which configs may share it (`check_run_folder`), its
`config.yaml`, and `runs.jsonl`, the record of every config it ran and each study's
schedule. Stage folders inside it are `undo.stages.base`'s."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml

from .. import integrity
from ..artifacts import config_hash, stage_lock, write_text
from ..config import RESULT_NEUTRAL_KEYS, RunConfig, run_config
from ..configlib import ConfigError, differing, dump_yaml, to_dict
from ..stages.base import run_dir

# Settings that choose which replicates and arms a study holds, not how any one model is
# made: a folder may run the study again with other values (another run seed, more
# distillation seeds or α, the Unlearn-and-Distill / oracle arms, other attack seeds, other attacks of the registry with their options).
# Their stages have their own cache keys, so nothing cached is overwritten.
REPLICATE_KEYS = frozenset({"seed", "study.seeds", "study.alphas", "study.unlearn_distill",
                            "study.oracles", "study.attack_search", "attack.seeds",
                            "study.attacks", "attack.options"})


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
    # With its sidecar manifest, so damage is named as damage, not as another config.
    return integrity.write_file(check_run_folder(cfg), dump_yaml(cfg).encode())


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
        try:  # a folder of an older undo has no manifest: read as it is
            text = integrity.read_file(path) if integrity.sidecar(path).is_file() \
                else path.read_bytes()
        except integrity.IntegrityError as e:
            raise ConfigError(f"{e}: the run folder's config.yaml is damaged. Delete "
                              f"{path} to re-use the folder (its cached stages stay "
                              f"valid; the run writes it anew)") from None
        try:
            old = loaded_config(yaml.safe_load(text))
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
    # One writer, and the whole file replaced (temp + rename): a killed run leaves the
    # record as it was, never a half line that the next run could not read.
    with stage_lock(path, quiet=True):
        lines = path.read_text().splitlines() if path.is_file() else []
        changed = config_differences(json.loads(lines[-1])["config"], new) if lines else []
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "config_hash": config_hash(new), "changed": changed, "config": new,
                  **({"timing": timing} if timing else {})}
        write_text(path, "".join(f"{line}\n" for line in lines)
                   + json.dumps(record, sort_keys=True, default=str) + "\n")


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
