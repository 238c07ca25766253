"""undo: robust unlearning by distillation (UNDO), with relearning attacks that prove it.

Public API (each stage is also a CLI command, `undo --help`):
    load_config(path, overrides)  -> RunConfig
    run_study(cfg)                -> the whole study (`undo run`): summary dict, report
    pretrain(cfg, which)          -> stage folder with `model/` and `summary.json`
    unlearn(cfg, base_dir)        -> stage folder with the unlearned `model/` and `summary.json`
    sweep(cfg, base_dir)          -> sweep folder with `sweep.json` (teacher selection)
    attack(cfg, model_dir)        -> attack folder with `relearn.json` (curves, worst case)
    evaluate_model(cfg, model_dir) -> metrics on the four eval sets
    robustness(p, p_unlearn, p_gold), compute_ratio(model, gold): the study's two ratios
    noise(cfg, model_dir, out_dir) -> NoiseReport; writes the shrink-and-perturbed model
    distill(cfg, teacher_dir, init=noised|random|PATH, alpha, seed, gold_dir)
                                  -> stage folder with the student `model/` and `summary.json`
    write_report(run_dir)         -> plots/*.png and report.html from summary.json alone
"""

from .attack import attack, evaluate_model
from .config import ConfigError, RunConfig, load_config
from .distill import distill
from .noise import noise
from .pipeline import run_study
from .pretrain import pretrain
from .report import write_report
from .robustness import compute_ratio, robustness
from .sweep import sweep
from .unlearn import unlearn

__all__ = ["ConfigError", "RunConfig", "load_config", "pretrain", "write_report",
           "attack", "evaluate_model", "robustness", "compute_ratio",
           "noise", "distill", "run_study", "unlearn", "sweep"]
__version__ = "0.1.0"
