"""The study as a graph of cached stages: `undo run`.

    pretrain base ─► unlearn (teacher) ─► distill into: random init (Unlearn-and-Distill)
    pretrain gold                                       noised copies, one per α × seed (UNDO)
    gold (+ base) ─► distill gold into base / into a random init (oracle matching)
    every model ─► relearning attack grid ─► summary.json ─► plots, report.html

Each stage is a folder keyed by a hash of its config and inputs (see `stages.py`): a
finished one is reused, an interrupted one resumes, `force` re-runs named kinds.

Scheduling: every stage is a task with dependencies; a task starts as soon as its inputs
exist, in list order (critical path first). With `study.workers > 1` tasks run in that
many processes of one torch thread each: a ~1M-parameter model keeps two threads of one
process poorly busy, so two single-threaded stages side by side finish sooner on a 2-core
machine, and the core the short gold pretraining frees is used for the gold's oracle and
attack while the base model is still training. Where tasks run is the executor's business
(`study.executor`: local processes or a Ray cluster; undo.study.executors).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..analysis.arms import ModelKind
from ..artifacts import is_done
from ..config import STAGE_KINDS, RunConfig
from ..configlib import ConfigError
from .attack_configs import attack_config, study_attacks
from .executors import make_executor
from .jobs import Job
from .specs import (
    Attack,
    Distill,
    Import,
    Model,
    ModelSpec,
    Pretrain,
    Replays,
    Search,
    Stage,
    Unlearn,
)


def folder_of(stage: Stage, inputs: dict[str, Path]) -> Path | None:
    """The folder a stage writes, or None where it cannot be told."""
    try:
        return stage.folder(inputs)
    except ConfigError:  # the stage itself reports what is wrong
        return None


def _check_kinds(names: list[str], key: str) -> None:
    bad = [n for n in names if n not in STAGE_KINDS]
    if bad:
        raise ConfigError(f"{key}: got {bad}; valid stage kinds: {', '.join(STAGE_KINDS)}")


def run_graph(cfg: RunConfig, stages: list[Stage], log: Callable[[str], None],
              force: set[str] | None = None, heartbeat_s: float = 60.0,
              schedule: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Run every stage once its dependencies are done; returns stage name -> folder.

    Ready stages start in list order, on the executor `study.executor` names: with
    `local`, `study.workers > 1` runs them in that many single-threaded processes,
    otherwise one after another in this process; with `ray`, as Ray tasks.
    `schedule`, if given, receives one entry per stage as it finishes: its name, kind,
    start/end in seconds since the graph started, its folder and the load average then
    (experiments/study_profile.py reads them).
    """
    names = {t.name for t in stages}
    for t in stages:
        missing = [d for d in t.deps if d not in names]
        if missing:
            raise ValueError(f"stage {t.name} depends on unknown stages {missing}")
    if not stages:
        return {}
    run = _Scheduler(cfg, stages, log, force or set(), schedule)
    try:
        while run.pending or run.running:
            run.launch()
            if not run.running:
                if run.pending:
                    raise RuntimeError(f"study graph is stuck at {[t.name for t in run.pending]}")
                break
            finished, _ = wait(run.running, timeout=heartbeat_s, return_when=FIRST_COMPLETED)
            for fut in finished:
                run.collect(fut)
            if not finished and time.time() - run.last_beat >= heartbeat_s:
                run.heartbeat()
    finally:
        run.executor.close()
    return run.done


class _Scheduler:
    """The state of one `run_graph`: what is done, running and pending."""

    def __init__(self, cfg: RunConfig, stages: list[Stage], log: Callable[[str], None],
                 force: set[str], schedule: list[dict[str, Any]] | None) -> None:
        self.cfg, self.stages, self.log, self.force, self.schedule = (
            cfg, stages, log, force, schedule)
        self.done: dict[str, Path] = {}
        self.pending = list(stages)
        self.running: dict[Future, tuple[Stage, float]] = {}  # future -> (stage, start)
        self.folders: dict[Future, Path | None] = {}  # a running stage's folder, once found
        self.t_start = self.last_beat = time.time()
        self.executor = make_executor(cfg, len(stages))

    def inputs(self, t: Stage) -> dict[str, Path]:
        return {d: self.done[d] for d in t.deps}

    def job_of(self, t: Stage) -> Job:
        job = t.job(self.inputs(t))
        if t.kind in self.force:
            job.kwargs = {**(job.kwargs or {}), "force": True}
        return job

    def finished(self, t: Stage, out: Path, t0: float) -> None:
        self.done[t.name] = out
        if self.schedule is not None:
            # The machine's load when it ended: timings on a shared machine need it.
            self.schedule.append({
                "task": t.name, "kind": t.kind, "start_s": round(t0 - self.t_start, 2),
                "end_s": round(time.time() - self.t_start, 2),
                "folder": f"{out.parent.name}/{out.name}",
                "load_1min": round(os.getloadavg()[0], 2)})
        self.log(f"   {t.name}: done in {time.time() - t0:.0f}s "
                 f"(+{(time.time() - self.t_start) / 60:.1f} min, "
                 f"{len(self.done)}/{len(self.stages)})")

    def finished_already(self, t: Stage) -> Path | None:
        """The stage's folder if it is finished on disk (and not forced): taken as done
        here, as the stage itself would return it, so a cached re-run starts no worker
        processes (their start-up was most of its time)."""
        if self.executor.slots == 1 or t.kind in self.force:
            return None
        where = folder_of(t, self.inputs(t))
        return where if where is not None and is_done(where) else None

    def launch(self) -> None:
        """Start ready stages while slots are free; finished ones complete at once."""
        more = True
        while more:
            more = False
            for t in [t for t in self.pending if all(d in self.done for d in t.deps)]:
                if len(self.running) >= self.executor.slots:
                    return
                self.pending.remove(t)
                t0 = time.time()
                if (d := self.finished_already(t)) is not None:
                    self.finished(t, d, t0)
                    more = True  # its dependents may be ready now
                    continue
                if self.executor.slots > 1:
                    self.log(f"   {t.name}: started ({len(self.done)}/{len(self.stages)} done)")
                self.running[self.executor.submit(self.cfg, self.job_of(t), t.kind)] = (t, t0)

    def collect(self, fut: Future) -> None:
        t, t0 = self.running.pop(fut)
        self.folders.pop(fut, None)
        if fut.exception() is not None:
            self.log(f"   {t.name}: failed: {fut.exception()}")
        self.finished(t, fut.result(), t0)

    def progress(self, fut: Future) -> str:
        t, t0 = self.running[fut]
        show = t.progress()
        if show is None:
            return "running"
        # Found at the first heartbeat, not at submission: a cached re-run pays nothing.
        if fut not in self.folders:
            self.folders[fut] = folder_of(t, self.inputs(t))
        where = self.folders[fut]
        return "running" if where is None else show(where, t0)

    def heartbeat(self) -> None:
        """Workers draw no progress bars; say where each running stage is."""
        self.last_beat = time.time()
        self.log(f"   +{(self.last_beat - self.t_start) / 60:.1f} min, {len(self.done)}/"
                 f"{len(self.stages)} done, running: "
                 + "; ".join(f"{self.running[f][0].name} {self.progress(f)}"
                             for f in self.running))


@dataclass(frozen=True)
class StudyGraph:
    """The study's stages, critical path first, for a config whose `study.gold` is
    settled (`gold.with_gold`)."""

    cfg: RunConfig
    stages: list[Stage]

    def models(self, done: dict[str, Path]) -> list[Model]:
        """The study's models, with the folders their stages and attacks wrote."""
        out = []
        for t in self.stages:
            if t.makes is None or t.name not in done:
                continue
            attacks = {a.attack: done[a.name] for a in self.stages
                       if isinstance(a, Attack) and a.deps[0] == t.name and a.name in done}
            m = t.makes
            out.append(Model(m.name, m.kind, done[t.name], m.alpha, m.seed,
                             next(iter(attacks.values()), None), attacks))
        return out


def _selected(cfg: RunConfig, kind: str) -> bool:
    only = set(cfg.study.stages)
    return not only or kind in only or kind == "pretrain"


def _references(cfg: RunConfig) -> list[Stage]:
    """The base model, the gold standard and the teacher."""
    out: list[Stage] = [Pretrain(name="pretrain base", kind="pretrain", cfg=cfg, role="base",
                                 makes=ModelSpec("base", ModelKind.BASE))]
    gold = ModelSpec("gold", ModelKind.GOLD)
    if cfg.study.gold == "pretrain":
        out.append(Pretrain(name="pretrain gold", kind="pretrain", cfg=cfg, role="gold",
                            makes=gold))
    elif cfg.study.gold != "none":
        out.append(Import(name="pretrain gold", kind="pretrain", cfg=cfg,
                          source=cfg.study.gold, role="gold", makes=gold))
    out.append(Unlearn(name=f"unlearn {cfg.unlearn.method}", kind="unlearn", cfg=cfg,
                       deps=("pretrain base",),
                       makes=ModelSpec("unlearn-only", ModelKind.UNLEARN_ONLY)))
    return out


def _students(cfg: RunConfig, teacher: str) -> list[Stage]:
    """Unlearn-and-Distill and UNDO at every α and seed, longest first: random init, then
    α from large (slow to recover) to small. Each distillation needs only the teacher (and
    the base model for localized noise): compute fractions are taken in the summary."""
    seeds = cfg.study.seeds
    out: list[Stage] = []
    if cfg.study.unlearn_distill:
        for s in seeds:
            out.append(Distill(
                name=f"Unlearn-and-Distill s{s}", kind="distill", cfg=cfg, deps=(teacher,),
                label=f"Unlearn-and-Distill, seed {s}", init="random", seed=s,
                makes=ModelSpec("unlearn-distill" + (f"-s{s}" if len(seeds) > 1 else ""),
                                ModelKind.UNLEARN_DISTILL, seed=s)))
    base = "pretrain base" if cfg.noise.mask != "none" else None
    for a in sorted(cfg.study.alphas, reverse=True):
        at_a = cfg.at_alpha(a)
        for s in seeds:
            out.append(Distill(
                name=f"UNDO a={a:g} s{s}", kind="distill", cfg=at_a,
                deps=(teacher, *([base] if base else [])), label=f"UNDO α={a:g}, seed {s}",
                init="noised", seed=s, base=base,
                makes=ModelSpec(f"undo-a{a:g}-s{s}", ModelKind.UNDO, alpha=a, seed=s)))
    return out


def _oracles(cfg: RunConfig) -> list[Stage]:
    """Oracle matching distills until the student's outputs match the gold teacher's
    (retain and forget accuracy): the retain-only rule would end "gold into base" at
    step 0, the base model already having the gold's retain accuracy."""
    steps = cfg.study.oracle_steps or cfg.distill.steps
    ocfg = replace(cfg, distill=replace(cfg.distill, stop="match", steps=steps))
    s = cfg.study.seeds[0]
    return [Distill(name="oracle gold->random", kind="oracle", cfg=ocfg,
                    deps=("pretrain gold",), label="gold -> random init", init="random",
                    seed=s, makes=ModelSpec("oracle-random", ModelKind.ORACLE_RANDOM, seed=s)),
            Distill(name="oracle gold->base", kind="oracle", cfg=ocfg,
                    deps=("pretrain gold", "pretrain base"), label="gold -> base",
                    init="model", init_from="pretrain base", seed=s,
                    makes=ModelSpec("oracle-base", ModelKind.ORACLE_BASE, seed=s))]


def _attacks(cfg: RunConfig, made: list[Stage]) -> list[Stage]:
    """Every model but the base (a reference point, not a candidate), each as soon as it
    exists, with every attack of `study.attacks`; then the adaptive search."""
    named = study_attacks(cfg)
    headline = next(iter(named))
    out: list[Stage] = []
    targets = [t for t in made if t.makes is not None and t.makes.kind is not ModelKind.BASE]
    for t in targets:
        m = t.makes
        for name, acfg in named.items():
            suffix = "" if name == headline else f" ({name})"
            out.append(Attack(name=f"attack {m.name}{suffix}", kind="attack",
                              cfg=attack_config(acfg, m.seed, cfg.study.seeds),
                              deps=(t.name,), target=m.name, attack=name))
    if cfg.study.attack_search:
        out += _searches(cfg, targets, named[headline])
    return out


def _searches(cfg: RunConfig, targets: list[Stage], headline: RunConfig) -> list[Stage]:
    """The adaptive attack search on every attacked model, the same trials x steps each
    (after its grid: the grid's recipes start the search), then one stage replaying each
    model's best recipe against every other (undo.attacks.search). Each model is searched
    under its headline attack's config, seeds shifted as its grid's (`attack_config`), so
    the search starts from that grid and writes search.json into its folder, where the
    summary reads it."""
    from ..attacks.search import check_search

    check_search(cfg, cfg.study.attack_search)  # before any stage runs
    searched = [(t, attack_config(headline, t.makes.seed, cfg.study.seeds)) for t in targets]
    out: list[Stage] = [Search(name=f"search {t.makes.name}", kind="attack", cfg=c,
                               deps=(t.name, f"attack {t.makes.name}"),
                               trials=cfg.study.attack_search) for t, c in searched]
    out.append(Replays(name="search replays", kind="attack", cfg=cfg,
                       deps=(*(s.name for s in out), *(t.name for t, _ in searched)),
                       models=tuple((t.name, c) for t, c in searched)))
    return out


def study_graph(cfg: RunConfig) -> StudyGraph:
    """The study's graph for `cfg`, whose `study.gold` is settled (`gold.with_gold`)."""
    if cfg.study.gold == "auto":
        raise ValueError("study_graph needs study.gold settled: pass gold.with_gold(cfg)")
    only = set(cfg.study.stages)
    if only and "unlearn" not in only:
        raise ConfigError("study.stages: the study needs the 'unlearn' stage for a teacher; "
                          f"valid: a list including 'unlearn' (got {sorted(only)})")
    stages = _references(cfg)
    stages += _students(cfg, teacher=stages[-1].name)
    if cfg.study.oracles and cfg.study.gold != "none":
        stages += _oracles(cfg)
    stages = [t for t in stages if _selected(cfg, t.kind)]
    if _selected(cfg, "attack"):
        stages += _attacks(cfg, stages)
    return StudyGraph(cfg, stages)


def preflight(cfg: RunConfig) -> None:
    """What can be checked before any stage runs, so a study never fails half-way on it:
    the benchmark's data (read and split), and for a pretrained model that it is a
    loadable causal LM of a known family whose tokenizer the benchmark can use, and that
    the trackers of `report_to` are installed."""
    from ..benchmarks import build_benchmark
    from ..models import pretrained_config, tokenizer_of
    from ..train import check_trackers

    check_trackers(cfg.report_to)
    bench = build_benchmark(cfg.data)
    if not cfg.model.is_pretrained():
        return
    pretrained_config(cfg.model)
    own = bench.own_tokenizer()
    if own is None:
        return
    theirs = tokenizer_of(cfg.model)
    if own.get_vocab() != theirs.get_vocab():
        raise ConfigError(
            f"config key 'model.name_or_path': the {cfg.data.benchmark} benchmark writes its "
            f"data with its own tokenizer ({len(own)} tokens), and the tokenizer of "
            f"{cfg.model.name_or_path or cfg.model.gguf_file!r} ({len(theirs)} tokens) is a "
            f"different one; valid: a model trained on this benchmark (e.g. a pretraining "
            f"stage's model/ folder), or a benchmark that uses the model's tokenizer "
            f"(data.benchmark=text with data.tokenizer=model)")


def run_study(cfg: RunConfig, *, force: list[str] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every missing stage of the study; write summary.json, plots and report.html."""
    from ..runtime import BF16_CPU_FLAGS, bf16_is_slow
    from ..stages.base import run_dir
    from .gold import with_gold
    from .run_folder import record_run, write_run_config
    from .summary import build_summary, write_summary

    force = list(force or [])
    _check_kinds(force, "--force")
    _check_kinds(list(cfg.study.stages), "study.stages")
    # First: a study that would pretrain a large model's gold standard stops here, before
    # any data is read. The resolved value is what config.yaml and the summary record.
    cfg = with_gold(cfg)
    preflight(cfg)
    graph = study_graph(cfg)
    root = run_dir(cfg)
    write_run_config(cfg)  # refuses a folder holding another config's results
    t_start = time.time()
    log(f"== study {cfg.name}: {len(graph.stages)} stages, {cfg.study.workers} worker(s)")
    if bf16_is_slow(cfg.device) and "bf16-mixed" in (cfg.precision, cfg.attack.precision):
        log(f"   note: this CPU has no bfloat16 instructions ({', '.join(BF16_CPU_FLAGS)}), "
            f"so bf16-mixed (precision={cfg.precision}, attack.precision="
            f"{cfg.attack.precision}) runs slower than fp32 here; fp32 is the faster choice "
            f"(docs/attacks.md)")
    for t in graph.stages:
        log(f"   - {t.name}" + (f"  (after {', '.join(t.deps)})" if t.deps else ""))
    schedule: list[dict[str, Any]] = []
    done = run_graph(cfg, graph.stages, log, set(force), schedule=schedule)
    graph_s = time.time() - t_start

    summary = build_summary(cfg, graph.models(done), wall_time_s=time.time() - t_start)
    write_summary(root, summary)
    from ..report import write_report

    write_report(root)
    record_run(cfg, {"wall_time_s": round(time.time() - t_start, 2),
                     "graph_s": round(graph_s, 2), "workers": cfg.study.workers,
                     "schedule": schedule})
    log(f"== done in {(time.time() - t_start) / 60:.1f} min: {root / 'summary.json'}")
    return summary
