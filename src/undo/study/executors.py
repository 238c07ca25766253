"""Where the study's stages run (`study.executor`): this machine or a Ray cluster.

`pipeline.run_graph` decides *when* a stage may start (its inputs exist); an executor
decides *where*: it takes a stage's job and returns a `concurrent.futures.Future` of the
stage's folder.

- `InProcess`: one after another in this process (`study.workers: 1`), progress bars on.
- `LocalProcesses`: `study.workers` spawned processes of one torch thread each.
- `RayExecutor`: every stage a Ray task with the resources its kind asks for
  (`study.resources`), and an attack's grid one Ray task per run, so a cluster's GPUs
  take the runs of one model side by side. Tasks write into the one run folder, which
  must be on a filesystem every node sees; caching and resume work as locally (a stage
  skips what its folder already holds). A task that fails (an exception, or its worker or
  node dying) is retried once, then the failure is reported with the node it ran on.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Resources, RunConfig
from ..configlib import ConfigError

if TYPE_CHECKING:
    from .graph import Job


def call(cfg: RunConfig, job: Job) -> Path:
    """Run one stage: `fn(cfg, *args, **kwargs)` with the job's own config if it has one."""
    return job.fn(job.cfg or cfg, *job.args, **(job.kwargs or {}))


def _worker_init(threads: int = 1) -> None:
    import torch

    torch.set_num_threads(threads)
    from .. import runtime

    runtime.quiet()


def isolated(cfg: RunConfig, job: Job, threads: int = 1) -> Job:
    """The job as a worker runs it: no progress bars (they would garble the terminal),
    `threads` torch threads (an attack then runs its grid inside the worker)."""
    return replace(job, cfg=replace(job.cfg or cfg, progress=False, threads=threads))


class Executor(Protocol):
    slots: int  # tasks that may run at once; run_graph submits no more than this

    def submit(self, cfg: RunConfig, job: Job, kind: str) -> Future[Path]: ...

    def close(self) -> None: ...


class InProcess:
    slots = 1

    def submit(self, cfg: RunConfig, job: Job, kind: str) -> Future[Path]:
        fut: Future[Path] = Future()
        fut.set_result(call(cfg, job))  # an exception propagates at once, as it always did
        return fut

    def close(self) -> None:
        pass


class LocalProcesses:
    def __init__(self, workers: int) -> None:
        self.slots = workers
        self.pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                                        initializer=_worker_init)

    def submit(self, cfg: RunConfig, job: Job, kind: str) -> Future[Path]:
        return self.pool.submit(call, cfg, isolated(cfg, job))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def resources_for(cfg: RunConfig, kind: str) -> Resources:
    r = cfg.study.resources
    return r.get(kind) or r.get("default") or Resources()


def _ray_stage(cfg: RunConfig, job: Job, threads: int, *_runs: Path) -> Path:
    """A stage inside a Ray worker; `_runs` are the attack runs it waits for (Ray starts
    it once they are done)."""
    _worker_init(threads)
    return call(cfg, isolated(cfg, job, threads))


def attack_run(cfg: RunConfig, model_dir: str, lr: float, seed: int, threads: int) -> Path:
    """One run of an attack grid into the attack folder's `runs/`, where the attack stage
    finds it and runs only what is missing (undo.attacks.grid._attack_grid)."""
    from ..artifacts import model_folder, write_json
    from ..attacks.grid import attack_dir, run_one

    _worker_init(threads)
    model_dir = str(model_folder(model_dir))
    runs = attack_dir(cfg, model_dir) / "runs"
    name = f"lr{lr:g}-seed{seed}"  # attack._attack_grid's name of this run
    out = runs / f"{name}.json"
    if not out.exists():
        save_to = runs / name / "model" if cfg.attack.save_weights else None
        rcfg = replace(cfg, progress=False, threads=threads)
        write_json(out, run_one(rcfg, model_dir, lr, seed, None, threads, save_to))
    return out


class RayExecutor:
    """Stages as Ray tasks on a local Ray instance or an existing cluster."""

    def __init__(self, cfg: RunConfig, n_tasks: int) -> None:
        try:
            import ray
        except ImportError as e:
            raise ConfigError("study.executor: got 'ray' but Ray is not installed; "
                              "valid: `pip install 'undo[ray]'`, or executor=local") from e
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            address = cfg.study.ray_address
            # A new local instance gets `workers` CPUs; a cluster brings its own.
            extra = {} if address else {"num_cpus": cfg.study.workers}
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **extra)
        self.slots = max(1, n_tasks)  # Ray queues tasks until their resources are free

    def _options(self, cfg: RunConfig, kind: str) -> tuple[dict[str, Any], int]:
        r = resources_for(cfg, kind)
        # Retried once on any failure, an exception included (a lost node raises one in
        # the driver too); a stage resumes from its checkpoint in the shared folder.
        return ({"num_cpus": r.cpus, "num_gpus": r.gpus, "max_retries": 1,
                 "retry_exceptions": True}, max(1, int(r.cpus)))

    def submit(self, cfg: RunConfig, job: Job, kind: str) -> Future[Path]:
        from ..attacks.grid import attack

        ray = self.ray
        opts, threads = self._options(cfg, kind)
        runs = []
        # An attack's grid runs first, each run its own task (a forced attack deletes its
        # folder first, so it runs its grid inside its own task).
        if job.fn is attack and not (job.kwargs or {}).get("force"):
            run_cfg = job.cfg or cfg
            (model_dir,) = job.args
            remote_run = ray.remote(attack_run).options(**opts)
            runs = [remote_run.remote(run_cfg, str(model_dir), lr, s, threads)
                    for lr in sorted(run_cfg.attack.lrs, reverse=True)
                    for s in run_cfg.attack.seeds]
        ref = ray.remote(_ray_stage).options(**opts).remote(cfg, job, threads, *runs)
        out: Future[Path] = Future()

        def done(f: Future) -> None:
            try:
                out.set_result(f.result())
            except Exception as e:  # handed on to run_graph, with what was tried
                out.set_exception(RuntimeError(
                    f"{job.label}: failed twice on Ray (retried once): {e}"))

        ref.future().add_done_callback(done)
        return out

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def make_executor(cfg: RunConfig, n_tasks: int) -> Executor:
    if cfg.study.executor == "ray":
        return RayExecutor(cfg, n_tasks)
    workers = min(cfg.study.workers, n_tasks)
    return LocalProcesses(workers) if workers > 1 else InProcess()
