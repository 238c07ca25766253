import json

import pytest
import torch

from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.config import OptimConfig
from undo.models import build_model
from undo.objectives import LOSSES
from undo.train import lr_lambda, train


def _cfg(**kw):
    base = dict(steps=40, batch_size=16, lr=3e-3, log_every=5, schedule="cosine",
                warmup_steps=4)
    base.update(kw)
    return OptimConfig(**base)


def test_loss_decreases(micro_model, tokenizer, bench, tmp_path):
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 32, seed=0)
    r = train(micro_model, LOSSES.get("ce")(), batches, _cfg(steps=60), tmp_path,
              progress=False)
    logs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in logs if "loss" in x]
    assert losses[-1] < 0.7 * losses[0]
    assert r.steps == 60 and r.tokens > 0 and r.flops > 0
    assert logs[-1]["tokens"] == r.tokens


def test_schedule_shapes():
    f = lr_lambda(_cfg(steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.1)
    assert 0.1 < f(55) < 1.0
    g = lr_lambda(_cfg(steps=100, warmup_steps=0, schedule="constant"))
    assert g(0) == g(99) == 1.0


def test_grad_accum_equals_big_batch(tokenizer, bench):
    """Gradients of two micro-batches of 8 equal those of their concatenation."""
    import random

    from undo.benchmarks.arithmetic.data import encode
    from undo.config import ModelConfig
    from undo.train import _default_gradients

    stream = bench.stream(bench.retain_ops, word_fraction=0.0)
    items = stream.sample(random.Random(0), 16)
    halves = [encode(items[:8], tokenizer), encode(items[8:], tokenizer)]
    whole = encode(items, tokenizer)
    # Equations of one length with equal label counts: the mean of means is the mean.
    assert (halves[0]["labels"] != -100).sum() == (halves[1]["labels"] != -100).sum()
    ce = LOSSES.get("ce")()
    a = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    b = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    _default_gradients(ce, a, halves, lambda loss: loss.backward())
    _default_gradients(ce, b, [whole], lambda loss: loss.backward())
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(x.grad, y.grad, atol=1e-7, rtol=1e-4)


class _Kill(Exception):
    pass


def test_resume_gives_identical_weights(tokenizer, bench, tmp_path):
    from undo.config import ModelConfig

    cfg = _cfg(steps=30, checkpoint_every=10, weight_decay=0.1)
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 16, seed=0)
    ce = LOSSES.get("ce")()

    ref = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    train(ref, ce, batches, cfg, tmp_path / "ref", progress=False)

    def killer(step, model):
        if step == 17:
            raise _Kill

    run = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    with pytest.raises(_Kill):
        train(run, ce, batches, cfg, tmp_path / "run", progress=False, on_step=killer)
    assert (tmp_path / "run" / "state" / "done").exists()  # checkpoint of step 10
    fresh = build_model(ModelConfig(preset="micro"), tokenizer, seed=0)
    r = train(fresh, ce, batches, cfg, tmp_path / "run", progress=False)
    assert r.steps == 30
    for x, y in zip(ref.parameters(), fresh.parameters(), strict=True):
        assert torch.equal(x, y)
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert not (tmp_path / "run" / "state").exists()


def test_early_stop_and_eval(micro_model, tokenizer, bench):
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 16, seed=0)
    calls = []

    def evaluate(m):
        calls.append(1)
        return {"x": float(len(calls))}

    r = train(micro_model, LOSSES.get("ce")(), batches, _cfg(steps=50, eval_every=5),
              evaluate=evaluate, should_stop=lambda m: m["x"] >= 3, progress=False)
    assert r.stopped_early and r.steps == 15 and len(r.evals) == 3


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["ce", "sam"])
def test_two_processes_stay_in_sync(tmp_path, tokenizer, bench, objective):
    """Under `torchrun` (2 CPU processes, gloo) every rank ends with the same weights,
    also for SAM's own gradient pass (which bypasses DDP's all-reduce), checkpoints are
    written and removed without races, and tokens count both ranks' data."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from undo.compute import count_tokens

    torchrun = shutil.which("torchrun")
    assert torchrun is not None, "torchrun comes with torch"
    script = Path(__file__).parents[1] / "fixtures" / "ddp_train.py"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(script),
                           str(tmp_path), objective], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["tokens"] == ranks[1]["tokens"]
    expected = sum(count_tokens(ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0,
                                        rank=r)(s))[0]
                   for r in (0, 1) for s in range(6))
    assert ranks[0]["tokens"] == expected
    assert not (tmp_path / "run" / "state").exists()  # finished: checkpoint removed
    logged = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in logged] == [2, 4, 6]  # one writer, no duplicates


def test_flops_count_a_reference_only_where_it_runs(micro_model, tokenizer, bench):
    """MaxEnt with a KL retain term runs its frozen copy on retain data only: the loop
    charges 6·N per trained position plus 2·N per retain position, not per position."""
    from undo.benchmarks.arithmetic.benchmark import Benchmark, Config
    from undo.compute import count_tokens, matmul_params
    from undo.config import UnlearnConfig
    from undo.objectives.unlearning import build_objective

    objective = build_objective(UnlearnConfig(method="maxent", method_args={"retain": "kl"},
                                              steps=2, batch_size=8, log_every=0))
    batches = Benchmark(Config()).batches("unlearn", tokenizer, 8, seed=0)
    r = train(micro_model, objective, batches, _cfg(steps=2, batch_size=8), progress=False)
    n = matmul_params(micro_model)
    expected = sum(6.0 * n * count_tokens(batches(s))[1]
                   + 2.0 * n * batches(s)["retain"]["input_ids"].numel() for s in range(2))
    assert r.flops == pytest.approx(expected)
