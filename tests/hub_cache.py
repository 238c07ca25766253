"""A hub model in a local hub cache, laid out as huggingface_hub downloads one
(`models--ORG--NAME/refs/main` -> commit, `snapshots/<commit>/` files), so that hub-id
code paths run offline (HF_HUB_OFFLINE=1) against the real huggingface_hub and
transformers resolution."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from undo.config import ModelConfig
from undo.models import build_model, save_model
from undo.tokenizers import build_char_tokenizer


def put_in_hub_cache(model_dir: Path, repo_id: str, cache: Path) -> str:
    """Copy a save_pretrained folder into `cache` as hub model `repo_id`; its commit."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, repo / "snapshots" / commit, dirs_exist_ok=True)
    return commit


def micro_hub_model(tmp: Path, repo_id: str = "undo-test/micro") -> tuple[Path, str]:
    """A micro model with the arithmetic benchmark's tokenizer, cached as `repo_id`:
    (the cache folder, its commit)."""
    tok = build_char_tokenizer()
    folder = save_model(build_model(ModelConfig(preset="micro"), tok, seed=0), tok,
                        tmp / "micro-model")
    cache = tmp / "hub"
    return cache, put_in_hub_cache(folder, repo_id, cache)


def offline_env(cache: Path) -> dict[str, str]:
    """Environment of a subprocess that reads the hub from `cache` only."""
    import os

    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
