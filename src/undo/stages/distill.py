"""Distill-on-outputs: the "DO" of UNDO, and every other distillation of the study.

    distill(cfg, teacher_dir, init=...) -> stage folder with model/ and summary.json

The student imitates a frozen teacher (forward KL on every non-pad next-token position,
`objectives.distill_kl`) on the *unlabeled* pretraining mix (all operations; no
forget/retain labels are used), or with `distill.inputs: filtered` (ours) on the gold
standard's forget-free data only. Student initialisations:

- `noised`: a shrink-and-perturbed copy of the teacher, θ = (1−α)θ_T + αβN (UNDO);
- `random`: a fresh random init of the teacher's architecture (Unlearn-and-Distill);
- a model folder: any checkpoint (oracle matching: gold standard into the base model).

Stopping: the full `distill.steps` budget, or as soon as the student recovers the
teacher's retain performance (`distill.stop`, checked every `distill.eval_every` steps;
the LR schedule always spans the full budget, as in the paper). Compute is recorded as
optimizer steps, tokens and FLOPs (fractions of the gold standard's are taken in the
study summary).

The data order depends on the run seed only (`distill.data_order: shared`, `data_seed`):
every student of a study, every α and seed, distills on identical batches, so one teacher
cache serves them all and its disk does not grow with seeds; seeds differ in noise draw /
init and attack seeds. `per_seed` shifts the order by the distillation `seed` too (as the
authors' seeds do), at one cache per seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..artifacts import config_hash, fingerprint, model_folder
from ..benchmarks import build_benchmark
from ..benchmarks.evaluate import evaluate
from ..compute import forward_flops, matmul_params, train_flops
from ..config import DistillConfig, RunConfig
from ..configlib import ConfigError, key_of, to_dict
from ..models import (
    count_params,
    load_model,
    load_tokenizer,
    reinit_like,
    vocab_check,
)
from ..objectives.distill_kl import DistillKL
from ..sharding import hold_frozen, resolve
from ..train import make_accelerator, train
from .base import (
    StageResult,
    at_precision,
    precision_key,
    run_dir,
    run_stage,
    source_of,
    stage_dir,
)
from .noise import noised_copy
from .teacher_cache import CachedBatches, TeacherCache

FULL_CACHE_MAX_VOCAB = 4096

# The teacher's metrics, kept for the life of the process (a study's stage worker runs
# many distillations): every student of one teacher evaluates it on the same sets (14
# times in the default study). The key names the computation: the teacher's content
# fingerprint, the data section (which fixes the sets) and where and in what dtype it ran.
_TEACHER_METRICS: dict[tuple[str, ...], dict[str, float]] = {}


def group_mean(metrics: dict[str, float], key: str) -> float:
    """The mean of `key`'s per-group values (`retain_val/acc/add/word`, ...): each
    (operation, format) counts once, as in the authors' stop rule; `key` itself when the
    set has no groups."""
    parts = [v for k, v in metrics.items() if k.startswith(key + "/")]
    return sum(parts) / len(parts) if parts else metrics[key]


def recovered(metrics: dict[str, float], teacher: dict[str, float], rule: str,
              within: float, sets: tuple[str, str] = ("retain_val", "forget_val"),
              match_leaf: str = "acc") -> bool:
    """The stop rule, as the authors' code runs it (run_partial_distill_arithmetic.py,
    run_partial_distill_language.py), on the benchmark's validation `sets` (retain,
    forget), never on the sets the report quotes.

    retain_acc: absolute, the mean of the per-(operation, format) retain accuracies within
    `within` of the teacher's (0.05 in the paper); retain_ce: relative, retain CE at most
    (1 + within) × the teacher's; match: the retain and forget accuracies (CE for a CE
    benchmark: `match_leaf`) each within `within` (absolute) of the teacher's (oracle
    matching, where a base-model student starts with the teacher's retain ability but not
    its forget one).
    `budget` never stops early.
    """
    retain, forget = sets
    if rule == "retain_acc":
        key = f"{retain}/acc"
        return group_mean(metrics, key) >= group_mean(teacher, key) - within
    if rule == "match":
        return all(abs(metrics[f"{s}/{match_leaf}"] - teacher[f"{s}/{match_leaf}"]) <= within
                   for s in sets)
    if rule == "retain_ce":
        return metrics[f"{retain}/ce"] <= teacher[f"{retain}/ce"] * (1.0 + within)
    return False


def cache_mode(dcfg: DistillConfig, vocab_size: int) -> str:
    if dcfg.teacher_cache == "auto":
        return "full" if vocab_size <= FULL_CACHE_MAX_VOCAB else "online"
    return dcfg.teacher_cache


def data_seed(cfg: RunConfig, seed: int) -> int:
    """The distillation data order's seed: the run seed (`distill.data_order: shared`), or
    the run seed shifted by the distillation seed (`per_seed`; seed 0 keeps the run
    seed's order)."""
    return cfg.seed + seed if cfg.distill.data_order == "per_seed" else cfg.seed


def distill_key(cfg: RunConfig, teacher_fp: str, init: dict[str, Any], seed: int,
                base_fp: str | None) -> dict[str, Any]:
    # noise settings matter only for a noised init; keeping them out of the other keys
    # lets a random-init run be reused across noise sweeps.
    noise = to_dict(cfg.noise) if init["kind"] == "noised" else None
    dcfg = to_dict(cfg.distill)
    del dcfg["data_order"]  # keyed by the order it gives (below), not by the setting
    del dcfg["inputs"]
    key = {"teacher": teacher_fp, "init": init, "seed": seed, "run_seed": cfg.seed,
           "base": base_fp, "noise": noise, "distill": dcfg, "data": key_of(cfg.data)}
    # Every key before `distill.data_order` and `distill.inputs` implied the order run
    # seed + seed on the pretraining mix; each is named only where it differs, so a stage
    # whose batches did not change (seed 0, or any seed under `per_seed`, on the mix)
    # keeps its folder and is reused as it is.
    if data_seed(cfg, seed) != cfg.seed + seed:
        key["data_seed"] = data_seed(cfg, seed)
    if cfg.distill.inputs != "mix":
        key["inputs"] = cfg.distill.inputs
    return {**key, **precision_key(cfg)}


def inputs_role(dcfg: DistillConfig) -> str:
    """The benchmark data role the student distils on (`distill.inputs`): the pretraining
    mix's `distill` role, or the gold standard's forget-free `gold` role."""
    return "distill" if dcfg.inputs == "mix" else "gold"


def _init_identity(init: str, alpha: float) -> dict[str, Any]:
    if init == "noised":
        return {"kind": "noised", "alpha": alpha}
    if init == "random":
        return {"kind": "random"}
    return {"kind": "checkpoint", "fingerprint": fingerprint(model_folder(init, "--init"))}


def _label(init: dict[str, Any], seed: int) -> str:
    if init["kind"] == "noised":
        return f"distill-noised-a{init['alpha']:g}-s{seed}"
    if init["kind"] == "random":
        return f"distill-random-s{seed}"
    return f"distill-from-{init['fingerprint'][:8]}-s{seed}"


def distill_dir(cfg: RunConfig, teacher_dir: str | Path, *, init: str, seed: int,
                base_dir: str | Path | None = None
                ) -> tuple[Path, dict[str, Any], dict[str, Any], Path | None]:
    """Where `distill` puts this student: (stage folder, key, init identity, base model
    folder when the noise needs one). Reads the teacher's files (its fingerprint), not
    its weights into a model (`undo run --dry-run` uses it too)."""
    teacher_path = model_folder(teacher_dir, "teacher")
    init_id = _init_identity(init, cfg.noise.alpha)
    needs_base = init_id["kind"] == "noised" and cfg.noise.mask != "none"
    if needs_base and base_dir is None:
        raise ConfigError(f"noise.mask={cfg.noise.mask!r} needs the base model: pass --base")
    base_path = model_folder(base_dir, "--base") if needs_base and base_dir else None
    key = distill_key(cfg, fingerprint(teacher_path), init_id, seed,
                      fingerprint(base_path) if base_path else None)
    return stage_dir(cfg, _label(init_id, seed), key), key, init_id, base_path


def distill(cfg: RunConfig, teacher_dir: str | Path, *, init: str = "noised",
            seed: int | None = None, base_dir: str | Path | None = None,
            force: bool = False) -> Path:
    """Distill `teacher_dir` into a student (`init`: noised | random | a model folder).

    A noised student is noised at `cfg.noise.alpha`; `seed` (noise draw / random init)
    defaults to `cfg.seed`. `base_dir` (the model before unlearning) is needed for
    localized noise. Returns the stage folder; a finished one is reused. The summary
    records raw counts (steps, tokens, FLOPs with the teacher's forwards); fractions of
    the gold standard's compute are taken once, in the study summary (`study/summary.py`).
    """
    teacher_path = model_folder(teacher_dir, "teacher")
    seed = cfg.seed if seed is None else seed
    d, key, init_id, base_path = distill_dir(cfg, teacher_path, init=init, seed=seed,
                                             base_dir=base_dir)
    if init_id["kind"] == "checkpoint":
        # Distillation matches distributions id by id: the tokenizers must agree.
        vocab_check(load_tokenizer(teacher_path), load_tokenizer(model_folder(init, "--init")))
    run = _Run(cfg, d, key, teacher_path, init_id, init, seed, base_path)
    return run_stage(d, key, at_precision(cfg, lambda: _work(run)), force=force)


@dataclass(frozen=True)
class _Run:
    """One distillation, as `distill` resolved it before any work."""

    cfg: RunConfig
    folder: Path
    key: dict[str, Any]
    teacher_path: Path
    init_id: dict[str, Any]
    init: str
    seed: int
    base_path: Path | None


def _work(run: _Run) -> StageResult:
    """The stage's work, in order: load, hold the teacher, choose its outputs, train to
    the stop rule, evaluate, account."""
    cfg, dcfg = run.cfg, run.cfg.distill
    bench = build_benchmark(cfg.data)
    tokenizer = load_tokenizer(run.teacher_path)
    teacher = load_model(run.teacher_path)
    student, noise_report = _make_student(teacher, run.teacher_path, run.init_id, run.init,
                                          run.seed, cfg, run.base_path)
    acc = make_accelerator(cfg.device, cfg.report_to, run.folder)
    _check_sharding(cfg, acc)
    # Sharded under FSDP2, bfloat16 per rank under DDP on GPUs (undo.sharding).
    teacher = hold_frozen(teacher, acc, cfg.sharding)
    teacher_metrics = evaluate_teacher(teacher, bench, tokenizer, run.key,
                                       single=acc.num_processes == 1)
    batches, objective, cache = _teacher_outputs(run, teacher, bench, tokenizer, acc)
    stop = bench.stop_rule if dcfg.stop == "auto" else dcfg.stop
    evaluate_during, should_stop = _stop_rule(bench, tokenizer, teacher_metrics, stop, dcfg)
    result = train(student, objective, batches, dcfg, run.folder, evaluate=evaluate_during,
                   should_stop=should_stop, eval_at_start=should_stop is not None,
                   accelerator=acc, desc=_label(run.init_id, run.seed), progress=cfg.progress,
                   sharding=cfg.sharding)
    student = acc.unwrap_model(student)
    metrics = evaluate(student, bench, tokenizer)
    rule = _rule_args(bench)
    summary: dict[str, Any] = {
        "stage": "distill",
        "init": run.init_id["kind"],
        "init_from": None if run.init_id["kind"] != "checkpoint" else str(run.init),
        "alpha": run.init_id.get("alpha"),
        "beta": cfg.noise.beta if run.init_id["kind"] == "noised" else None,
        "seed": run.seed, "teacher": str(run.teacher_path),
        "teacher_fingerprint": run.key["teacher"],
        "inputs": dcfg.inputs,
        "metrics": metrics, "teacher_metrics": teacher_metrics,
        "stop": {"rule": stop, "within": dcfg.stop_within, "every": dcfg.eval_every,
                 "sets": list(bench.stop_sets)},
        "stopped_early": result.stopped_early, "steps": result.steps, "max_steps": dcfg.steps,
        # Did the student recover what the rule asks (with `budget`: the benchmark's
        # own rule, judged on the final metrics)? A student that did not is never
        # counted as a robust result (summary.json, report).
        "recovered": recovered(metrics, teacher_metrics,
                               bench.stop_rule if stop == "budget" else stop,
                               dcfg.stop_within, **rule),
        "tokens": result.tokens,
        **_compute(result, student, teacher, objective),
        "teacher_outputs": _cache_record(cache),
        "noise": noise_report.to_dict() if noise_report is not None else None,
        "params": count_params(student),
        "train_time_s": result.wall_time,
    }
    return StageResult(summary, student, tokenizer, acc, source=source_of(run.teacher_path))


def _check_sharding(cfg: RunConfig, acc: Any) -> None:
    if cfg.distill.logits == "chunked" and resolve(cfg.sharding, acc) == "fsdp":
        # The chunked KL applies the output projections itself, outside the models'
        # forwards, where FSDP2 holds only each rank's shard of them.
        raise ConfigError("distill.logits: got 'chunked' with FSDP2 sharding, which it "
                          "does not support yet; valid: distill.logits=full, or "
                          "sharding=ddp")


def _teacher_outputs(run: _Run, teacher: torch.nn.Module, bench: Any, tokenizer: Any,
                     acc: Any) -> tuple[Callable[[int, int], dict], DistillKL,
                                        TeacherCache | None]:
    """(batches, objective, cache): the teacher run online, or its outputs read from a
    cache built once per teacher, data and order (`distill.teacher_cache`)."""
    cfg, dcfg, key = run.cfg, run.cfg.distill, run.key
    batches: Callable[[int, int], dict] = bench.batches(
        inputs_role(dcfg), tokenizer, dcfg.batch_size, seed=data_seed(cfg, run.seed),
        rank=acc.process_index)
    mode = cache_mode(dcfg, teacher.get_output_embeddings().weight.size(0))
    if mode == "online":
        return batches, DistillKL(teacher, dcfg.temperature, dcfg.chunk_positions,
                                  dcfg.logits), None
    cache = TeacherCache(
        run_dir(cfg) / "cache", teacher, batches, mode=mode, k=dcfg.cache_topk,
        temperature=dcfg.temperature, grad_accum=dcfg.grad_accum, rank=acc.process_index,
        key={"teacher": key["teacher"], "data": key["data"], "seed": data_seed(cfg, run.seed),
             "batch_size": dcfg.batch_size,
             **{k: key[k] for k in ("inputs", "precision") if k in key}})
    objective = DistillKL(None, dcfg.temperature, dcfg.chunk_positions, dcfg.logits)
    return CachedBatches(batches, cache), objective, cache


def _stop_rule(bench: Any, tokenizer: Any, teacher_metrics: dict[str, float], stop: str,
               dcfg: DistillConfig) -> tuple[Callable, Callable | None]:
    """(what to evaluate at each check, when to stop: None under `budget`)."""

    def evaluate_during(m: torch.nn.Module) -> dict[str, float]:
        # Only what the stop rule reads: with checks every 20 steps, evaluating the
        # forget set too cost ~15% of a distillation. All sets are evaluated at the end.
        sets = bench.stop_sets if stop == "match" else bench.stop_sets[:1]
        return evaluate(m, bench, tokenizer, sets=sets)

    rule = _rule_args(bench)

    def should_stop(m: dict[str, float]) -> bool:
        return recovered(m, teacher_metrics, stop, dcfg.stop_within, **rule)

    return evaluate_during, (should_stop if stop != "budget" else None)


def _rule_args(bench: Any) -> dict[str, Any]:
    """What `recovered` reads of the benchmark: its stop sets and the retain metric's leaf."""
    return {"sets": bench.stop_sets, "match_leaf": bench.retain_metric.name.split("/")[-1]}


def _compute(result: Any, student: torch.nn.Module, teacher: torch.nn.Module,
             objective: DistillKL) -> dict[str, Any]:
    """Positions and FLOPs: train() counted (6·N_s + 2·extra)·positions."""
    n_s, n_t = matmul_params(student), matmul_params(teacher)
    per_pos = train_flops(n_s, 1) + 2.0 * objective.extra_forward_params
    positions = round(result.flops / per_pos) if per_pos else 0
    teacher_flops = forward_flops(n_t, positions)
    return {"positions": positions,
            "flops": result.flops,  # as run: student fwd+bwd (+ teacher fwd when online)
            "teacher_forward_flops": teacher_flops,
            # comparable between cached and online runs
            "flops_incl_teacher": train_flops(n_s, positions) + teacher_flops}


def _cache_record(cache: TeacherCache | None) -> dict[str, Any]:
    """How the teacher's outputs were had: online (no cache) or from the cache."""
    return {
        "mode": cache.mode if cache else "online",
        "cache_dir": str(cache.dir) if cache else None,
        "built_chunks": cache.built_chunks if cache else 0,
        # chunks found damaged and rebuilt (undo.integrity): name -> what was wrong
        "rebuilt_chunks": cache.rebuilt if cache else {},
        "build_flops": cache.build_flops if cache else 0.0,
        "build_time_s": cache.build_time if cache else 0.0,
    }


def evaluate_teacher(teacher: torch.nn.Module, bench: Any, tokenizer: Any,
                     key: dict[str, Any], single: bool = True) -> dict[str, float]:
    """`evaluate(teacher)`, computed once per process and teacher (`_TEACHER_METRICS`);
    a multi-process launch (a sharded or bf16-held teacher) always evaluates."""
    if not single:
        return evaluate(teacher, bench, tokenizer)
    p = next(teacher.parameters())
    memo = (key["teacher"], config_hash(key["data"]), str(p.device), str(p.dtype),
            key.get("precision"))
    if memo not in _TEACHER_METRICS:
        _TEACHER_METRICS[memo] = evaluate(teacher, bench, tokenizer)
    return dict(_TEACHER_METRICS[memo])


def _make_student(teacher: torch.nn.Module, teacher_path: Path, init_id: dict[str, Any],
                  init: str, seed: int, cfg: RunConfig, base_path: Path | None
                  ) -> tuple[torch.nn.Module, Any]:
    report = None
    if init_id["kind"] == "noised":
        base = load_model(base_path) if base_path is not None else None
        student, report = noised_copy(teacher, cfg.noise, seed, base=base)
    elif init_id["kind"] == "random":
        student = reinit_like(teacher, seed)
    else:
        student = load_model(model_folder(init, "--init"))
    v_s = student.get_output_embeddings().weight.size(0)
    v_t = teacher.get_output_embeddings().weight.size(0)
    if v_s != v_t:
        raise ConfigError(f"--init: the student's vocabulary ({v_s}) differs from the "
                          f"teacher's ({v_t}); valid: a model with the teacher's tokenizer")
    student.requires_grad_(True)
    student.train()
    return student, report
