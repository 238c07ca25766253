"""The `wmdp` benchmark offline: text corpora written here, lm-eval sets that are local
multiple-choice tasks (stand-ins of WMDP and MMLU in their record format), a tiny model."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from lmeval_tasks import write_task
from undo.benchmarks import build_benchmark
from undo.benchmarks.evaluate import evaluate
from undo.config import ConfigError, ModelConfig, load_config, run_config
from undo.models import build_model

torch.set_num_threads(1)


def write_jsonl(path: Path, words: str, n: int, seed: int) -> str:
    """`n` documents of 3-5 sentences drawn from `words`."""
    rng = random.Random(seed)
    vocab = words.split()
    docs = [" ".join(" ".join(rng.choices(vocab, k=rng.randint(5, 12))) + "."
                     for _ in range(rng.randint(3, 5))) for _ in range(n)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("wmdp")
    write_task(d / "tasks", "bio_local", 12, seed=1)
    write_task(d / "tasks", "general_local", 8, seed=2)
    bio, general = "cell virus gene protein enzyme host", "the cat dog sun moon runs sits red"
    return {"forget": write_jsonl(d / "bio.jsonl", bio, 60, 1),
            "retain": write_jsonl(d / "general.jsonl", general, 60, 2),
            "tasks": str(d / "tasks")}


def section(setup: dict[str, str], **over: Any) -> dict[str, Any]:
    return {"benchmark": "wmdp", "forget": [{"path": setup["forget"]}],
            "retain": [{"path": setup["retain"]}], "seq_len": 16, "vocab_size": 320,
            "eval_fraction": 0.2, "attack_fraction": 0.2, "tokenizer": "bpe",
            "lm_eval": {"include_path": setup["tasks"], "batch_size": 8, "sets": {
                "forget": [{"task": "bio_local", "limit": 6}],
                "retain": [{"task": "general_local", "num_fewshot": 1}],
                "forget_final": [{"task": "bio_local"}]}}, **over}


def test_metrics_are_lm_eval_accuracies(setup):
    bench = build_benchmark(run_config({"data": section(setup)}).data)
    assert bench.forget_metric.name == "forget/acc" and bench.forget_metric.higher_is_better
    assert bench.forget_metric.chance == 0.25 and bench.retain_metric.name == "retain/acc"
    assert bench.eval_names == ("retain", "forget", "forget_final", "retain_ce", "forget_ce")
    tok = bench.own_tokenizer()
    model = build_model(ModelConfig(preset="micro"), tok, seed=0)
    m = evaluate(model, bench, tok)
    assert len(bench.eval_set("forget", tok)) == 6
    assert len(bench.eval_set("forget_final", tok)) == 12
    for k in ("forget/acc", "retain/acc", "forget_final/acc"):
        assert 0 <= m[k] <= 1
    assert m["forget_ce/ce"] > 0 and m["retain_ce/ce"] > 0 and m["forget/ce"] > 0
    a = run_config({"data": section(setup), "attack": {"retain_fraction": 0.5}}).attack
    info = bench.check_attack(a, [bench.attack_batches(a, tok, "0-0")], 2, tok)
    leaf = info["lm_eval"]["retain"]["tasks"][0]["leaf_tasks"]["general_local"]
    assert leaf["num_fewshot"] == 1 and leaf["version"] == 1.0
    assert info["window_counts"]["retain_windows"] > 0
    d = json.loads(json.dumps(bench.describe()))  # summaries can hold it
    assert d["lm_eval"]["forget"]["tasks"][0]["leaf_tasks"]["bio_local"]["selected"] == 6


def test_paper_defaults_load_without_network(setup):
    data = section(setup)
    del data["lm_eval"]
    cfg = run_config({"data": data}).data
    assert [t.task for t in cfg.lm_eval.sets["forget"]] == ["wmdp_bio", "wmdp_cyber"]
    assert cfg.lm_eval.sets["retain"][0].limit == 0.07


@pytest.mark.parametrize("sets, match", [
    ({"forget": [{"task": "bio_local"}]}, "at least the sets 'forget' and 'retain'"),
    ({"forget": [{"task": "a"}], "retain": [{"task": "b"}], "x_ce": [{"task": "c"}]},
     "do not end in '_ce'"),
    ({"forget": [], "retain": [{"task": "b"}]}, "non-empty list of tasks"),
])
def test_bad_sets(setup, sets, match):
    data = section(setup)
    data["lm_eval"]["sets"] = sets
    with pytest.raises(ConfigError, match=match):
        run_config({"data": data})


@pytest.mark.slow
def test_undo_run_with_an_lm_eval_forget_metric(setup, tmp_path):
    """The whole study, end to end, judged by a local multiple-choice task."""
    from undo.study.graph import run_study

    cfg = load_config(None, [
        f"data={json.dumps(section(setup))}", "model.preset=micro", f"out_dir={tmp_path}",
        "pretrain.steps=4", "pretrain.batch_size=4", "pretrain.eval_every=0",
        "pretrain.checkpoint_every=0", "unlearn.steps=2", "unlearn.batch_size=2",
        "unlearn.eval_every=0", "distill.steps=2", "distill.batch_size=4",
        "distill.eval_every=2", "distill.stop=budget", "distill.checkpoint_every=0",
        "attack.steps=2", "attack.lrs=[1e-3]", "attack.budgets=[0]", "attack.eval_every=1",
        "attack.batch_size=4", "attack.curve_items_per_op=3", "study.alphas=[0.5]",
        "study.oracles=false", "study.unlearn_distill=false", "study.workers=1",
        "progress=false"])
    summary = run_study(cfg, log=lambda _: None)
    assert summary["metric"]["name"] == "forget/acc" and summary["metric"]["chance"] == 0.25


CONFIGS = Path(__file__).resolve().parents[2] / "src" / "undo" / "configs" / "wmdp"
TEACHERS = {  # shipped config -> (forget task, method, retain weight) as the authors ran them
    "gemma2-2b-maxent.yaml": ("wmdp_bio", "maxent", 0.3),
    "gemma2-2b-maxent-cyber.yaml": ("wmdp_cyber", "maxent", 0.2),
    "gemma2-2b-rmu.yaml": ("wmdp_bio", "rmu", 0.5),
    "gemma2-2b-rmu-cyber.yaml": ("wmdp_cyber", "rmu", 0.5),
}


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_shipped_teachers_run_offline(setup, tmp_path, name):
    """Each shipped WMDP teacher (bio and cyber, MaxEnt and RMU) as configured: its loss
    weighting, retain term and window lengths, on local stand-ins of its data and tasks."""
    from undo.stages.pretrain import pretrain
    from undo.stages.unlearn import unlearn

    task, method, weight = TEACHERS[name]
    shipped = load_config(str(CONFIGS / name), [])
    assert shipped.unlearn.method == method and shipped.unlearn.retain_weight == weight
    assert shipped.unlearn.method_args["weighting"] == "convex"
    assert shipped.data.unlearn_seq_len == 256 and shipped.data.attack_seq_len == 256
    assert shipped.data.seq_len == 1024 and shipped.distill.warmup_steps == 50
    assert [t.task for t in shipped.data.lm_eval.sets["forget"]] == [task]
    args = {**shipped.unlearn.method_args}
    if method == "rmu":  # the micro model's layers
        args.update(layer=1, train_layers=[0, 1], steering_coef=4.0)
    data = section(setup, seq_len=16, unlearn_seq_len=8, attack_seq_len=12)
    cfg = load_config(str(CONFIGS / name), [
        "model.name_or_path=null", "model.preset=micro", "model.dtype=float32",
        "model.gradient_checkpointing=false", f"data={json.dumps(data)}",
        f"unlearn.method_args={json.dumps(args)}", f"out_dir={tmp_path}",
        "pretrain.steps=2", "pretrain.batch_size=4", "pretrain.eval_every=0",
        "pretrain.checkpoint_every=0", "unlearn.steps=2", "unlearn.batch_size=2",
        "unlearn.grad_accum=1", "progress=false"])
    bench = build_benchmark(cfg.data)
    tok = bench.own_tokenizer()
    u = bench.batches("unlearn", tok, 2, seed=0)(0)
    assert u["forget"]["input_ids"].shape[1] == 8 and u["retain"]["input_ids"].shape[1] == 8
    a = run_config({"data": data, "attack": {"retain_fraction": 0.5, "batch_size": 4}}).attack
    assert bench.attack_batches(a, tok, "0-0")(0)["input_ids"].shape[1] == 12
    assert bench.eval_set("forget_ce", tok).windows.shape[1] == 16
    d = unlearn(cfg, pretrain(cfg, "base"))
    out = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else {}
    assert d.is_dir() and (not out or out["method"] == method)
