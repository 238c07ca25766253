"""The tiny study the whole-command tests share (tests/suites/test_kill.py, test_integrity.py):
the smoke config made smaller still, and how two runs' summaries are compared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "arithmetic" / "smoke.yaml"
NAME = "arithmetic-smoke"
# Tiny but with many checkpoints (every 2-3 steps) and two teacher-cache chunks (20 steps
# each), so every kill point has something to resume from.
SETTINGS = [
    "threads=1", "progress=false", "data.eval_items_per_op=8",
    "pretrain.steps=20", "pretrain.batch_size=16", "pretrain.warmup_steps=2",
    "pretrain.eval_every=10", "pretrain.checkpoint_every=2", "pretrain.log_every=1",
    "unlearn.steps=12", "unlearn.batch_size=8", "unlearn.eval_every=2",
    "unlearn.checkpoint_every=2", "unlearn.log_every=1",
    "distill.steps=25", "distill.batch_size=8", "distill.stop=budget", "distill.eval_every=5",
    "distill.checkpoint_every=3", "distill.log_every=1", "distill.teacher_cache=full",
    "attack.steps=4", "attack.budgets=[0,4]", "attack.eval_every=2", "attack.batch_size=8",
    "attack.curve_items_per_op=2", "attack.seeds=[0,1]",
    "study.alphas=[0.5]", "study.seeds=[0]", "study.gold=none", "study.unlearn_distill=false",
    "study.oracles=false", "study.workers=1",
    # One attack per model keeps the kill points few; both attacks: tests/study/test_pipeline.py.
    "study.attacks=[paper]",
]
# Fields that differ between two runs of one command: timings, paths, and what the
# teacher cache spent building (a resumed run reuses the chunks built before the kill; a
# run that found a chunk damaged rebuilt it).
VOLATILE = {"wall_time_s", "train_time_s", "time", "environment", "tok_per_s", "stage_dir",
            "relearn_json", "torch_threads", "threads", "path", "base", "teacher",
            "cache_dir", "built_chunks", "rebuilt_chunks", "build_flops", "build_time_s",
            "out_dir"}


def strip(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def same_summary(got: Path, want: Path) -> None:
    assert strip(json.loads(got.read_text())) == strip(json.loads(want.read_text()))


def train_micro(tokenizer: Any, bench: Any, out: Path, stop_at: int | None = None,
                steps: int = 6, model: Any = None) -> Any:
    """`steps` steps of a micro model (`model`, or a new one of seed 0) with checkpoints
    every 2; `stop_at`: interrupted right after that step. Returns train()'s result."""
    from undo.benchmarks.arithmetic.benchmark import ItemBatches
    from undo.config import ModelConfig, OptimConfig
    from undo.models import build_model
    from undo.objectives import LOSSES
    from undo.train import train

    def on_step(step: int, _: Any) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    cfg = OptimConfig(steps=steps, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1)
    if model is None:
        model = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    return train(model, LOSSES.get("ce")(),
                 ItemBatches(bench.stream(bench.ops), tokenizer, 4, seed=0),
                 cfg, out, progress=False, on_step=on_step)
