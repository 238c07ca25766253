"""Teacher FLOPs as recorded by the teacher cache, the training loop and the distillation
stage, against a count made here by hand: 2·N·positions for a forward (6·N for a training
step), N from the model's config and positions from the batches themselves."""

import copy

import torch

from undo.artifacts import read_json
from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import ModelConfig, OptimConfig, load_config
from undo.models import build_model, save_model
from undo.objectives import LOSSES
from undo.stages.distill import distill
from undo.stages.teacher_cache import TeacherCache
from undo.train import train


def hand_n(model: torch.nn.Module) -> int:
    """N of a Llama model, from its config alone.

    Per layer the q, k, v, o projections (h·h each, as many key/value heads as heads) and
    the gate, up and down projections (h·I each); the tied output head (V·h, a matmul
    although its weight is the embedding's); not the embedding lookup. Plus the RMSNorm
    scales ((2L + 1)·h): the 2N convention of `undo.compute` counts every weight except
    the lookup, and those are 0.7% of N on micro, 0.1% on tiny.
    """
    c = model.config
    h, inter, layers, vocab = (c.hidden_size, c.intermediate_size, c.num_hidden_layers,
                               c.vocab_size)
    assert c.num_key_value_heads == c.num_attention_heads and c.tie_word_embeddings
    linear = layers * (4 * h * h + 3 * h * inter) + vocab * h
    return linear + (2 * layers + 1) * h


def positions(batches, steps: range) -> int:
    """Positions (padding included) of the batches of `steps`, one micro-batch each."""
    return sum(batches(s, 0)["input_ids"].numel() for s in steps)


def test_hand_count_is_the_linear_layers_plus_head_plus_norms(tokenizer):
    # The formula above against the modules themselves, so a wrong formula cannot hide.
    m = build_model(ModelConfig(preset="micro", num_layers=3), tokenizer, seed=0)
    linear = sum(x.in_features * x.out_features for x in m.modules()
                 if isinstance(x, torch.nn.Linear))  # includes lm_head (tied, V·h)
    norms = sum(p.numel() for n, p in m.named_parameters() if "norm" in n)
    assert hand_n(m) == linear + norms == 3 * (4 * 32 * 32 + 3 * 32 * 64) + 50 * 32 + 7 * 32


def test_teacher_cache_build_flops(tokenizer, bench, tmp_path):
    teacher = build_model(ModelConfig(preset="micro", num_layers=3), tokenizer, seed=1)
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 16, seed=0)
    cache = TeacherCache(tmp_path / "cache", teacher, batches, key={"t": 1}, chunk_steps=3)
    cache.fill(7)  # steps 0..6 need chunks 0, 1, 2: steps 0..8 are built
    assert cache.built_chunks == 3
    assert cache.build_flops == 2 * hand_n(teacher) * positions(batches, range(9))


def test_online_teacher_counted_by_the_training_loop(tokenizer, bench, tmp_path):
    # Teacher and student of different sizes, so 2·N_teacher cannot pass for 2·N_student.
    teacher = build_model(ModelConfig(preset="micro", num_layers=3), tokenizer, seed=1)
    student = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0)
    cfg = OptimConfig(steps=3, batch_size=8, lr=1e-3, log_every=0, warmup_steps=0)
    r = train(student, LOSSES.get("distill_kl")(copy.deepcopy(teacher)), batches, cfg,
              tmp_path / "run", progress=False)
    pos = positions(batches, range(3))
    assert r.flops == (6 * hand_n(student) + 2 * hand_n(teacher)) * pos


def test_distill_summary_teacher_flops(tokenizer, tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path / 'runs'}", "progress=false",
                             "data.eval_items_per_op=4", "distill.steps=3",
                             "distill.batch_size=8", "distill.eval_every=0",
                             "distill.checkpoint_every=0", "distill.warmup_steps=0",
                             "distill.stop=budget"])
    teacher = build_model(ModelConfig(preset="micro"), tokenizer, seed=1)
    s = read_json(distill(cfg.at_alpha(0.5), save_model(teacher, tokenizer, tmp_path / "teacher"),
                          init="noised", seed=0) / "summary.json")
    # The stage's data: its benchmark's trained items, batches seeded by the run's seed.
    bench = ArithmeticData(cfg.data)
    pos = positions(ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=cfg.seed), range(3))
    n = hand_n(teacher)  # the student is a noised copy: same shape
    assert s["positions"] == pos
    assert s["teacher_forward_flops"] == 2 * n * pos
    assert s["flops_incl_teacher"] == 6 * n * pos + 2 * n * pos
