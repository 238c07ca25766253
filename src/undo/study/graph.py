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

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..artifacts import is_done
from ..config import STAGE_KINDS, RunConfig
from ..configlib import ConfigError
from .executors import make_executor


@dataclass
class Model:
    """One model of the study, as the summary reports it."""

    name: str
    kind: str  # base | gold | unlearn_only | unlearn_distill | undo | oracle_base | oracle_random
    stage_dir: Path
    alpha: float | None = None
    seed: int | None = None
    attack_dir: Path | None = None  # the headline attack (the first of study.attacks)
    attack_dirs: dict[str, Path] = field(default_factory=dict)  # every attack, by name

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
    cfg: RunConfig | None = None  # the run config unless this stage needs its own
    # Jobs an executor may run before this one, side by side (an attack's runs): their
    # results land in the shared run folder, where this job finds them; an executor may
    # also leave them to the job, which then runs what is missing itself.
    parts: list[Job] = field(default_factory=list)


@dataclass
class Task:
    """A node of the study graph: `make` builds its job from its dependencies' folders
    (in the main process), once they exist."""

    name: str
    kind: str  # a STAGE_KINDS entry: what `study.stages` and `--force` select
    deps: tuple[str, ...]
    make: Callable[[dict[str, Path]], Job]
    after: list[Callable[[Path], None]] = field(default_factory=list)
    # How far a running task is, read from the files it writes in its folder since it
    # started (for the heartbeat): (folder, start time) -> text.
    progress: Callable[[Path, float], str] | None = None


def steps_progress(total: int) -> Callable[[Path, float], str]:
    """Progress of a training stage in stage folder `folder`: the step in its
    metrics.jsonl, if written since the task started at `t0`."""

    def show(folder: Path, t0: float) -> str:
        log = folder / "metrics.jsonl"
        lines = log.read_text().splitlines() \
            if log.is_file() and log.stat().st_mtime >= t0 else []
        step = json.loads(lines[-1]).get("step", 0) if lines else 0
        if not step:
            return "starting"
        left = (time.time() - t0) * (total - step) / step
        return f"step {step}/{total}, <= {left / 60:.1f} min left"

    return show


def runs_progress(total: int) -> Callable[[Path, float], str]:
    """Progress of an attack in attack folder `folder`: the finished runs of its grid
    (`runs/*.json`)."""

    def show(folder: Path, t0: float) -> str:
        done = [p for p in folder.glob("runs/*.json") if p.stat().st_mtime >= t0]
        return f"{len(done)}/{total} runs"

    return show


def job_folder(cfg: RunConfig, job: Job) -> Path | None:
    """The folder a study job writes, computed as its stage function does."""
    from ..attacks.grid import attack_dir
    from ..stages.distill import distill_dir
    from ..stages.pretrain import import_dir, pretrain_dir
    from ..stages.unlearn import unlearn_dir

    c, kw, name = job.cfg or cfg, job.kwargs or {}, job.fn.__name__
    if name == "pretrain":
        if job.args[0] == "base" and c.model.is_pretrained():
            return import_dir(c, None, "base")[0]
        return pretrain_dir(c, job.args[0])
    if name == "import_model":
        return import_dir(c, *job.args[:2])[0]
    if name == "unlearn":
        return unlearn_dir(c, job.args[0])
    if name == "distill":
        alpha = c.noise.alpha if kw.get("alpha") is None else kw["alpha"]
        return distill_dir(c, job.args[0], init=kw["init"], alpha=alpha, seed=kw["seed"],
                           base_dir=kw.get("base_dir"))[0]
    if name == "attack":
        return attack_dir(c, job.args[0])
    return None


def _folder_of(cfg: RunConfig, job: Job) -> Path | None:
    """The folder a job writes, or None where it cannot be told."""
    try:
        return job_folder(cfg, job)
    except ConfigError:  # the stage itself reports what is wrong
        return None


def _check_kinds(names: list[str], key: str) -> None:
    bad = [n for n in names if n not in STAGE_KINDS]
    if bad:
        raise ConfigError(f"{key}: got {bad}; valid stage kinds: {', '.join(STAGE_KINDS)}")


def run_graph(cfg: RunConfig, tasks: list[Task], log: Callable[[str], None],
              force: set[str] | None = None, heartbeat_s: float = 60.0,
              schedule: list[dict[str, Any]] | None = None) -> dict[str, Path]:
    """Run every task once its dependencies are done; returns task name -> stage folder.

    Ready tasks start in list order, on the executor `study.executor` names: with
    `local`, `study.workers > 1` runs them in that many single-threaded processes,
    otherwise one after another in this process; with `ray`, as Ray tasks.
    `schedule`, if given, receives one entry per task as it finishes: its name, kind,
    start/end in seconds since the graph started, its folder and the load average then
    (experiments/study_profile.py reads them).
    """
    force = force or set()
    names = {t.name for t in tasks}
    for t in tasks:
        missing = [d for d in t.deps if d not in names]
        if missing:
            raise ValueError(f"task {t.name} depends on unknown tasks {missing}")
    done: dict[str, Path] = {}
    pending = list(tasks)
    t_start = time.time()

    def job_of(t: Task) -> Job:
        job = t.make({d: done[d] for d in t.deps})
        if t.kind in force:
            job.kwargs = {**(job.kwargs or {}), "force": True}
        return job

    def finished(t: Task, out: Path, t0: float) -> None:
        done[t.name] = out
        for hook in t.after:
            hook(out)
        if schedule is not None:
            # The machine's load when it ended: timings on a shared machine need it.
            schedule.append({"task": t.name, "kind": t.kind, "start_s": round(t0 - t_start, 2),
                             "end_s": round(time.time() - t_start, 2),
                             "folder": f"{out.parent.name}/{out.name}",
                             "load_1min": round(os.getloadavg()[0], 2)})
        log(f"   {t.name}: done in {time.time() - t0:.0f}s "
            f"(+{(time.time() - t_start) / 60:.1f} min, {len(done)}/{len(tasks)})")

    def ready() -> list[Task]:
        return [t for t in pending if all(d in done for d in t.deps)]

    if not tasks:
        return done
    executor = make_executor(cfg, len(tasks))
    running: dict[Future, tuple[Task, float, Job]] = {}  # future -> (task, start, job)
    last_beat = time.time()
    folders: dict[Future, Path | None] = {}  # a running job's folder, once looked up

    def progress(fut: Future) -> str:
        t, t0, job = running[fut]
        if t.progress is None:
            return "running"
        # Found at the first heartbeat, not at submission: a cached re-run pays nothing.
        if fut not in folders:
            folders[fut] = _folder_of(cfg, job)
        where = folders[fut]
        return "running" if where is None else t.progress(where, t0)

    def finished_already(t: Task, job: Job) -> Path | None:
        """The task's folder if it is finished on disk (and not forced): taken as done
        here, as the stage itself would return it, so a cached re-run starts no worker
        processes (their start-up was most of its time)."""
        if executor.slots == 1 or t.kind in force:
            return None
        where = _folder_of(cfg, job)
        return where if where is not None and is_done(where) else None

    def launch() -> None:
        """Start ready tasks while slots are free; finished ones complete at once."""
        more = True
        while more:
            more = False
            for t in ready():
                if len(running) >= executor.slots:
                    return
                pending.remove(t)
                t0 = time.time()
                job = job_of(t)
                if (d := finished_already(t, job)) is not None:
                    finished(t, d, t0)
                    more = True  # its dependents may be ready now
                    continue
                if executor.slots > 1:
                    log(f"   {t.name}: started ({len(done)}/{len(tasks)} done)")
                running[executor.submit(cfg, job, t.kind)] = (t, t0, job)

    try:
        while pending or running:
            launch()
            if not running:
                if pending:
                    raise RuntimeError(f"study graph is stuck at {[t.name for t in pending]}")
                break
            finished_futs, _ = wait(running, timeout=heartbeat_s, return_when=FIRST_COMPLETED)
            for fut in finished_futs:
                t, t0, _ = running.pop(fut)
                folders.pop(fut, None)
                if fut.exception() is not None:
                    log(f"   {t.name}: failed: {fut.exception()}")
                finished(t, fut.result(), t0)
            if not finished_futs and time.time() - last_beat >= heartbeat_s:
                # Workers draw no progress bars; say where each running stage is.
                last_beat = time.time()
                log(f"   +{(last_beat - t_start) / 60:.1f} min, {len(done)}/{len(tasks)} "
                    "done, running: " + "; ".join(f"{running[f][0].name} {progress(f)}"
                                                  for f in running))
    finally:
        executor.close()
    return done


def study_tasks(cfg: RunConfig) -> tuple[list[Task], list[Model]]:
    """The study's graph, critical path first, and the models it makes (their folders
    are filled in as their tasks finish)."""
    from ..stages.distill import distill
    from ..stages.pretrain import gold_recipe, import_model, pretrain
    from ..stages.unlearn import unlearn
    from .gold import with_gold

    cfg = with_gold(cfg)  # `study.gold: auto` settled (or the study stops here)
    only = set(cfg.study.stages)
    def selected(kind: str) -> bool:
        return not only or kind in only or kind == "pretrain"

    if only and "unlearn" not in only:
        raise ConfigError("study.stages: the study needs the 'unlearn' stage for a teacher; "
                          f"valid: a list including 'unlearn' (got {sorted(only)})")
    seeds = cfg.study.seeds
    gold_mode = cfg.study.gold
    has_gold = gold_mode != "none"
    tasks: list[Task] = []
    models: list[Model] = []
    made_by: dict[str, Model] = {}  # task name -> the model it makes
    # Folders read only once their tasks are done: the base model (localized noise).
    folders: dict[str, Path] = {}

    def common() -> dict[str, Path | None]:
        # "gold -> random init" does not wait for the base model (it needs it for nothing:
        # only noised students read base_dir, and they wait for it through the teacher).
        base = folders.get("pretrain base")
        return {"base_dir": base / "model" if base is not None else None}

    def add(model: Model | None, name: str, kind: str, deps: tuple[str, ...],
            make: Callable[[dict[str, Path]], Job],
            progress: Callable[[Path, float], str] | None = None) -> None:
        if not selected(kind):
            return
        task = Task(name, kind, deps, make, progress=progress)
        task.after.append(lambda d, name=name: folders.__setitem__(name, d))
        if model is not None:
            models.append(model)
            made_by[name] = model
            task.after.append(lambda d, m=model: setattr(m, "stage_dir", d))
        tasks.append(task)

    add(Model("base", "base", Path()), "pretrain base", "pretrain", (),
        lambda _: Job("base (retain + forget)", pretrain, ("base",)),
        steps_progress(cfg.pretrain.steps))
    if gold_mode == "pretrain":
        add(Model("gold", "gold", Path()), "pretrain gold", "pretrain", (),
            lambda _: Job("gold standard (retain only)", pretrain, ("gold",)),
            steps_progress(gold_recipe(cfg)[0]))
    elif has_gold:
        add(Model("gold", "gold", Path()), "pretrain gold", "pretrain", (),
            lambda _: Job("gold standard (given)", import_model, (gold_mode, "gold")))
    add(Model("unlearn-only", "unlearn_only", Path()), f"unlearn {cfg.unlearn.method}",
        "unlearn", ("pretrain base",),
        lambda d: Job("teacher", unlearn, (d["pretrain base"] / "model",)),
        steps_progress(cfg.unlearn.steps))
    teacher = f"unlearn {cfg.unlearn.method}"
    # Distillations need only the teacher: the fractions of the gold standard's compute
    # are taken in the summary, so they no longer wait for the gold pretraining.
    deps = (teacher,)

    # Longest first: random init, then α from large (slow to recover) to small.
    if cfg.study.unlearn_distill:
        for s in seeds:
            add(Model("unlearn-distill" + (f"-s{s}" if len(seeds) > 1 else ""),
                      "unlearn_distill", Path(), seed=s),
                f"Unlearn-and-Distill s{s}", "distill", deps,
                lambda d, s=s: Job(f"Unlearn-and-Distill, seed {s}", distill,
                                   (d[teacher] / "model",),
                                   {"init": "random", "alpha": None, "seed": s, **common()}),
                steps_progress(cfg.distill.steps))
    for a in sorted(cfg.study.alphas, reverse=True):
        for s in seeds:
            add(Model(f"undo-a{a:g}-s{s}", "undo", Path(), alpha=a, seed=s),
                f"UNDO a={a:g} s{s}", "distill", deps,
                lambda d, a=a, s=s: Job(f"UNDO α={a:g}, seed {s}", distill,
                                        (d[teacher] / "model",),
                                        {"init": "noised", "alpha": a, "seed": s, **common()}),
                steps_progress(cfg.distill.steps))
    if cfg.study.oracles and has_gold:
        # Oracle matching distills until the student's outputs match the gold teacher's
        # (retain and forget accuracy): the retain-only rule would end "gold into base"
        # at step 0, the base model already having the gold's retain accuracy.
        steps = cfg.study.oracle_steps or cfg.distill.steps
        ocfg = replace(cfg, distill=replace(cfg.distill, stop="match", steps=steps))
        add(Model("oracle-random", "oracle_random", Path(), seed=seeds[0]),
            "oracle gold->random", "oracle", ("pretrain gold",),
            lambda d: Job("gold -> random init", distill, (d["pretrain gold"] / "model",),
                          {"init": "random", "alpha": None, "seed": seeds[0], **common()},
                          ocfg),
            steps_progress(steps))
        add(Model("oracle-base", "oracle_base", Path(), seed=seeds[0]),
            "oracle gold->base", "oracle", ("pretrain gold", "pretrain base"),
            lambda d: Job("gold -> base", distill, (d["pretrain gold"] / "model",),
                          {"init": str(d["pretrain base"] / "model"), "alpha": None,
                           "seed": seeds[0], **common()}, ocfg),
            steps_progress(steps))

    # Attacks: every model but the base (a reference point, not a candidate), each as
    # soon as its model exists, with every attack of `study.attacks`.
    if selected("attack"):
        named = study_attacks(cfg)
        for dep, m in list(made_by.items()):
            if m.kind == "base":
                continue
            for name, acfg in named.items():
                a_cfg = attack_config(acfg, m.seed, seeds)
                n_runs = len(a_cfg.attack.lrs) * len(a_cfg.attack.seeds)
                suffix = "" if name == next(iter(named)) else f" ({name})"
                add(None, f"attack {m.name}{suffix}", "attack", (dep,),
                    lambda d, dep=dep, a_cfg=a_cfg: attack_job(a_cfg, dep, d[dep] / "model"),
                    runs_progress(n_runs))
                tasks[-1].after.append(lambda d, m=m, name=name: m.attack_dirs.__setitem__(
                    name, d))
                if not suffix:
                    tasks[-1].after.append(lambda d, m=m: setattr(m, "attack_dir", d))
        if cfg.study.attack_search:
            _add_search_tasks(cfg, tasks, made_by)
    return tasks, models


def attack_job(acfg: RunConfig, name: str, model_dir: Path) -> Job:
    """The attack of one model under `acfg` (its attack and seeds), with each run of its
    grid as a part."""
    from ..attacks.grid import attack, attack_run, grid_runs

    parts = [Job(f"attack {name} lr={lr:g} seed={s}", attack_run, (str(model_dir), lr, s),
                 cfg=acfg) for lr, s in grid_runs(acfg)]
    return Job(f"attack {name}", attack, (model_dir,), {}, acfg, parts)


def study_attacks(cfg: RunConfig) -> dict[str, RunConfig]:
    """{attack name: its config}, the headline first (`study.attacks`). `forget_only` is
    left out where the paper's attack is forget-only already (the same attack)."""
    from ..attacks.grid import resolved

    paper = resolved(cfg)
    forget_only = replace(cfg, attack=replace(cfg.attack, retain_fraction=0.0))
    out = {name: paper if name == "paper" else forget_only for name in cfg.study.attacks}
    if len(out) > 1 and paper.attack.retain_fraction == 0.0:
        out.pop("forget_only")
    return out


def attack_config(cfg: RunConfig, seed: int | None, study_seeds: list[int]) -> RunConfig:
    """The attack config of a model distilled at `seed`: the attack seeds shifted by it,
    so seeds of a study differ in their attacks too. A model made once for every seed
    (gold, unlearn-only: `seed` None) is attacked with every student's attack seeds, so
    each seed's robustness is scaled by references attacked with that seed's draws."""
    base = cfg.attack.seeds
    shifted = ([a + s for s in study_seeds for a in base] if seed is None
               else [a + seed for a in base])
    return replace(cfg, attack=replace(cfg.attack, seeds=list(dict.fromkeys(shifted))))


def _add_search_tasks(cfg: RunConfig, tasks: list[Task], made_by: dict[str, Model]) -> None:
    """The adaptive attack search on every attacked model, the same trials x steps each
    (after its grid: the grid's recipes start the search), then one task replaying each
    model's best recipe against every other (undo.attacks.search). Each model is searched
    under its headline attack's config, seeds shifted as its grid's (`attack_config`), so
    the search starts from that grid and writes search.json into its folder, where the
    summary reads it."""
    from ..attacks.search import check_search, replay_all, search_attack

    check_search(cfg, cfg.study.attack_search)  # before any stage runs
    n = cfg.study.attack_search
    headline = next(iter(study_attacks(cfg).values()))
    attacked = [(dep, m, attack_config(headline, m.seed, cfg.study.seeds))
                for dep, m in made_by.items() if m.kind != "base"]
    for dep, m, a_cfg in attacked:
        tasks.append(Task(f"search {m.name}", "attack", (dep, f"attack {m.name}"),
                          lambda d, dep=dep, a_cfg=a_cfg: Job(
                              f"search {dep}", search_attack, (d[dep] / "model", n),
                              {"log": None}, a_cfg)))
    tasks.append(Task("search replays", "attack", tuple(f"search {m.name}" for _, m, _ in attacked),
                      lambda _: Job("replays", replay_all,
                                    ([m.model_dir for _, m, _ in attacked],),
                                    {"log": None, "model_cfgs": [c for _, _, c in attacked]})))


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
    from ..stages.base import record_run, run_dir, write_run_config
    from .gold import with_gold
    from .summary import build_summary, write_summary

    force = list(force or [])
    _check_kinds(force, "--force")
    _check_kinds(list(cfg.study.stages), "study.stages")
    # First: a study that would pretrain a large model's gold standard stops here, before
    # any data is read. The resolved value is what config.yaml and the summary record.
    cfg = with_gold(cfg)
    preflight(cfg)
    tasks, models = study_tasks(cfg)
    root = run_dir(cfg)
    write_run_config(cfg)  # refuses a folder holding another config's results
    t_start = time.time()
    log(f"== study {cfg.name}: {len(tasks)} stages, {cfg.study.workers} worker(s)")
    if bf16_is_slow(cfg.device) and "bf16-mixed" in (cfg.precision, cfg.attack.precision):
        log(f"   note: this CPU has no bfloat16 instructions ({', '.join(BF16_CPU_FLAGS)}), "
            f"so bf16-mixed (precision={cfg.precision}, attack.precision="
            f"{cfg.attack.precision}) runs slower than fp32 here; fp32 is the faster choice "
            f"(docs/attacks.md)")
    for t in tasks:
        log(f"   - {t.name}" + (f"  (after {', '.join(t.deps)})" if t.deps else ""))
    schedule: list[dict[str, Any]] = []
    run_graph(cfg, tasks, log, set(force), schedule=schedule)
    graph_s = time.time() - t_start

    summary = build_summary(cfg, models, wall_time_s=time.time() - t_start)
    write_summary(root, summary)
    from ..report import write_report

    write_report(root)
    record_run(cfg, {"wall_time_s": round(time.time() - t_start, 2),
                     "graph_s": round(graph_s, 2), "workers": cfg.study.workers,
                     "schedule": schedule})
    log(f"== done in {(time.time() - t_start) / 60:.1f} min: {root / 'summary.json'}")
    return summary
