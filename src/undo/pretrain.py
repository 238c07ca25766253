"""Pretraining: the base model (retain + forget) and the gold standard (retain only).

The gold standard is the paper's "data filtering" model: the same recipe on data without
the forget operations, with the base model's steps and batch size (`gold_recipe`); so it
sees more retain tokens than the base model did (the paper replaced forget data with
other text; we have none). Equal retain tokens was tried and fails here, see
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Literal

from .config import RunConfig, to_dict
from .data.arithmetic import ArithmeticBenchmark, Batches
from .evaluate import evaluate_arithmetic
from .models import build_model, count_params, model_shape, save_model
from .objectives import OBJECTIVES
from .stages import finish, is_done, reset, stage_dir
from .tokenizers import build_char_tokenizer
from .train import make_accelerator, train

Which = Literal["base", "gold"]
EVAL_SETS = ("retain", "forget", "retain_heldout", "forget_heldout")


def gold_recipe(cfg: RunConfig) -> tuple[int, int]:
    """(steps, batch size) of the gold standard: the base model's unless overridden."""
    p = cfg.pretrain
    return (p.steps if p.gold_steps is None else p.gold_steps,
            p.batch_size if p.gold_batch_size is None else p.gold_batch_size)


def pretrain_key(cfg: RunConfig, which: Which) -> dict:
    recipe = to_dict(cfg.pretrain)
    if which == "base":  # gold-only settings do not change the base model
        recipe = {k: v for k, v in recipe.items() if not k.startswith("gold_")}
    # The resolved shape, not only the preset's name: a preset that changes between
    # versions must not silently reuse a cached model of the old shape.
    model = {**to_dict(cfg.model), "shape": model_shape(cfg.model)}
    return {"which": which, "seed": cfg.seed, "model": model, "data": cfg.data,
            "pretrain": recipe}


def pretrain_dir(cfg: RunConfig, which: Which) -> Path:
    return stage_dir(cfg, f"pretrain-{which}", pretrain_key(cfg, which))


def pretrain(cfg: RunConfig, which: Which = "base", force: bool = False) -> Path:
    """Train (or reuse) one pretrained model; returns its stage folder (model in `model/`)."""
    d = pretrain_dir(cfg, which)
    if force:
        reset(d)
    if is_done(d):
        return d
    bench = ArithmeticBenchmark(cfg.data)
    tokenizer = build_char_tokenizer()
    model = build_model(cfg.model, tokenizer, seed=cfg.seed)
    ops = bench.ops if which == "base" else bench.retain_ops
    if which == "base":
        optim = cfg.pretrain
    else:
        steps, batch = gold_recipe(cfg)
        optim = replace(cfg.pretrain, steps=steps, batch_size=batch)
    acc = make_accelerator(cfg.device)
    batches = Batches(bench.stream(ops), tokenizer, optim.batch_size, seed=cfg.seed,
                      rank=acc.process_index)

    def evaluate(m):  # retain/forget only while training; all sets at the end
        return evaluate_arithmetic(m, bench, tokenizer, sets=("retain", "forget"))

    t0 = time.time()
    result = train(model, OBJECTIVES.get("ce")(), batches, optim, d, evaluate=evaluate,
                   accelerator=acc, desc=f"pretrain {which}", progress=cfg.progress)
    model = acc.unwrap_model(model)
    metrics = evaluate_arithmetic(model, bench, tokenizer, sets=EVAL_SETS)
    if acc.is_main_process:
        save_model(model, tokenizer, d / "model")
        finish(d, {
            "stage": f"pretrain-{which}",
            "ops": ops,
            "metrics": metrics,
            "steps": result.steps,
            "tokens": result.tokens,
            "flops": result.flops,
            "params": count_params(model),
            "train_time_s": result.wall_time,
            "wall_time_s": time.time() - t0,
        }, pretrain_key(cfg, which), device=str(acc.device))
    acc.wait_for_everyone()  # other ranks return only once the stage is on disk
    return d
