"""Where a result and a model come from: undo's version and git commit, hub ids, the hub
commit of a model.

No torch here: `undo --version` answers without loading it. `artifacts.environment()`
writes these into every meta.json and summary.json.
"""

from __future__ import annotations

import re
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from .configlib import ConfigError


def undo_version() -> str:
    """The installed distribution's version."""
    try:
        return metadata.version("undo")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


@lru_cache(maxsize=1)
def git_commit() -> dict[str, Any] | None:
    """The commit of the git checkout this package runs from (`{"commit", "dirty"}`), or
    None when it does not run from one (an installed wheel).

    Only a checkout of undo itself counts: a package installed into some other project's
    repository must not report that project's commit, so the checkout's top level must
    hold this very package at src/undo."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(here), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "src" / "undo" != here:
        return None
    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def version_line() -> str:
    """`undo --version`: the version, and the commit when run from a checkout."""
    git = git_commit()
    if git is None:
        return f"undo {undo_version()}"
    dirty = ", uncommitted changes" if git["dirty"] else ""
    return f"undo {undo_version()} (git {git['commit'][:12]}{dirty})"


_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_commit(repo_id: str, revision: str | None = None) -> str | None:
    """The commit a hub id (at `revision`) resolves to in the local hub cache, or None when
    it is not cached (or not a hub id). Read from the cache only: no network call."""
    if revision is not None and _COMMIT.match(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(path, str):
        return None
    parts = Path(path).parts  # .../snapshots/<commit>/config.json
    return parts[-2] if len(parts) >= 3 and parts[-3] == "snapshots" else None


def model_source(name_or_path: str | None, revision: str | None = None,
                 gguf_file: str | None = None) -> dict[str, Any] | None:
    """Where a pretrained model came from: its hub id or folder and, for a hub id, the
    commit it resolved to (None where unknown). None for a preset built from config."""
    if name_or_path is None and gguf_file is None:
        return None
    local = name_or_path is None or Path(name_or_path).expanduser().exists()
    return {"name_or_path": name_or_path, "gguf_file": gguf_file, "revision": revision,
            "hub_commit": None if local else hub_commit(name_or_path, revision)}


# What `hub_snapshot` downloads of a hub repository: the model's config, safetensors
# weights and tokenizer files (not pickled duplicates, ONNX or GGUF exports).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a hub id ("org/name" or "name") rather than a path: no
    such file or folder, no path prefix, at most one slash."""
    return (not Path(name).expanduser().exists() and not name.startswith((".", "~"))
            and bool(_HUB_ID.match(name)))


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of hub model `repo_id`: from the hub cache, downloaded first if
    missing (with a progress bar). A missing repository, or one that is not cached when
    the hub cannot be reached (HF_HUB_OFFLINE=1, no network), is one ConfigError."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_FILES))
    except LocalEntryNotFoundError:
        raise ConfigError(
            f"{repo_id!r} is not a local folder, and as a hub model id it is not in the hub "
            f"cache and the hub cannot be reached (offline); valid: a save_pretrained "
            f"folder, a stage folder holding model/, or a hub id that is cached or "
            f"downloadable") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise ConfigError(f"cannot fetch hub model {repo_id!r}: {e}") from None
