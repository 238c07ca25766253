"""Unlearning: turn the base model into the teacher with one of the unlearning objectives.

    unlearn(cfg, base_dir) -> stage folder with model/ (HF folder) and summary.json

The objective is `cfg.unlearn.method` (see `undo.objectives`), trained through the one
training loop on the benchmark's nested batches `{"forget": ..., "retain": ...}` (role
`unlearn`: data the base model was trained on, never evaluation or attack data):
unlearning needs forget/retain labels, and these are the labelled data the paper
assumes. The summary holds every evaluation set's metrics before and after, steps,
tokens, FLOPs and wall time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..artifacts import is_done, model_folder, model_identity
from ..benchmarks import build_benchmark
from ..benchmarks.evaluate import evaluate
from ..config import RunConfig
from ..configlib import key_of, to_dict
from ..models import count_params, load_model, load_tokenizer
from ..objectives.unlearning import build_objective
from ..train import make_accelerator, train
from .base import StageResult, at_precision, precision_key, run_stage, source_of, stage_dir


def resolve_base(base_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """(HF model folder, identity for the stage key) of a model folder or a stage folder.

    A finished stage's model is identified by the stage's name, which already hashes
    everything it depends on (no weights to read); any other folder by its content
    (`artifacts.fingerprint`), so a copy gets the key its original has.
    """
    d = Path(base_dir).expanduser().resolve()
    if is_done(d) and (d / "model").is_dir():
        return d / "model", {"stage": d.name}
    if d.name == "model" and is_done(d.parent):  # a stage's model/ folder
        return d, {"stage": d.parent.name}
    folder = model_folder(d, "base model folder")
    return folder, model_identity(folder)


def unlearn_key(cfg: RunConfig, base_identity: dict[str, Any]) -> dict[str, Any]:
    return {"base": base_identity, "seed": cfg.seed, "data": key_of(cfg.data),
            "unlearn": to_dict(cfg.unlearn), **precision_key(cfg)}


def unlearn_dir(cfg: RunConfig, base_dir: str | Path) -> Path:
    _, ident = resolve_base(base_dir)
    return stage_dir(cfg, f"unlearn-{cfg.unlearn.method}", unlearn_key(cfg, ident))


def default_base(cfg: RunConfig) -> Path:
    """The study's own base model (pretrained, or reused from its cached stage)."""
    from .pretrain import pretrain

    return pretrain(cfg, "base")


def unlearn(cfg: RunConfig, base_dir: str | Path | None = None, force: bool = False) -> Path:
    """Unlearn `base_dir` (default: the study's base model); returns the stage folder."""
    objective = build_objective(cfg.unlearn)  # bad method args fail before any work
    base = Path(base_dir) if base_dir is not None else default_base(cfg)
    model_dir, ident = resolve_base(base)
    key = unlearn_key(cfg, ident)
    d = stage_dir(cfg, f"unlearn-{cfg.unlearn.method}", key)
    if not force and is_done(d):
        return d
    bench = build_benchmark(cfg.data)
    tokenizer = load_tokenizer(model_dir)
    model = load_model(model_dir)
    if hasattr(objective, "prepare"):
        # Layer indices etc. are checked against the model before anything is written.
        objective.prepare(model)

    def work() -> StageResult:
        acc = make_accelerator(cfg.device, cfg.report_to, d)
        optim = cfg.unlearn
        batches = bench.batches("unlearn", tokenizer, optim.batch_size, seed=cfg.seed,
                                rank=acc.process_index)
        before = evaluate(model, bench, tokenizer)

        def evaluate_during(m: torch.nn.Module) -> dict[str, float]:
            return evaluate(m, bench, tokenizer, sets=("retain", "forget"))

        result = train(model, objective, batches, optim, d,
                       evaluate=evaluate_during if optim.eval_every
                       else None, accelerator=acc, desc=f"unlearn {optim.method}",
                       progress=cfg.progress, sharding=cfg.sharding)
        unlearned = acc.unwrap_model(model)
        for p in unlearned.parameters():  # RMU froze some; the saved model is an ordinary one
            p.requires_grad_(True)
        after = evaluate(unlearned, bench, tokenizer)
        return StageResult({
            "stage": f"unlearn-{optim.method}",
            "method": optim.method,
            "base": str(model_dir),
            "before": before,
            "after": after,
            "retain_ratio": _ratio(after[bench.retain_metric.name],
                                   before[bench.retain_metric.name]),
            **result.cost(),
            "params": count_params(unlearned),
            "evals": result.evals,
        }, unlearned, tokenizer, acc, source=source_of(model_dir))

    return run_stage(d, key, at_precision(cfg, work), force=force)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None
