"""The study's stages as typed values: each knows its inputs, its folder, its job and its
cost, so the graph, the heartbeat, cached-task skipping and `--dry-run` ask the stage
instead of re-deriving it from a function's name.

A stage's `inputs` are the folders of the stages it names in `deps` (task name ->
stage folder); `folder(inputs)` is computed as the stage function computes it, without
loading weights; `job(inputs)` is the call a worker makes; `work()` is its cost for the
plan (steps, sequences, FLOPs per position as a multiple of N), None where not estimated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..analysis.arms import ModelKind
from ..config import RunConfig
from .jobs import Job

Inputs = Mapping[str, Path]
Progress = Callable[[Path, float], str]


@dataclass(frozen=True)
class Work:
    steps: int
    sequences: int
    per_position: int  # FLOPs per position per matmul parameter (6: trained, 8: + teacher)


@dataclass(frozen=True)
class ModelSpec:
    """A model the study makes, as the summary names it."""

    name: str
    kind: ModelKind
    alpha: float | None = None
    seed: int | None = None


@dataclass
class Model:
    """One finished model of the study: its spec's identity and the folders it lives in."""

    name: str
    kind: ModelKind
    stage_dir: Path
    alpha: float | None = None
    seed: int | None = None
    attack_dir: Path | None = None  # the headline attack (the first of study.attacks)
    attack_dirs: dict[str, Path] = field(default_factory=dict)  # every attack, by name

    @property
    def model_dir(self) -> Path:
        return self.stage_dir / "model"


def _sequences(section: object, steps: int) -> int:
    return steps * section.batch_size * getattr(section, "grad_accum", 1)  # type: ignore[attr-defined]


def steps_progress(total: int) -> Progress:
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


def runs_progress(total: int) -> Progress:
    """Progress of an attack in attack folder `folder`: the finished runs of its grid
    (`runs/*.json`)."""

    def show(folder: Path, t0: float) -> str:
        done = [p for p in folder.glob("runs/*.json") if p.stat().st_mtime >= t0]
        return f"{len(done)}/{total} runs"

    return show


@dataclass(frozen=True, kw_only=True)
class Stage:
    """A node of the study graph."""

    name: str  # the task's id in logs, runs.jsonl's schedule and the plan
    kind: str  # a STAGE_KINDS entry: what `study.stages` and `--force` select
    cfg: RunConfig  # the config this stage runs under
    deps: tuple[str, ...] = ()
    makes: ModelSpec | None = None

    def job(self, inputs: Inputs) -> Job:
        raise NotImplementedError

    def folder(self, inputs: Inputs) -> Path | None:
        """The folder the job writes, computed as its stage function does."""
        return None

    def work(self) -> Work | None:
        return None

    def progress(self) -> Progress | None:
        return None


@dataclass(frozen=True, kw_only=True)
class Pretrain(Stage):
    """The base model (pretrained, or a given model imported) or the gold standard."""

    role: Literal["base", "gold"]

    def job(self, inputs: Inputs) -> Job:
        from ..stages.pretrain import pretrain

        label = "base (retain + forget)" if self.role == "base" else "gold standard (retain only)"
        return Job(label, pretrain, (self.role,))

    def folder(self, inputs: Inputs) -> Path:
        from ..stages.pretrain import import_dir, pretrain_dir

        if self.role == "base" and self.cfg.model.is_pretrained():
            return import_dir(self.cfg, None, "base")[0]
        return pretrain_dir(self.cfg, self.role)

    def _steps_batch(self) -> tuple[int, int] | None:
        from ..stages.pretrain import gold_recipe

        if self.role == "gold":
            return gold_recipe(self.cfg)
        if self.cfg.model.is_pretrained():
            return None  # imported: nothing trained
        return self.cfg.pretrain.steps, self.cfg.pretrain.batch_size

    def work(self) -> Work | None:
        sb = self._steps_batch()
        if sb is None:
            return None
        steps, batch = sb
        return Work(steps, steps * batch * self.cfg.pretrain.grad_accum, 6)

    def progress(self) -> Progress | None:
        sb = self._steps_batch()
        return None if sb is None else steps_progress(sb[0])


@dataclass(frozen=True, kw_only=True)
class Import(Stage):
    """A given model taken as one of the study's (`study.gold: PATH`)."""

    source: str
    role: Literal["base", "gold"]

    def job(self, inputs: Inputs) -> Job:
        from ..stages.pretrain import import_model

        return Job(f"{self.role} standard (given)" if self.role == "gold" else "base (given)",
                   import_model, (self.source, self.role))

    def folder(self, inputs: Inputs) -> Path:
        from ..stages.pretrain import import_dir

        return import_dir(self.cfg, self.source, self.role)[0]


@dataclass(frozen=True, kw_only=True)
class Unlearn(Stage):
    """The teacher: `unlearn.method` applied to the model of `deps[0]`."""

    def job(self, inputs: Inputs) -> Job:
        from ..stages.unlearn import unlearn

        return Job("teacher", unlearn, (inputs[self.deps[0]] / "model",))

    def folder(self, inputs: Inputs) -> Path:
        from ..stages.unlearn import unlearn_dir

        return unlearn_dir(self.cfg, inputs[self.deps[0]] / "model")

    def work(self) -> Work:
        u = self.cfg.unlearn
        return Work(u.steps, _sequences(u, u.steps), 6)

    def progress(self) -> Progress:
        return steps_progress(self.cfg.unlearn.steps)


@dataclass(frozen=True, kw_only=True)
class Distill(Stage):
    """A student of the teacher in `deps[0]`, initialised as `init` says: `noised` (at
    its config's `noise.alpha`, reading the base model of `base` for localized noise),
    `random`, or the model of the stage named by `init_from`."""

    label: str
    init: Literal["noised", "random", "model"]
    seed: int
    init_from: str | None = None  # a dep's name, for init "model"
    base: str | None = None  # a dep's name: the model before unlearning

    def _call(self, inputs: Inputs) -> tuple[Path, dict]:
        init = str(inputs[self.init_from] / "model") if self.init == "model" else self.init
        base = inputs[self.base] / "model" if self.base is not None else None
        return inputs[self.deps[0]] / "model", {"init": init, "seed": self.seed,
                                                "base_dir": base}

    def job(self, inputs: Inputs) -> Job:
        from ..stages.distill import distill

        teacher, kwargs = self._call(inputs)
        return Job(self.label, distill, (teacher,), kwargs, self.cfg)

    def folder(self, inputs: Inputs) -> Path:
        from ..stages.distill import distill_dir

        teacher, kwargs = self._call(inputs)
        return distill_dir(self.cfg, teacher, **kwargs)[0]

    def work(self) -> Work:
        steps = self.cfg.distill.steps
        return Work(steps, _sequences(self.cfg.distill, steps), 8)  # student 6N + teacher 2N

    def progress(self) -> Progress:
        return steps_progress(self.cfg.distill.steps)


@dataclass(frozen=True, kw_only=True)
class Attack(Stage):
    """The relearning attack grid on the model of `deps[0]`, under its own config (the
    attack's recipe and the attack seeds of the model's seed)."""

    target: str  # the attacked model's name
    attack: str  # its name in `study.attacks`

    def job(self, inputs: Inputs) -> Job:
        from .attack_configs import attack_job

        return attack_job(self.cfg, self.target, inputs[self.deps[0]] / "model")

    def folder(self, inputs: Inputs) -> Path:
        from ..attacks.registry import attack_folder

        return attack_folder(self.cfg, inputs[self.deps[0]] / "model")

    def _trains(self) -> bool:
        """Whether it trains on the grid's recipes (finetuning, quantize-then-finetune);
        an attack that trains nothing has no steps to estimate or count."""
        from ..attacks.registry import FINETUNE, get

        family = self.cfg.attack.family
        return family == FINETUNE or bool(get(family, key="attack.family").trains)

    def work(self) -> Work | None:
        if not self._trains():
            return None
        a = self.cfg.attack
        runs = len(a.lrs) * len(a.seeds)
        return Work(a.steps * runs, _sequences(a, a.steps) * runs, 6)

    def progress(self) -> Progress | None:
        a = self.cfg.attack
        return runs_progress(len(a.lrs) * len(a.seeds)) if self._trains() else None


@dataclass(frozen=True, kw_only=True)
class Search(Stage):
    """The adaptive attack search on the model of `deps[0]`, after its grid (`deps[1]`),
    under the grid's config, so search.json lands in the grid's folder."""

    trials: int

    def job(self, inputs: Inputs) -> Job:
        from ..attacks.search import search_attack

        return Job(f"search {self.deps[0]}", search_attack,
                   (inputs[self.deps[0]] / "model", self.trials), {"log": None}, self.cfg)

    def work(self) -> Work:
        # Every trial at the largest batch the search may pick: an upper bound.
        steps = self.trials * self.cfg.attack.steps
        return Work(steps, steps * max(self.cfg.search.batch_sizes), 6)


@dataclass(frozen=True, kw_only=True)
class Replays(Stage):
    """Each searched model's best recipe replayed against every other: `models` pairs
    each searched model's stage task with its search config."""

    models: tuple[tuple[str, RunConfig], ...]

    def job(self, inputs: Inputs) -> Job:
        from ..attacks.search import replay_all

        return Job("replays", replay_all, ([inputs[dep] / "model" for dep, _ in self.models],),
                   {"log": None, "model_cfgs": [c for _, c in self.models]})
