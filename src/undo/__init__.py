"""undo: robust unlearning by distillation (UNDO), with relearning attacks that prove it.

Public API (each stage is also a CLI command, `undo --help`):
    load_config(path, overrides)  -> RunConfig
    run_study(cfg)                -> the whole study (`undo run`): summary dict, report
    pretrain(cfg, which)          -> stage folder with `model/` and `summary.json`
    unlearn(cfg, base_dir)        -> stage folder with the unlearned `model/` and `summary.json`
    sweep(cfg, base_dir)          -> sweep folder with `sweep.json` (teacher selection)
    attack(cfg, model_dir)        -> attack folder with `relearn.json` (curves, worst case)
    evaluate_model(cfg, model_dir) -> metrics on the benchmark's eval sets
    robustness(p, p_unlearn, p_gold), compute_ratio(model, gold): the study's two ratios
    noise(cfg, model_dir, out_dir) -> NoiseReport; writes the shrink-and-perturbed model
    distill(cfg, teacher_dir, init=noised|random|PATH, alpha, seed, base_dir)
                                  -> stage folder with the student `model/` and `summary.json`
    write_report(run_dir)         -> plots/*.png and report.html from summary.json alone
    export_model(run_dir, out)    -> a run's model as a release folder with its model card

Names are imported on first use (PEP 562), so `import undo` and `undo --help` do not load
torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "ConfigError": "config", "RunConfig": "config", "load_config": "config",
    "attack": "attacks.grid", "evaluate_model": "attacks.grid",
    "robustness": "analysis.robustness", "compute_ratio": "analysis.robustness",
    "distill": "stages.distill", "noise": "stages.noise", "pretrain": "stages.pretrain",
    "sweep": "stages.sweep", "unlearn": "stages.unlearn",
    "run_study": "study.graph", "write_report": "report", "export_model": "release",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'undo' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
