"""Process-wide settings applied once per command: threads, quiet libraries."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .config import RunConfig



def setup(cfg: RunConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    quiet()


def quiet() -> None:
    """Silence library chatter that is not ours (HF progress bars, shared-tensor notes)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*Removed shared tensor.*")
    import logging

    logging.getLogger("accelerate").setLevel(logging.ERROR)


def device_name(cfg: RunConfig) -> str:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"
