"""A NaN or inf loss stops training with `DivergedError`: the step is not applied, the
last good checkpoint stays, and nothing non-finite reaches metrics.jsonl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from undo.benchmarks.arithmetic.benchmark import ItemBatches
from undo.checkpoint import COUNTERS_FILE
from undo.cli import main
from undo.config import ConfigError, ModelConfig, OptimConfig
from undo.models import build_model
from undo.objectives import LOSSES
from undo.train import DivergedError, train

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "arithmetic" / "smoke.yaml"


class NaNAt:
    """Cross-entropy whose loss turns NaN from call `at` on (a blow-up, injected)."""

    def __init__(self, at: int) -> None:
        self.ce, self.at, self.calls = LOSSES.get("ce")(), at, 0

    def loss(self, model, batch):
        self.calls += 1
        loss, metrics = self.ce.loss(model, batch)
        return (loss * float("nan") if self.calls >= self.at else loss), metrics


def build_model_micro(tokenizer):
    return build_model(ModelConfig(preset="micro"), tokenizer, seed=0)


def _records(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]


def test_nan_loss_stops_keeps_the_checkpoint_and_logs_nothing_bad(tokenizer, bench,
                                                                   tmp_path):
    cfg = OptimConfig(steps=10, batch_size=8, lr=1e-3, log_every=1, checkpoint_every=2)
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0)
    model = build_model_micro(tokenizer)
    with pytest.raises(DivergedError, match=r"diverged at step 5 \(loss nan") as e:
        train(model, NaNAt(5), batches, cfg, tmp_path, progress=False, desc="unlearn x")
    assert isinstance(e.value, ConfigError)  # the CLI's one-line error, exit 2
    assert "checkpoint (step 4)" in str(e.value) and "unlearn x" in str(e.value)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # step 5 not applied
    recs = _records(tmp_path)
    assert max(r["step"] for r in recs) == 4
    assert all(math.isfinite(v) for r in recs for v in r.values() if isinstance(v, float))
    assert json.loads((tmp_path / "state" / COUNTERS_FILE).read_text())["step"] == 4

    # The kept checkpoint is a good one: a sound run resumes from it and finishes.
    fresh = build_model_micro(tokenizer)
    r = train(fresh, LOSSES.get("ce")(), batches, cfg, tmp_path, progress=False)
    assert r.steps == 10 and not (tmp_path / "state").exists()
    assert [x["step"] for x in _records(tmp_path)] == list(range(1, 11))


def test_absurd_learning_rate_diverges(micro_model, tokenizer, bench, tmp_path):
    # lr 1e6 does not do it (Adam's steps saturate to a uniform model, loss ln V);
    # 1e30 overflows the weights' squares in the norms: the gradient norm is NaN.
    cfg = OptimConfig(steps=20, batch_size=8, lr=1e30, log_every=1)
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0)
    with pytest.raises(DivergedError, match=r"diverged at step \d+ .*lr \(now 1e\+30\)"):
        train(micro_model, LOSSES.get("ce")(), batches, cfg, tmp_path, progress=False)
    assert all(math.isfinite(r["loss"]) for r in _records(tmp_path))


def test_cli_prints_one_line_and_writes_no_result(tmp_path, capsys):
    rc = main(["pretrain", str(SMOKE), "--which", "base", f"out_dir={tmp_path}",
               "pretrain.lr=1e30", "pretrain.eval_every=0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("undo: error: pretrain base: training diverged at step ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list(tmp_path.glob("*/stages/*/summary.json"))
