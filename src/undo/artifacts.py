"""Atomic file writes and the provenance written beside every result."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

PACKAGES = ("undo", "torch", "transformers", "accelerate", "tokenizers", "safetensors",
            "peft", "datasets", "lm_eval")


def write_text(path: str | Path, text: str) -> Path:
    """Write via a temp file and rename, so a reader never sees half a file.

    A failed write (disk full, an interrupt) removes its temp file: the folder is left
    as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


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


def environment(device: str | torch.device | None = None, world_size: int = 1) -> dict[str, Any]:
    """Versions, device and host facts that a number may depend on."""
    return {
        "versions": versions(),
        "device": str(device) if device is not None else "cpu",
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
