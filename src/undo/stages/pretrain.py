"""Pretraining: the base model (retain + forget) and the gold standard (retain only).

The gold standard is the paper's "data filtering" model: the same recipe on data without
the forget operations, with the base model's steps and batch size (`gold_recipe`); so it
sees more retain tokens than the base model did (the paper replaced forget data with
other text; we have none). Equal retain tokens was tried and fails here, see
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from ..artifacts import fingerprint, is_done
from ..benchmarks import build_benchmark
from ..benchmarks.evaluate import evaluate
from ..config import ModelConfig, RunConfig
from ..configlib import key_of, to_dict
from ..models import (
    count_params,
    load_pretrained,
    model_key,
    new_model,
    stage_tokenizer,
)
from ..objectives import LOSSES
from ..runtime import device_name
from ..train import make_accelerator, train
from .base import (
    StageResult,
    at_precision,
    precision_key,
    run_stage,
    source_of,
    stage_dir,
)

Which = Literal["base", "gold"]


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
    model = model_key(cfg.model)
    return {"which": which, "seed": cfg.seed, "model": model, "data": key_of(cfg.data),
            "pretrain": recipe, **precision_key(cfg)}


def pretrain_dir(cfg: RunConfig, which: Which) -> Path:
    return stage_dir(cfg, f"pretrain-{which}", pretrain_key(cfg, which))


def pretrain(cfg: RunConfig, which: Which = "base", force: bool = False) -> Path:
    """Train (or reuse) one pretrained model; returns its stage folder (model in `model/`).

    With `model.name_or_path` the base model is that model, imported (saved as
    safetensors, evaluated), not trained; a gold standard is then pretrained from a
    random init of its architecture.
    """
    if which == "base" and cfg.model.is_pretrained():
        return import_model(cfg, None, "base", force)
    d = pretrain_dir(cfg, which)

    def work() -> StageResult:
        bench = build_benchmark(cfg.data)
        tokenizer = stage_tokenizer(cfg.model, bench)
        model = new_model(cfg.model, tokenizer, seed=cfg.seed)
        if which == "base":
            optim = cfg.pretrain
        else:
            steps, batch = gold_recipe(cfg)
            optim = replace(cfg.pretrain, steps=steps, batch_size=batch)
        acc = make_accelerator(cfg.device, cfg.report_to, d)
        batches = bench.batches(which, tokenizer, optim.batch_size, seed=cfg.seed,
                                rank=acc.process_index)

        def evaluate_during(m):  # retain/forget only while training; all sets at the end
            return evaluate(m, bench, tokenizer, sets=("retain", "forget"))

        result = train(model, LOSSES.get("ce")(), batches, optim, d, evaluate=evaluate_during,
                       accelerator=acc, desc=f"pretrain {which}", progress=cfg.progress,
                       sharding=cfg.sharding)
        model = acc.unwrap_model(model)
        return StageResult({
            "stage": f"pretrain-{which}",
            "data": bench.describe(which),
            "metrics": evaluate(model, bench, tokenizer),
            **result.cost(),
            "params": count_params(model),
        }, model, tokenizer, acc, source=source_of(cfg.model))

    return run_stage(d, pretrain_key(cfg, which), at_precision(cfg, work), force=force)


def _content_identity(model_cfg: ModelConfig) -> str | None:
    """What a local model's files hold (so an edited folder is imported anew); None for
    a hub id, which `model.revision` pins."""
    if model_cfg.gguf_file is not None:  # a quantized file: its name and size identify it
        folder = Path(model_cfg.name_or_path or ".").expanduser()
        f = folder / model_cfg.gguf_file if model_cfg.name_or_path else \
            Path(model_cfg.gguf_file).expanduser()
        return f"{f.name}:{f.stat().st_size}" if f.is_file() else None
    src = Path(model_cfg.name_or_path or "").expanduser()
    return fingerprint(src) if src.is_dir() else None


def import_dir(cfg: RunConfig, source: str | None, which: Which
               ) -> tuple[Path, ModelConfig | None, dict]:
    """Where `import_model` puts `source` (its stage folder, the model settings and the
    stage key); a finished stage folder given as `source` is its own folder (no config)."""
    src = Path(source or cfg.model.name_or_path or cfg.model.gguf_file or "").expanduser()
    if is_done(src) and (src / "model").is_dir():
        return src, None, {}
    model_cfg = cfg.model if source is None else replace(cfg.model, name_or_path=source,
                                                         gguf_file=None)
    key = {"which": f"import-{which}", "model": model_key(model_cfg), "data": key_of(cfg.data),
           "content": _content_identity(model_cfg), **precision_key(cfg)}
    return stage_dir(cfg, f"import-{which}", key), model_cfg, key


def import_model(cfg: RunConfig, source: str | None, which: Which, force: bool = False
                 ) -> Path:
    """An existing model as the study's base or gold standard: a stage folder holding it
    (saved as safetensors, with its tokenizer) and its metrics on the benchmark.

    `source` is a hub id, a model folder, or a finished stage folder (used as it is);
    None: the model `cfg.model` names (name_or_path / gguf_file). The stage is keyed by
    the model settings and, for a local folder, its content.
    """
    d, model_cfg, key = import_dir(cfg, source, which)
    if model_cfg is None:  # a finished stage folder, used as it is
        return d
    src = Path(source or cfg.model.name_or_path or cfg.model.gguf_file or "").expanduser()

    def work() -> StageResult:
        bench = build_benchmark(cfg.data)
        model, tokenizer = load_pretrained(model_cfg, device_name(cfg.device))
        # Nothing was trained here: no steps, tokens or FLOPs of ours to report (None, not 0,
        # so no compute fraction is ever taken against an imported gold standard).
        return StageResult({"stage": f"import-{which}", "source": str(src),
                            "data": bench.describe(), "metrics": evaluate(model, bench, tokenizer),
                            "steps": None, "tokens": None, "flops": None,
                            "params": count_params(model), "train_time_s": 0.0},
                           model, tokenizer, source=source_of(model_cfg))

    return run_stage(d, key, at_precision(cfg, work), force=force)
