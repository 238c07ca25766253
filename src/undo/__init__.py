"""undo: robust unlearning by distillation (UNDO), with relearning attacks that prove it.

Public API (each stage is also a CLI command, `undo --help`):
    load_config(path, overrides)  -> RunConfig
    pretrain(cfg, which)          -> stage folder with `model/` and `summary.json`
    write_report(run_dir)         -> plots/*.png and report.html from summary.json alone
"""

from .config import ConfigError, RunConfig, load_config
from .pretrain import pretrain
from .report import write_report

__all__ = ["ConfigError", "RunConfig", "load_config", "pretrain", "write_report"]
__version__ = "0.1.0"
