"""The in-context attack: the prefixed model is exactly the model run on prefix + query,
k = 0 is the model itself, the prefix fits the model's context, and a model that never
had the ability does not get it from examples."""

from __future__ import annotations

import json
from dataclasses import replace

import torch

from undo.attacks import registry
from undo.attacks.in_context import Prefixed, examples, fit
from undo.attacks.scored import Context
from undo.benchmarks.arithmetic.benchmark import Benchmark
from undo.config import load_config
from undo.models import save_model

FAST = ["data.eval_items_per_op=8", "attack.steps=4", "attack.budgets=[0,4]",
        "attack.curve_items_per_op=2", "attack.seeds=[0,1]", "attack.precision=fp32",
        "threads=1", "progress=false"]


def test_prefixed_logits_are_the_models_on_prefix_and_query(micro_model):
    prefix = torch.tensor([1, 5, 6, 7, 2])
    ids = torch.tensor([[1, 8, 9, 3], [1, 4, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    got = Prefixed(micro_model, prefix)(input_ids=ids, attention_mask=mask).logits
    for i in range(2):
        n = int(mask[i].sum())
        full = micro_model(input_ids=torch.cat([prefix, ids[i, :n]])[None]).logits[0, 5:]
        assert torch.allclose(got[i, :n], full, atol=1e-5)


def test_examples_come_from_the_forget_attack_split_and_fit_the_context(tmp_path, tokenizer,
                                                                        micro_model):
    cfg = load_config(None, [f"out_dir={tmp_path}", *FAST])
    bench = Benchmark(cfg.data)
    ctx = Context(cfg, bench, tokenizer, None, tmp_path)
    shots = examples(ctx, 16, seed=0)
    assert len(shots) == 16 and shots != examples(ctx, 16, seed=1)
    a = replace(cfg.attack, retain_fraction=0.0, batch_size=16)
    items = bench.attack_batches(a, tokenizer, seed="0-in-context-0").items(0)
    assert {it.op for it in items} <= set(bench.data.forget_ops)
    assert all((it.a, it.b) in bench.data.splits[it.op].attack for it in items)
    assert len(shots[0]) == 2 + len(items[0].prompt()) + len(items[0].answer_text())
    kept = fit(shots, 128)
    assert sum(map(len, kept)) + max(map(len, shots)) + 8 <= 128 and kept == shots[:len(kept)]


def test_no_examples_is_the_model_itself_and_examples_teach_a_blank_model_nothing(
        tmp_path, micro_model, tokenizer):
    cfg = load_config(None, [f"out_dir={tmp_path}", *FAST,
                             "attack.options={in_context: {shots: [0, 4]}}"])
    save_model(micro_model, tokenizer, tmp_path / "gold")
    c = registry.configured(cfg, "in_context")
    rel = json.loads((registry.run_attack(c, tmp_path / "gold") / "relearn.json").read_text())
    by = {(r["setting"], r["seed"]): r for r in rel["runs"]}
    assert by["k=0", 0]["budgets"]["0"] == rel["start"]
    assert by["k=4", 0]["info"]["shots_used"] == 4
    assert by["k=4", 0]["attack_tokens"] > 0 and rel["cost"]["attack_flops"] > 0
    for r in rel["runs"]:
        assert r["budgets"]["4"]["forget/acc"] <= rel["start"]["forget/acc"]
