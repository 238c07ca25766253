"""Where the study's stages run (`study.executor`): this machine or a Ray cluster.

`graph.run_graph` decides *when* a stage may start (its inputs exist); an executor
decides *where*: it takes a stage's job and returns a `concurrent.futures.Future` of the
stage's folder.

- `InProcess`: one after another in this process (`study.workers: 1`), progress bars on.
- `LocalProcesses`: `study.workers` spawned processes of one torch thread each.
- `RayExecutor`: every stage a Ray task with the resources its kind asks for
  (`study.resources`), and each of a job's parts (an attack's runs) its own task before
  it, so a cluster's GPUs take the runs of one model side by side. Tasks write into the one run folder, which
  must be on a filesystem every node sees; caching and resume work as locally (a stage
  skips what its folder already holds). A task that fails (an exception, or its worker or
  node dying) is retried once, then the failure is reported with the node it ran on.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Resources, RunConfig
from ..configlib import ConfigError
from ..runtime import process_pool, worker_init

if TYPE_CHECKING:
    from .jobs import Job


def call(cfg: RunConfig, job: Job) -> Path:
    """Run one stage: `fn(cfg, *args, **kwargs)` with the job's own config if it has one."""
    return job.fn(job.cfg or cfg, *job.args, **(job.kwargs or {}))


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
        self.pool = process_pool(workers, threads=1, fresh=True)

    def submit(self, cfg: RunConfig, job: Job, kind: str) -> Future[Path]:
        return self.pool.submit(call, cfg, isolated(cfg, job))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def resources_for(cfg: RunConfig, kind: str) -> Resources:
    r = cfg.study.resources
    return r.get(kind) or r.get("default") or Resources()


def _ray_stage(cfg: RunConfig, job: Job, threads: int, *_parts: Path) -> Path:
    """A job inside a Ray worker; `_parts` are the part tasks it waits for (Ray starts it
    once they are done)."""
    worker_init(threads)
    return call(cfg, isolated(cfg, job, threads))


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
        ray = self.ray
        opts, threads = self._options(cfg, kind)
        remote = ray.remote(_ray_stage).options(**opts)
        # A job's parts (an attack's runs) first, each its own task, side by side; the job
        # then finds their results in the shared folder. A forced job deletes its folder
        # first, so it runs its parts itself.
        forced = (job.kwargs or {}).get("force")
        parts = [] if forced else [remote.remote(cfg, p, threads) for p in job.parts]
        ref = remote.remote(cfg, job, threads, *parts)
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
