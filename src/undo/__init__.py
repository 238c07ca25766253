"""undo: robust unlearning by distillation (UNDO), with relearning attacks that prove it.

Public API (each stage is also a CLI command, `undo --help`):
    load_config(path, overrides)  -> RunConfig
    noise(cfg, model_dir, out_dir) -> NoiseReport; writes the shrink-and-perturbed model
    distill(cfg, teacher_dir, init=noised|random|PATH, alpha, seed, gold_dir)
                                  -> stage folder with the student `model/` and `summary.json`
    pretrain(cfg, which)          -> stage folder with `model/` and `summary.json`
    write_report(run_dir)         -> plots/*.png and report.html from summary.json alone
"""

from .config import ConfigError, RunConfig, load_config
from .distill import distill
from .noise import noise
from .pretrain import pretrain
from .report import write_report

__all__ = ["ConfigError", "RunConfig", "load_config", "pretrain", "write_report",
           "noise", "distill"]
__version__ = "0.1.0"
