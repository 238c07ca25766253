"""lm-evaluation-harness as an evaluation set, offline: local multiple-choice tasks, a
tiny real model in memory, per-question scores, seeds, provenance, and bad input."""

from __future__ import annotations

import random
from pathlib import Path

import lm_eval
import numpy as np
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from lmeval_tasks import write_questions, write_task
from undo.benchmarks.base import take
from undo.benchmarks.lmeval import LmEvalConfig, LmEvalSet, LmEvalTask
from undo.config import ConfigError, ModelConfig
from undo.configlib import from_dict
from undo.models import build_model
from undo.tokenizers import train_bpe_tokenizer

N = 40


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tasks")
    write_task(d, "mc_one", N, seed=1)
    write_task(d, "mc_two", 10, seed=2)
    return d


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer([" ".join(random.Random(0).sample(range(999), 50).__repr__())
                                + " Question which word is A. B. C. D. Answer:"] * 4, 300)


@pytest.fixture(scope="module")
def model(tok):
    return build_model(ModelConfig(preset="micro"), tok, seed=0)


def _set(tasks_dir: Path, tok, *specs: LmEvalTask, name: str = "forget") -> LmEvalSet:
    cfg = LmEvalConfig(sets={name: list(specs)}, include_path=str(tasks_dir), batch_size=8)
    return LmEvalSet(name, specs, cfg, tok)


def test_accuracy_is_lm_evals_own(tasks_dir, tok, model):
    """acc over all questions is the number simple_evaluate reports for the task."""
    es = _set(tasks_dir, tok, LmEvalTask("mc_one"))
    scores = es.score(model)
    assert len(es) == N and set(scores["correct"].tolist()) <= {0.0, 1.0}
    tm = TaskManager(include_path=str(tasks_dir), include_defaults=False)
    ref = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tok, batch_size=8),
                                  tasks=["mc_one"], task_manager=tm, bootstrap_iters=0)
    assert es.metrics(scores)["acc"] == pytest.approx(ref["results"]["mc_one"]["acc,none"])


def test_subset_scores_match_full_scores(tasks_dir, tok, model):
    """Scoring only some questions gives those questions' scores (attack curves)."""
    es = _set(tasks_dir, tok, LmEvalTask("mc_one"), LmEvalTask("mc_two"))
    full = es.score(model)
    idx = es.subset(3)
    assert [es.units[i][0] for i in idx] == [0, 0, 0, 1, 1, 1]
    part = es.score(model, idx)
    assert torch.equal(part["correct"], take(full, idx)["correct"])
    m = es.metrics(full)
    assert set(m) == {"acc", "ce", "acc/mc_one", "ce/mc_one", "acc/mc_two", "ce/mc_two"}
    assert m["acc"] == pytest.approx(full["correct"].mean().item())
    assert es.metrics(full, groups=False).keys() == {"acc", "ce"}
    assert len(es.score(model, [])["correct"]) == 0
    # choice CE: the answer's share of the 4 choices; a question is right where the
    # answer holds the largest share, so CE < log 2 means correct (p > 1/2)
    assert ((full["ce"] < torch.log(torch.tensor(2.0))) <= full["correct"].bool()).all()
    assert (full["ce"] > 0).all()


def test_limit_count_and_fraction(tasks_dir, tok):
    assert len(_set(tasks_dir, tok, LmEvalTask("mc_one", limit=7))) == 7
    assert len(_set(tasks_dir, tok, LmEvalTask("mc_one", limit=0.1))) == 4  # ceil(4.0)
    assert len(_set(tasks_dir, tok, LmEvalTask("mc_one", limit=0.11))) == 5  # ceil(4.4)


def test_no_side_effects_and_provenance(tasks_dir, tok, model):
    """Evaluating reseeds nothing the caller sees and leaves the model in train mode."""
    es = _set(tasks_dir, tok, LmEvalTask("mc_two", num_fewshot=2))
    model.train()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    es.score(model)
    after = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    assert after == (random.random(), np.random.rand(), torch.rand(1).item())
    assert model.training
    p = es.provenance()
    assert p["lm_eval_version"] == lm_eval.__version__ if hasattr(lm_eval, "__version__") \
        else p["lm_eval_version"]
    leaf = p["tasks"][0]["leaf_tasks"]["mc_two"]
    assert leaf == {"version": 1.0, "num_fewshot": 2, "docs": 10, "selected": 10}
    assert p["seeds"]["fewshot_random_seed"] == 1234


def test_unknown_task(tasks_dir, tok):
    with pytest.raises(ConfigError, match=r"'lm_eval.sets.forget\[0\].task': unknown lm-eval "
                                          r"task 'no_such_task'"):
        _set(tasks_dir, tok, LmEvalTask("no_such_task"))


def test_task_file_that_does_not_parse(tmp_path, tok):
    write_task(tmp_path, "fine", 4)
    (tmp_path / "broken.yaml").write_text("task: broken\ndataset_path: json\n  x: [1\n")
    with pytest.raises(ConfigError, match=r"broken.yaml does not parse"):
        _set(tmp_path, tok, LmEvalTask("fine"))


def test_gated_dataset(tmp_path, tok):
    """A gated dataset without access (datasets' own error, raised by the task's loader)."""
    (tmp_path / "gate.py").write_text(
        "from datasets.exceptions import DatasetNotFoundError\n"
        "def load(**kwargs):\n"
        "    raise DatasetNotFoundError(\"Dataset 'cais/secret' is a gated dataset on the "
        "Hub. You must be authenticated to access it.\")\n")
    text = (tmp_path / "x.yaml")
    write_task(tmp_path, "x", 2)
    text.write_text(text.read_text().replace("dataset_path: json",
                                             "dataset_path: cais/secret\n"
                                             "custom_dataset: !function gate.load"))
    with pytest.raises(ConfigError, match="lm-eval task 'x'.*gated.*request access"):
        _set(tmp_path, tok, LmEvalTask("x"))


def test_config_validation():
    with pytest.raises(ConfigError, match="limit"):
        from_dict({"task": "mmlu", "limit": 1.5}, LmEvalTask)
    with pytest.raises(ConfigError, match="include_path"):
        from_dict({"include_path": "/no/such/folder"}, LmEvalConfig)
    assert from_dict({"sets": {"forget": [{"task": "wmdp_bio", "limit": 1000}]}},
                     LmEvalConfig).sets["forget"][0].limit == 1000


def test_questions_file(tmp_path):
    assert len(write_questions(tmp_path / "q.jsonl", 3).read_text().splitlines()) == 3
