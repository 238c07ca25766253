"""undo: robust unlearning by distillation (UNDO), with relearning attacks that prove it.

Public API (each stage is also a CLI command, `undo --help`):
    load_config(path, overrides)  -> RunConfig
    pretrain(cfg, which)          -> stage folder with `model/` and `summary.json`
"""

from .config import ConfigError, RunConfig, load_config
from .pretrain import pretrain

__all__ = ["ConfigError", "RunConfig", "load_config", "pretrain"]
__version__ = "0.1.0"
