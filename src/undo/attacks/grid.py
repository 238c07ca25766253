"""Relearning attacks: finetune a copy of a model on forget-domain data and watch it relearn.

The adversary of Lee et al. 2025 ("Distillation Robustifies Unlearning", arXiv
2506.06278, §3): plain cross-entropy finetuning at a constant LR on the paper's attack
data for the benchmark (`attack.retain_fraction: null`, see `resolved`: arithmetic the
whole pretraining mix, language the forget language, WMDP forget and retain 50/50) or on
forget data only (`retain_fraction: 0`, the study's second attack),
forget performance evaluated every `eval_every` steps, over a grid of LRs × seeds; the
worst case over LRs at each step budget is what a model's robustness is judged by
(aggregation in `undo.analysis.robustness`). Each run goes through THE training loop
(`undo.train.train`, objective "ce").

Honesty checks, done before any training:
  - the attack data must hold forget-domain items (`ConfigError` otherwise, unless
    `attack.allow_no_forget`): an attack without them measures nothing about the
    forget domain;
  - attack items come from the benchmark's *attack* split and must be disjoint from
    every evaluated item, so a recovered answer is revived knowledge, not memorised.

Cost: the curve is measured on a fixed subset of the forget eval set; the full forget and
retain sets are scored only at the budgets, and the pre-attack (step 0) evaluation once
per model. Runs of the grid can go to parallel processes (`attack.workers`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .. import integrity
from ..analysis.robustness import aggregate, budget_key
from ..artifacts import (
    config_hash,
    is_done,
    json_text,
    model_folder,
    model_identity,
    write_json,
)
from ..benchmarks import build_benchmark
from ..benchmarks.base import Benchmark, retain_share, take
from ..benchmarks.evaluate import evaluate
from ..config import AttackConfig, OptimConfig, RunConfig
from ..configlib import ConfigError, key_of
from ..models import load_model, load_tokenizer, save_model
from ..objectives import LOSSES
from ..runtime import compute_precision, device_name, process_pool, torch_threads
from ..stages.base import (
    StageResult,
    at_precision,
    precision_key,
    run_dir,
    run_stage,
    source_of,
)
from ..train import make_accelerator, train

Metrics = dict[str, float]


# ----------------------------------------------------------------- model identity


def model_label(model_dir: str | Path) -> str:
    """A readable name: the folder, or its parent for a stage's `.../<stage>/model`."""
    d = Path(model_dir).resolve()
    if d.parent.name == "snapshots" and d.parent.parent.name.startswith("models--"):
        return d.parent.parent.name.removeprefix("models--")  # a hub snapshot: org--name
    return d.parent.name if d.name == "model" else d.name


def resolved(cfg: RunConfig) -> RunConfig:
    """`cfg` as the attack runs it: `attack.retain_fraction` a number (null is the
    benchmark's paper attack, `Benchmark.paper_retain_fraction`) and `precision` the
    attack's (`attack.precision`), so cache keys and records hold what ran."""
    a = cfg.attack
    if a.precision != cfg.precision:
        cfg = replace(cfg, precision=a.precision)
    if a.retain_fraction is not None:
        return cfg
    share = retain_share(build_benchmark(cfg.data), a)
    return replace(cfg, attack=replace(a, retain_fraction=share))


def attack_key(cfg: RunConfig, model_dir: str | Path) -> dict[str, Any]:
    # `workers` only decides where the grid's runs execute, not their results; a null
    # retain_fraction is keyed as the share it runs, `attack.precision` as the precision
    # it runs at (one place in the key, absent at fp32 as for every stage).
    # `family` and `options` belong to the registry's other attacks (undo.attacks.registry),
    # left out so every finetuning folder keeps the key it had before they existed.
    cfg = resolved(cfg)
    attack = {k: v for k, v in asdict(cfg.attack).items()
              if k not in ("workers", "precision", "family", "options")}
    return {"model": model_identity(model_dir), "attack": attack,
            "data": key_of(cfg.data), "seed": cfg.seed, **precision_key(cfg)}


def attack_dir(cfg: RunConfig, model_dir: str | Path, key: dict | None = None) -> Path:
    """The folder of the attack `cfg.attack.family` names on `model_dir` (a registered
    non-finetuning attack's folder comes from the registry)."""
    if cfg.attack.family != "finetune":
        from .registry import attack_folder

        return attack_folder(cfg, model_dir)
    key = key or attack_key(cfg, model_dir)
    return run_dir(cfg) / "attacks" / f"{model_label(model_dir)}-{config_hash(key)}"


# ------------------------------------------------------------------- evaluation


class AttackEval:
    """The forget and retain eval sets, and the fixed curve subset of the forget set."""

    def __init__(self, bench: Benchmark, tokenizer: PreTrainedTokenizerBase,
                 curve_items_per_op: int) -> None:
        self.forget = bench.eval_set("forget", tokenizer)
        self.retain = bench.eval_set("retain", tokenizer)
        self.retain_metric = bench.retain_metric.name
        self.forget_leaf = bench.forget_metric.name.split("/")[-1]
        self.curve_idx = self.forget.subset(curve_items_per_op)

    def curve(self, model: PreTrainedModel) -> Metrics:
        s = self.forget.score(model, self.curve_idx)
        return _prefixed(self.forget.metrics(s, groups=False), "forget")

    def full(self, model: PreTrainedModel) -> tuple[Metrics, Metrics]:
        """(metrics on the full sets, the curve point taken from the same scores)."""
        metrics, point, _ = self.full_with_units(model)
        return metrics, point

    def full_with_units(self, model: PreTrainedModel) -> tuple[Metrics, Metrics, dict]:
        """`full`, plus the forget metric per evaluated item (`metric_units`): what the
        report's intervals resample and its split-half LR choice reads."""
        f, r = self.forget.score(model), self.retain.score(model)
        point = _prefixed(self.forget.metrics(take(f, self.curve_idx), groups=False), "forget")
        return ({**_prefixed(self.forget.metrics(f), "forget"),
                 **_prefixed(self.retain.metrics(r), "retain")}, point,
                metric_units(f, self.forget_leaf))


def metric_units(scores: dict[str, torch.Tensor], leaf: str) -> dict[str, list[float]]:
    """The metric `leaf` (acc or ce) of an eval set as a ratio of per-item sums,
    metric = Σ num / Σ den, for any benchmark's scores: exact-match items (num correct,
    den 1), windows (hits or CE sums over tokens), lm-eval questions (correct or CE,
    den 1). `den` is left out where it is all ones."""
    if leaf == "acc":
        num = scores["correct"] if "correct" in scores else scores["hits"]
        den = None if "correct" in scores else scores["n_tok"]
    elif leaf == "ce":
        num = scores["ce_sum"] if "ce_sum" in scores else scores["ce"]
        den = scores.get("n_tok")
    else:
        raise ValueError(f"no per-item form of metric '{leaf}'; valid: acc, ce")
    out = {"num": [round(float(x), 6) for x in num.float().tolist()]}
    if den is not None:
        out["den"] = [float(x) for x in den.float().tolist()]
    return out


def _prefixed(metrics: Metrics, prefix: str) -> Metrics:
    return {f"{prefix}/{k}": v for k, v in metrics.items()}


# --------------------------------------------------------------------- one run


def _apply_lora(model: PreTrainedModel, a: AttackConfig, seed: int) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets: Any = "all-linear" if a.lora_targets == ["all-linear"] else list(a.lora_targets)
    lcfg = LoraConfig(r=a.lora_rank, lora_alpha=a.lora_alpha, target_modules=targets,
                      lora_dropout=0.0, bias="none")
    with torch.random.fork_rng(devices=[]):  # LoRA's A init: seeded, not global RNG
        torch.manual_seed(seed)
        try:
            return get_peft_model(model, lcfg)
        except ValueError as e:
            raise ConfigError(f"config key 'attack.lora_targets': got {a.lora_targets}; "
                              f"valid: ['all-linear'] or module names of the model ({e})"
                              ) from None


def attack_optim(a: AttackConfig, lr: float,
                 schedule: Mapping[str, Any] | None = None) -> OptimConfig:
    """The loop's settings for one attack run: constant LR, no warmup, no checkpoints,
    unless `schedule` overrides OptimConfig fields (the search's `schedule`,
    `warmup_steps`)."""
    o = OptimConfig(steps=a.steps, batch_size=a.batch_size, lr=lr, schedule="constant",
                    warmup_steps=0, weight_decay=a.weight_decay, betas=list(a.betas),
                    grad_clip=a.grad_clip, log_every=0, eval_every=a.eval_every,
                    checkpoint_every=0)
    return replace(o, **(schedule or {}))


def run_one(cfg: RunConfig, model_dir: str | Path, lr: float, seed: int,
            start: tuple[Metrics, Metrics] | None = None, threads: int = 0,
            save_to: Path | None = None, optimizer: str = "adamw",
            schedule: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One attack run: a fresh copy of the model, `attack.steps` CE steps at `lr`.

    `start` is the pre-attack (step 0) evaluation, shared by every run of a model;
    without it, it is computed here. The grid uses AdamW at a constant LR; the search
    (`undo.attacks.search`) also sets `optimizer` and `schedule` (see `attack_optim`).
    """
    t0 = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    cfg = resolved(cfg)
    a = cfg.attack
    bench = build_benchmark(cfg.data)
    tok = load_tokenizer(model_dir)
    model: torch.nn.Module = load_model(model_dir)
    ev = AttackEval(bench, tok, a.curve_items_per_op)
    if start is None:
        with compute_precision(cfg.precision, cfg.device):
            start = ev.full(model)
    full0, point0 = start
    if a.lora_rank:
        model = _apply_lora(model, a, seed)
    batches = bench.attack_batches(a, tok, seed=f"{cfg.seed}-{seed}")
    budgets = set(a.all_budgets())
    at_budget: dict[str, Metrics] = {budget_key(0): full0}
    curve: list[dict[str, float]] = []
    points: dict[int, Metrics] = {0: point0}
    units: dict[str, dict] = {}
    now = {"step": 0}

    def on_step(step: int, m: torch.nn.Module) -> None:
        now["step"] = step
        if step in budgets:  # full sets here; the curve point comes from the same scores
            at_budget[budget_key(step)], points[step], units[budget_key(step)] = \
                ev.full_with_units(m)

    def evaluate(m: torch.nn.Module) -> Metrics:
        step = now["step"]
        point = points[step] if step in points else ev.curve(m)
        curve.append({"step": step, **point})
        return point

    with compute_precision(cfg.precision, cfg.device):  # also in a pool worker
        res = train(model, LOSSES.get("ce")(), batches, attack_optim(a, lr, schedule),
                    None, evaluate=evaluate, eval_at_start=True, on_step=on_step,
                    accelerator=make_accelerator(cfg.device), progress=False,
                    optimizer_name=optimizer)
    if save_to is not None:
        final = model.merge_and_unload() if a.lora_rank else model
        save_model(final, tok, save_to)
    return {"lr": lr, "seed": seed, "curve": curve, "budgets": at_budget, "units": units,
            "steps": res.steps, "tokens": res.tokens, "flops": res.flops,
            "train_time_s": res.wall_time, "wall_time_s": time.perf_counter() - t0,
            "threads": torch.get_num_threads()}


def write_run(path: Path, run: dict[str, Any]) -> None:
    """A finished run's file in an attack folder's `runs/`, with its manifest (a resumed
    grid uses it only if intact)."""
    integrity.write_file(path, json_text(run).encode())


def _run_task(job: tuple) -> dict[str, Any]:  # top level: picklable for worker processes
    return run_one(*job)


def plan_workers(cfg: RunConfig, n_runs: int) -> tuple[int, int]:
    """(processes, threads each). `threads` caps the total CPU use; 0 means all cores.

    Why processes: a ~1M-parameter model's matmuls are too small to use two threads
    well, so two single-threaded runs side by side beat one two-threaded run
    (experiments/attack_speed.py). On a GPU runs stay in this process.
    """
    budget = cfg.threads or os.cpu_count() or 1
    if device_name(cfg.device) == "cuda":
        return 1, 0
    workers = cfg.attack.workers or min(n_runs, budget)
    workers = max(1, min(workers, n_runs))
    return workers, max(1, budget // workers)


def _map_runs(jobs: list[tuple], workers: int, threads: int, on_done: Callable[[dict], None],
              progress: bool) -> None:
    bar = tqdm(total=len(jobs), desc="attack runs", disable=not progress, leave=False)
    if workers == 1:
        for job in jobs:
            on_done(_run_task(job))
            bar.update(1)
    else:
        with process_pool(workers, threads) as pool:
            for out in pool.map(_run_task, jobs):
                on_done(out)
                bar.update(1)
    bar.close()


# ------------------------------------------------------------------- the stage


def attack(cfg: RunConfig, model_dir: str | Path, *, force: bool = False) -> Path:
    """Attack one saved model over the LR × seed grid (cached); returns the attack folder.

    Writes `relearn.json` (schema: docs/attacks.md) and `summary.json`; each finished
    run is kept in `runs/` so an interrupted grid resumes run by run.
    """
    t0 = time.time()
    cfg = resolved(cfg)
    model_dir = model_folder(model_dir)
    key = attack_key(cfg, model_dir)
    d = attack_dir(cfg, model_dir, key)
    if not force and is_done(d):
        return d
    # The honesty checks run before anything is written.
    a = cfg.attack
    bench = build_benchmark(cfg.data)
    tok = load_tokenizer(model_dir)
    data_info = bench.check_attack(
        a, [bench.attack_batches(a, tok, seed=f"{cfg.seed}-{s}") for s in a.seeds], a.steps, tok)
    ev = AttackEval(bench, tok, a.curve_items_per_op)

    def work() -> StageResult:
        workers, threads = plan_workers(cfg, len(a.lrs) * len(a.seeds))
        with torch_threads(threads):
            relearn = _attack_grid(cfg, model_dir, d, key, ev, data_info, workers, threads)
        relearn["wall_time_s"] = time.time() - t0
        write_json(d / "relearn.json", relearn)
        return StageResult(
            {"stage": "attack", "model": relearn["model"],
             "worst_case": {m: {k: {"value": w["value"], "lr": w["lr"], "std": w["std"]}
                                for k, w in wc.items()}
                            for m, wc in relearn["worst_case"].items()}},
            device=device_name(cfg.device), source=source_of(model_dir))

    return run_stage(d, key, at_precision(cfg, work), force=force)


def grid_runs(cfg: RunConfig) -> list[tuple[float, int]]:
    """The grid's (lr, seed) runs, in the order relearn.json lists them."""
    return [(lr, s) for lr in sorted(cfg.attack.lrs, reverse=True) for s in cfg.attack.seeds]


def run_name(lr: float, seed: int) -> str:
    """A run's file stem in the attack folder's `runs/`."""
    return f"lr{lr:g}-seed{seed}"


def attack_run(cfg: RunConfig, model_dir: str, lr: float, seed: int) -> Path:
    """One run of a model's grid, computed on its own (a part of the attack job that an
    executor may run elsewhere first); the attack stage finds it in `runs/` and runs only
    what is missing. Its step-0 evaluation is its own (the stage shares one)."""
    model_dir = str(model_folder(model_dir))
    out = attack_dir(cfg, model_dir) / "runs" / f"{run_name(lr, seed)}.json"
    if not out.exists():
        save_to = out.with_suffix("") / "model" if cfg.attack.save_weights else None
        rcfg = replace(cfg, progress=False)
        write_run(out, run_one(rcfg, model_dir, lr, seed, None, cfg.threads, save_to))
    return out


def _attack_grid(cfg: RunConfig, model_dir: Path, d: Path, key: dict, ev: AttackEval,
                 data_info: dict, workers: int, threads: int) -> dict[str, Any]:
    """Run the missing runs of the grid and aggregate all of them into relearn.json's dict."""
    a = cfg.attack
    start = ev.full(load_model(model_dir))  # step 0: the same for every run

    runs_dir = d / "runs"
    jobs, runs_read = [], {}
    for lr, s in grid_runs(cfg):
        f = runs_dir / f"{run_name(lr, s)}.json"
        if f.exists():  # a run an interrupted grid finished: used only if intact
            try:
                runs_read[lr, s] = json.loads(integrity.read_file(f))
                continue
            except integrity.IntegrityError as e:
                integrity.report_rebuild("attack run file", e, "running it again")
        save_to = runs_dir / run_name(lr, s) / "model" if a.save_weights else None
        jobs.append((cfg, str(model_dir), lr, s, start, threads, save_to))

    def on_done(run: dict) -> None:
        runs_read[run["lr"], run["seed"]] = run
        write_run(runs_dir / f"{run_name(run['lr'], run['seed'])}.json", run)

    _map_runs(jobs, workers, threads, on_done, cfg.progress)
    runs = [runs_read[lr, s] for lr, s in grid_runs(cfg)]
    budgets = a.all_budgets()
    relearn = {
        "schema": "undo.relearn/1",
        "model": {"label": model_label(model_dir), "path": str(Path(model_dir).resolve()),
                  "identity": key["model"]},
        "attack": asdict(a),
        "lrs": sorted(a.lrs, reverse=True), "seeds": list(a.seeds), "budgets": budgets,
        "data": {**data_info,
                 "eval_items": {"forget": len(ev.forget), "retain": len(ev.retain),
                                "curve": len(ev.curve_idx)}},
        "start": start[0],
        **aggregate(runs, budgets, retain=ev.retain_metric),
        "runs": runs,
        "workers": workers, "threads_per_worker": threads,
    }
    return relearn


def evaluate_model(cfg: RunConfig, model_dir: str | Path,
                   sets: Sequence[str] | None = None) -> Metrics:
    """Metrics of any saved model on the benchmark's eval sets (`undo eval`)."""
    model_dir = model_folder(model_dir)
    bench = build_benchmark(cfg.data)
    with compute_precision(cfg.precision, cfg.device):
        return evaluate(load_model(model_dir), bench, load_tokenizer(model_dir), sets)
