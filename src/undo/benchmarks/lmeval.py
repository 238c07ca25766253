"""lm-evaluation-harness as an evaluation set: multiple-choice tasks scored per question.

`LmEvalSet` is an `EvalSet` (`undo.benchmarks.base`) whose units are the questions of one
or more lm-eval tasks. Scoring runs `lm_eval.simple_evaluate` on the model *in memory*
(`HFLM(pretrained=model, tokenizer=tokenizer)`, never a reload from disk) with `samples`
naming exactly the questions asked for, and reads each question's correctness from the
logged samples. So a subset of questions (an attack curve) costs only those questions,
and `acc` over any subset is the mean of the per-question correctness, which for a group
such as `mmlu` is lm-eval's own size-weighted group accuracy.

Settings per task (`LmEvalTask`): shots, `limit` (the first N questions of each leaf task,
or a fraction of them: lm-eval's own `limit` rule), the per-question metric (`acc` or
`acc_norm`) and its chance level. Seeds are lm-eval's four (`LmEvalConfig`). Everything a
number depends on, task versions and the lm-eval version included, is in
`LmEvalSet.provenance()`.

Tasks come from lm-eval's registry or from YAML files under `include_path` (a local task:
`dataset_path: json` with `dataset_kwargs: {data_files: {test: questions.jsonl}}`). Local
tasks are looked up in `include_path` alone first, which avoids indexing lm-eval's
thousands of task files (~20 s) unless a registry task is named.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..configlib import ConfigError, check
from .base import Metrics, Scores

INSTALL_HINT = 'pip install "undo[lm-eval]"'


@dataclass
class LmEvalTask:
    """One lm-eval task (or group, e.g. `mmlu`, `wmdp`) of an evaluation set."""

    task: str = ""
    num_fewshot: int | None = None  # null: the task's own default (0 when it sets none)
    # The first N questions of each leaf task, or a fraction in (0, 1) of them (lm-eval's
    # `limit` rule, ceil(n * fraction)); null: all.
    limit: int | float | None = None
    metric: Literal["acc", "acc_norm"] = "acc"
    chance: float | None = 0.25  # a model that knows nothing (4-way multiple choice)

    def validate(self, p: str) -> None:
        check(bool(self.task.strip()), f"{p}.task", self.task, "an lm-eval task name")
        check(self.num_fewshot is None or self.num_fewshot >= 0, f"{p}.num_fewshot",
               self.num_fewshot, "an integer >= 0 or null")
        lim = self.limit
        check(lim is None or (isinstance(lim, int) and lim > 0)
               or (isinstance(lim, float) and 0 < lim < 1), f"{p}.limit", lim,
               "a positive integer (questions per task), a fraction in (0, 1), or null")
        check(self.chance is None or 0 <= self.chance <= 1, f"{p}.chance", self.chance,
               "a number in [0, 1] or null")


@dataclass
class LmEvalConfig:
    """Named evaluation sets of lm-eval tasks and how they are run."""

    sets: dict[str, list[LmEvalTask]] = field(default_factory=dict)
    include_path: str | None = None  # a folder of task YAML files (local tasks)
    batch_size: int = 16
    max_length: int | None = None  # null: the model's max_position_embeddings
    # lm-eval's seeds (simple_evaluate's defaults); the fewshot seed picks the examples.
    random_seed: int = 0
    numpy_random_seed: int = 1234
    torch_random_seed: int = 1234
    fewshot_random_seed: int = 1234

    def validate(self, p: str) -> None:
        for name, tasks in self.sets.items():
            check(bool(tasks), f"{p}.sets.{name}", tasks, "a non-empty list of tasks")
            names = [t.task for t in tasks]
            check(len(set(names)) == len(names), f"{p}.sets.{name}", names,
                   "distinct task names")
        if self.include_path is not None:
            check(Path(self.include_path).expanduser().is_dir(), f"{p}.include_path",
                   self.include_path, "an existing folder of lm-eval task YAML files")
        check(self.batch_size > 0, f"{p}.batch_size", self.batch_size, "a positive integer")
        check(self.max_length is None or self.max_length > 1, f"{p}.max_length",
               self.max_length, "an integer > 1 or null")


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


# ------------------------------------------------------------------ local tasks

LOCAL_TASK = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question.strip()}}}}\\nA. {{{{choices[0]}}}}\\nB. {{{{choices[1]}}}}\\nC. {{{{choices[2]}}}}\\nD. {{{{choices[3]}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_local_task(folder: str | Path, name: str, data_file: str | Path) -> Path:
    """A task file `folder/name.yaml` over a local JSONL of 4-way multiple-choice questions
    (`question`, `choices` (4 strings), `answer` (0-3): the WMDP / MMLU record format),
    prompted as lm-eval's WMDP tasks are. `folder` is then an `include_path`."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    out = d / f"{name}.yaml"
    out.write_text(LOCAL_TASK.format(name=name, data=json.dumps(str(Path(data_file).resolve()))),
                   encoding="utf-8")
    return out


# ------------------------------------------------------------------ loading tasks


class _TaskYamlLoader(yaml.SafeLoader):
    """Safe YAML that accepts lm-eval's tags (`!function utils.f`) without running them."""


_TaskYamlLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _safe_task_yaml(text: str) -> object:
    """Parse with the safe loader above (no `yaml.load`: nothing can construct objects)."""
    loader = _TaskYamlLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check_task_files(include_path: str) -> None:
    """Refuse a task folder with a YAML file that does not parse: lm-eval would skip it
    silently and report its task as unknown."""
    for f in sorted(Path(include_path).expanduser().rglob("*.y*ml")):
        try:
            doc = _safe_task_yaml(f.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0]
            raise ConfigError(f"lm-eval task file {f} does not parse ({first}; "
                              f"{getattr(e, 'problem_mark', '')}); valid: a YAML mapping "
                              f"of task settings") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"lm-eval task file {f}: its top level is "
                              f"{type(doc).__name__}; valid: a YAML mapping of task settings")


@lru_cache(maxsize=8)
def _task_manager(include_path: str | None, defaults: bool) -> Any:
    """One TaskManager per folder and process (building one indexes every task file)."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError(f"lm-eval metrics need the lm-eval package: {INSTALL_HINT}") from None
    if include_path is not None:
        check_task_files(include_path)
    return TaskManager(include_path=include_path, include_defaults=defaults)


def _data_error(spec: LmEvalTask, e: Exception) -> ConfigError:
    """One message for a task whose data cannot be read (gated, offline, missing file)."""
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    gated = "gated" in text.lower() or type(e).__name__ in ("GatedRepoError",)
    why = ("its dataset is gated: request access on its Hugging Face page and log in "
           "(`hf auth login` or HF_TOKEN), or point the task at a local copy "
           "(dataset_path: json + dataset_kwargs.data_files)" if gated else
           "check the network (or HF_DATASETS_OFFLINE), the dataset name and its files")
    return ConfigError(f"lm-eval task {spec.task!r}: could not load its data ({text}); "
                       f"{why}")


@lru_cache(maxsize=64)
def _load(task: str, num_fewshot: int | None, include_path: str | None, fewshot_seed: int
          ) -> list[Any]:
    """The leaf Task objects of `task` (a group expands to its tasks), sorted by name, with
    the shots and the fewshot seed set. Cached per process: the datasets are read once,
    and attack workers forked from the parent inherit them."""
    spec = LmEvalTask(task, num_fewshot)
    loaded = None
    for defaults in ([False, True] if include_path is not None else [True]):
        tm = _task_manager(include_path, defaults)
        try:
            loaded = tm.load([spec.task])
            break
        except KeyError:
            continue
        except ConfigError:
            raise
        except Exception as e:  # the loader reads the dataset: any failure is the data's
            raise _data_error(spec, e) from None
    if loaded is None:
        where = f"lm-eval's registry or include_path={include_path!r}"
        raise ConfigError(f"unknown lm-eval task {spec.task!r} (not in {where}); valid: a "
                          f"task or group name such as wmdp_bio, mmlu, or a local task "
                          f"file's `task:` under include_path")
    tasks = [loaded["tasks"][n] for n in sorted(loaded["tasks"])]
    for t in tasks:
        if t.get_config("output_type") != "multiple_choice":
            raise ConfigError(f"task {t.config.task!r} has output_type "
                              f"{t.get_config('output_type')!r}; valid: multiple_choice "
                              f"tasks (scored per question)")
        shots = spec.num_fewshot if spec.num_fewshot is not None else (
            t.get_config("num_fewshot") or 0)
        t.set_config(key="num_fewshot", value=shots)
        t.set_fewshot_seed(seed=fewshot_seed)
    return tasks


def _n_selected(n_docs: int, limit: int | float | None) -> int:
    if limit is None:
        return n_docs
    return min(n_docs, math.ceil(n_docs * limit) if isinstance(limit, float) else limit)


# --------------------------------------------------------------------- scoring


@contextlib.contextmanager
def _isolated(model: torch.nn.Module) -> Iterator[None]:
    """Leave no trace of an evaluation on the caller: simple_evaluate reseeds Python,
    NumPy and torch (a training run would continue on reset RNG streams), HFLM switches
    the model to eval mode, and lm-eval logs warnings on every call."""
    py_state, np_state = random.getstate(), np.random.get_state()
    was_training = model.training
    lm_logger = logging.getLogger("lm_eval")
    level = lm_logger.level
    lm_logger.setLevel(logging.ERROR)
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        model.train(was_training)
        lm_logger.setLevel(level)


@lru_cache(maxsize=1)
def _quiet_hflm() -> type:
    """HFLM without its per-request progress bar (an attack logs many evaluations); a
    class built on first use, so that importing undo does not import lm-eval."""
    from lm_eval.models.huggingface import HFLM

    class QuietHFLM(HFLM):
        def loglikelihood(self, requests: Any, disable_tqdm: bool = True) -> Any:
            return super().loglikelihood(requests, disable_tqdm=True)

    return QuietHFLM


def _choice_ce(sample: dict[str, Any]) -> float:
    """−log p(answer | the choices): the answer's log-likelihood renormalised over the
    question's choices (nats). A smooth companion of `acc`, lower = more capable."""
    ll = torch.tensor([float(r[0]) for r in sample["filtered_resps"]], dtype=torch.float64)
    return (torch.logsumexp(ll, 0) - ll[int(sample["target"])]).item()


class LmEvalSet:
    """Questions of lm-eval tasks as a fixed evaluation set (`undo.benchmarks.base.EvalSet`).

    Units are (spec, leaf task, question) in spec order, leaf tasks by name, questions
    by lm-eval doc id. `score` gives per question `correct` (0/1 under the spec's metric),
    `ce` (`_choice_ce`), `spec` (the index of its spec) and `index`; `metrics` gives `acc`
    and `ce` over the questions scored and, with several specs, `acc/<task>`, `ce/<task>`.
    """

    def __init__(self, name: str, specs: Sequence[LmEvalTask], cfg: LmEvalConfig,
                 tokenizer: PreTrainedTokenizerBase) -> None:
        self.name, self.specs, self.cfg, self.tokenizer = name, list(specs), cfg, tokenizer
        self.tasks: list[list[Any]] = []
        for i, s in enumerate(self.specs):
            try:
                self.tasks.append(_load(s.task, s.num_fewshot, cfg.include_path,
                                        cfg.fewshot_random_seed))
            except ConfigError as e:
                raise ConfigError(f"config key 'lm_eval.sets.{name}[{i}].task': {e}") from None
        # Units, spec by spec, leaf tasks interleaved so that any prefix mixes them.
        self.units: list[tuple[int, str, int]] = []
        self.sizes: dict[str, tuple[int, int]] = {}  # leaf task -> (docs, selected)
        for i, (spec, tasks) in enumerate(zip(self.specs, self.tasks, strict=True)):
            per = []
            for t in tasks:
                n = len(t.eval_docs)
                k = _n_selected(n, spec.limit)
                self.sizes[t.config.task] = (n, k)
                per.append([(i, t.config.task, d) for d in range(k)])
            for j in range(max((len(p) for p in per), default=0)):
                self.units += [p[j] for p in per if j < len(p)]
        if not self.units:
            raise ConfigError(f"lm-eval set {name!r}: its tasks "
                              f"({', '.join(s.task for s in self.specs)}) hold no questions; "
                              f"valid: tasks with at least one test question")

    def __len__(self) -> int:
        return len(self.units)

    def score(self, model: PreTrainedModel, idx: Sequence[int] | None = None) -> Scores:
        import lm_eval

        index = (torch.arange(len(self.units)) if idx is None
                 else torch.as_tensor(list(idx), dtype=torch.long))
        wanted = [self.units[i] for i in index.tolist()]
        if not wanted:
            return {"correct": torch.zeros(0), "ce": torch.zeros(0),
                    "spec": torch.zeros(0, dtype=torch.long), "index": index}
        samples: dict[str, list[int]] = {}
        for _, task, doc in wanted:
            samples.setdefault(task, []).append(doc)
        tasks = [t for ts in self.tasks for t in ts if t.config.task in samples]
        c = self.cfg
        with _isolated(model):
            lm = _quiet_hflm()(pretrained=model, tokenizer=self.tokenizer,
                               batch_size=c.batch_size, max_length=c.max_length)
            out = lm_eval.simple_evaluate(
                model=lm, tasks=tasks, samples=samples, bootstrap_iters=0, log_samples=True,
                # The tasks are loaded already; without a manager simple_evaluate would
                # index every task file of lm-eval again (~20 s a call).
                task_manager=_task_manager(c.include_path, c.include_path is None),
                random_seed=c.random_seed, numpy_random_seed=c.numpy_random_seed,
                torch_random_seed=c.torch_random_seed,
                fewshot_random_seed=c.fewshot_random_seed)
        metric = {t.config.task: self.specs[i].metric
                  for i, ts in enumerate(self.tasks) for t in ts}
        value = {(task, s["doc_id"]): (float(s[metric[task]]), _choice_ce(s))
                 for task, rows in out["samples"].items() for s in rows}
        got = [value[(t, d)] for _, t, d in wanted]
        return {"correct": torch.tensor([c for c, _ in got]),
                "ce": torch.tensor([ce for _, ce in got]),
                "spec": torch.tensor([i for i, _, _ in wanted], dtype=torch.long),
                "index": index}

    def metrics(self, scores: Scores, groups: bool = True) -> Metrics:
        def summary(jj: torch.Tensor) -> Metrics:
            return {"acc": scores["correct"][jj].mean().item(),
                    "ce": scores["ce"][jj].mean().item()}

        out = summary(torch.ones(len(scores["correct"]), dtype=torch.bool))
        if groups and len(self.specs) > 1:
            for i, spec in enumerate(self.specs):
                jj = scores["spec"] == i
                if jj.any():
                    out.update({f"{k}/{spec.task}": v for k, v in summary(jj).items()})
        return out

    def subset(self, per_group: int) -> list[int]:
        """The first `per_group` questions of each spec (leaf tasks interleaved); 0: all."""
        if per_group <= 0:
            return list(range(len(self.units)))
        taken: dict[int, int] = {}
        out = []
        for j, (i, _, _) in enumerate(self.units):
            if taken.get(i, 0) < per_group:
                taken[i] = taken.get(i, 0) + 1
                out.append(j)
        return out

    def chance(self) -> float | None:
        """The chance level of `acc`: the specs' common one (None when they differ)."""
        return common_chance(self.specs)

    def provenance(self) -> dict[str, Any]:
        """What every number of this set depends on, for results files."""
        c = self.cfg
        return {
            "lm_eval_version": lm_eval_version(), "set": self.name, "questions": len(self),
            "seeds": {k: getattr(c, k) for k in ("random_seed", "numpy_random_seed",
                                                 "torch_random_seed", "fewshot_random_seed")},
            "batch_size": c.batch_size, "max_length": c.max_length,
            "include_path": c.include_path,
            "tasks": [{**asdict(s), "leaf_tasks": {
                t.config.task: {"version": t.VERSION,
                                "num_fewshot": t.get_config("num_fewshot"),
                                "docs": self.sizes[t.config.task][0],
                                "selected": self.sizes[t.config.task][1]}
                for t in ts}} for s, ts in zip(self.specs, self.tasks, strict=True)],
        }


def common_chance(specs: Sequence[LmEvalTask]) -> float | None:
    chances = {s.chance for s in specs}
    return chances.pop() if len(chances) == 1 else None
