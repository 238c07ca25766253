"""Any causal LM on real text: a tiny random model of every supported family, saved with a
locally trained BPE, goes through unlearn -> noise -> distill -> attack -> eval on the
text benchmark (forget Python source, retain English prose that CPython ships)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from families import FAMILY_NAMES, tiny_configs
from undo.artifacts import read_json
from undo.attacks.grid import attack, evaluate_model
from undo.benchmarks.text.shipped import python_docs
from undo.config import load_config
from undo.models import load_model
from undo.stages.distill import distill
from undo.stages.noise import noise
from undo.stages.unlearn import unlearn
from undo.tokenizers import train_bpe_tokenizer

STEPS = ["unlearn.steps=2", "unlearn.batch_size=2", "unlearn.eval_every=0",
         "distill.steps=2", "distill.batch_size=2", "distill.stop=budget",
         "distill.checkpoint_every=0", "attack.steps=2", "attack.batch_size=2",
         "attack.lrs=[1e-3]", "attack.budgets=[0]", "attack.eval_every=1",
         "attack.curve_items_per_op=2", "attack.workers=1"]



@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(python_docs()[:200], vocab_size=300)


def _text_cfg(tmp_path, model_dir, *extra):
    return load_config(None, [
        f"out_dir={tmp_path}", "progress=false", "threads=1", f"model.name_or_path={model_dir}",
        "data.benchmark=text", "data.tokenizer=model", "data.seq_len=16",
        "data.eval_windows=4",
        "data.forget=[{shipped: python-source, max_documents: 80}]",
        "data.retain=[{shipped: python-docs, max_documents: 160}]",
        *STEPS, *extra])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_stage_runs_on_text(tmp_path, bpe, name):
    special = {"bos_token_id": bpe.bos_token_id, "eos_token_id": bpe.eos_token_id,
               "pad_token_id": bpe.pad_token_id}
    config = tiny_configs(len(bpe), special, positions=32)[name]
    torch.manual_seed(0)
    base = tmp_path / "base"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    bpe.save_pretrained(base)
    cfg = _text_cfg(tmp_path, base)

    teacher = unlearn(cfg, base)
    s = read_json(teacher / "summary.json")
    assert s["steps"] == 2 and s["after"]["forget/ce"] > 0 and s["after"]["retain/ce"] > 0

    noised = noise(cfg.at_alpha(0.5), teacher / "model", tmp_path / "noised", seed=1)
    assert noised.to_dict()["alpha"] == 0.5
    assert any(not torch.equal(a, b) for a, b in zip(
        load_model(tmp_path / "noised").parameters(),
        load_model(teacher / "model").parameters(), strict=True))

    student = distill(cfg.at_alpha(0.5), teacher, init="noised", seed=1)
    ds = read_json(student / "summary.json")
    assert ds["steps"] == 2 and ds["stop"]["rule"] == "budget"
    assert ds["teacher_outputs"]["mode"] in ("full", "online")

    rel = read_json(attack(cfg, student / "model") / "relearn.json")
    assert rel["worst_case"]["forget/ce"]["2"]["value"] > 0
    assert rel["data"]["eval_disjoint_from_attack"] is True

    metrics = evaluate_model(cfg, student / "model")
    assert set(metrics) >= {"forget/ce", "forget/acc", "retain/ce", "retain/acc"}
    assert all(v == v for v in metrics.values())  # no NaN
