"""Cached, resumable stage folders.

A stage's folder is `<run_dir>/stages/<name>-<hash>`, the hash taken over everything its
result depends on: its config sections, the seed and its inputs' keys. A folder with a
`summary.json` is finished and reused; `summary.json` is written last (atomically), so a
folder without one is unfinished and its stage resumes from `state/` if present.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml
from accelerate import PartialState

from .artifacts import config_hash, environment, write_json, write_text
from .config import RunConfig, to_dict


def run_dir(cfg: RunConfig) -> Path:
    return Path(cfg.out_dir) / cfg.name


def stage_key(name: str, depends_on: dict[str, Any]) -> str:
    return config_hash({"stage": name, **depends_on})


def stage_dir(cfg: RunConfig, name: str, depends_on: dict[str, Any]) -> Path:
    return run_dir(cfg) / "stages" / f"{name}-{stage_key(name, depends_on)}"


def is_done(d: Path) -> bool:
    return (d / "summary.json").is_file()


def reset(d: Path) -> None:
    """Forget a stage's result and its partial state (`--force`).

    Under a multi-process launch only the main process deletes, and every process waits
    for it, so none sees a half-deleted folder.
    """
    state = PartialState()
    if state.is_main_process and d.exists():
        shutil.rmtree(d)
    state.wait_for_everyone()


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
