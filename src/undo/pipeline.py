"""The study as a graph of cached stages: `undo run`.

    pretrain base ─► unlearn (teacher) ─► distill into: random init (Unlearn-and-Distill)
    pretrain gold                                       noised copies, one per α × seed (UNDO)
    gold ─► distill into base / random init (oracle matching)
    every model ─► relearning attack grid ─► summary.json ─► plots, report.html

Each stage is a folder keyed by a hash of its config and inputs (see `stages.py`): a
finished one is reused, an interrupted one resumes, `force` re-runs named kinds.

Stages that do not depend on each other run as a *wave*; with `workers > 1` a wave's
stages run in separate processes of one torch thread each. A ~1M-parameter model keeps
two threads of one process poorly busy, so two single-threaded stages side by side
finish sooner on a 2-core machine (benchmarks/study_parallel.py measures it).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .artifacts import read_json, write_text
from .config import ConfigError, RunConfig, dump_yaml

# Stage kinds a user can name in `study.stages` or `--force`.
STAGE_KINDS = ("pretrain", "unlearn", "distill", "oracle", "attack")


@dataclass
class Model:
    """One model of the study, as the summary reports it."""

    name: str
    kind: str  # base | gold | unlearn_only | unlearn_distill | undo | oracle_base | oracle_random
    stage_dir: Path
    alpha: float | None = None
    seed: int | None = None
    attack_dir: Path | None = None

    @property
    def model_dir(self) -> Path:
        return self.stage_dir / "model"


@dataclass
class Job:
    """One stage call: `fn(cfg, *args, **kwargs)`, with `fn` importable in a worker."""

    label: str
    fn: Callable[..., Path]
    args: tuple = ()
    kwargs: dict | None = None


def _check_kinds(names: list[str], key: str) -> None:
    bad = [n for n in names if n not in STAGE_KINDS]
    if bad:
        raise ConfigError(f"{key}: got {bad}; valid stage kinds: {', '.join(STAGE_KINDS)}")


def _call(cfg: RunConfig, job: Job) -> Path:
    return job.fn(cfg, *job.args, **(job.kwargs or {}))


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)
    from . import runtime

    runtime.quiet()


def run_wave(cfg: RunConfig, jobs: list[Job], log: Callable[[str], None],
             workers: int | None = None) -> list[Path]:
    """Run independent stage jobs, in parallel processes when `study.workers > 1`."""
    workers = min(cfg.study.workers if workers is None else workers, len(jobs))
    if workers <= 1:
        out = []
        for job in jobs:
            t0 = time.time()
            out.append(_call(cfg, job))
            log(f"      {job.label}: {time.time() - t0:.0f}s")
        return out
    quiet = replace(cfg, progress=False)  # one bar per process would garble the terminal
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        futures = [pool.submit(_call, quiet, job) for job in jobs]
        t0 = time.time()
        out = []
        for job, fut in zip(jobs, futures, strict=True):
            out.append(fut.result())
            log(f"      {job.label}: done at +{time.time() - t0:.0f}s")
    return out


def run_study(cfg: RunConfig, *, force: list[str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every missing stage of the study; write summary.json, plots and report.html."""
    from .attack import attack
    from .distill import distill
    from .pretrain import pretrain
    from .stages import run_dir
    from .summary import build_summary, write_summary
    from .unlearn import unlearn

    force = list(force or [])
    _check_kinds(force, "--force")
    only = list(cfg.study.stages)
    _check_kinds(only, "study.stages")
    root = run_dir(cfg)
    write_text(root / "config.yaml", dump_yaml(cfg))
    forced = {k: k in force for k in STAGE_KINDS}
    t_start = time.time()

    def wave(title: str, kind: str, jobs: list[Job], workers: int | None = None) -> list[Path]:
        if only and kind not in only and kind != "pretrain":
            log(f"== {title}: skipped (study.stages)")
            return []
        log(f"== {title} ({len(jobs)} stage{'s' * (len(jobs) != 1)}, "
            f"+{(time.time() - t_start) / 60:.1f} min)")
        if forced[kind]:
            for job in jobs:
                job.kwargs = {**(job.kwargs or {}), "force": True}
        return run_wave(cfg, jobs, log, workers)

    base_dir, gold_dir = wave("pretraining", "pretrain", [
        Job("base (retain + forget)", pretrain, ("base",)),
        Job("gold standard (retain only)", pretrain, ("gold",)),
    ])
    models = [Model("base", "base", base_dir), Model("gold", "gold", gold_dir)]

    teachers = wave(f"unlearning ({cfg.unlearn.method})", "unlearn", [
        Job("teacher", unlearn, (base_dir / "model",)),
    ])
    if not teachers:
        raise ConfigError("study.stages: the study needs the 'unlearn' stage for a teacher")
    teacher_dir = teachers[0]
    models.append(Model("unlearn-only", "unlearn_only", teacher_dir))

    common = {"gold_dir": gold_dir, "base_dir": base_dir / "model"}
    seeds = cfg.study.seeds
    students: list[tuple[Model, Job]] = []
    for s in seeds if cfg.study.unlearn_distill else []:
        name = "unlearn-distill" + (f"-s{s}" if len(seeds) > 1 else "")
        students.append((Model(name, "unlearn_distill", Path(), seed=s), Job(
            f"Unlearn-and-Distill, seed {s}", distill, (teacher_dir / "model",),
            {"init": "random", "alpha": None, "seed": s, **common})))
    for a in cfg.study.alphas:
        for s in seeds:
            students.append((Model(f"undo-a{a:g}-s{s}", "undo", Path(), alpha=a, seed=s), Job(
                f"UNDO α={a:g}, seed {s}", distill, (teacher_dir / "model",),
                {"init": "noised", "alpha": a, "seed": s, **common})))
    for m, d in zip([m for m, _ in students],
                    wave("distillation (UNDO, Unlearn-and-Distill)", "distill",
                         [j for _, j in students]), strict=False):
        m.stage_dir = d
        models.append(m)

    if cfg.study.oracles:
        oracles = [
            (Model("oracle-base", "oracle_base", Path(), seed=seeds[0]),
             Job("gold -> base", distill, (gold_dir / "model",),
                 {"init": str(base_dir / "model"), "alpha": None, "seed": seeds[0], **common})),
            (Model("oracle-random", "oracle_random", Path(), seed=seeds[0]),
             Job("gold -> random init", distill, (gold_dir / "model",),
                 {"init": "random", "alpha": None, "seed": seeds[0], **common})),
        ]
        for m, d in zip([m for m, _ in oracles], wave("oracle matching", "oracle",
                                                      [j for _, j in oracles]), strict=False):
            m.stage_dir = d
            models.append(m)

    # The base model is a reference point, not a candidate: it is not attacked.
    targets = [m for m in models if m.kind != "base"]
    # One model at a time: each attack already spreads its LR grid over processes.
    attacked = wave("relearning attacks", "attack",
                    [Job(m.name, attack, (m.model_dir,)) for m in targets], workers=1)
    for m, d in zip(targets, attacked, strict=False):
        m.attack_dir = d

    summary = build_summary(cfg, models, wall_time_s=time.time() - t_start)
    write_summary(root, summary)
    from .report import write_report

    write_report(root)
    log(f"== done in {(time.time() - t_start) / 60:.1f} min: {root / 'summary.json'}")
    return summary


def load_summary(run: str | Path) -> dict[str, Any]:
    return read_json(Path(run) / "summary.json")
