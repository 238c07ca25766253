"""Pretraining: the gold standard's recipe and what a pretraining stage writes."""

from __future__ import annotations

import json

from undo.config import load_config
from undo.stages.pretrain import gold_recipe, pretrain


def test_gold_runs_the_base_recipe_unless_overridden():
    cfg = load_config(None, ["pretrain.steps=300", "pretrain.batch_size=90"])
    assert gold_recipe(cfg) == (300, 90)
    over = load_config(None, ["pretrain.gold_steps=7", "pretrain.gold_batch_size=5"])
    assert gold_recipe(over) == (7, 5)


def test_gold_stage_trains_on_retain_ops_only(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "model.preset=micro", "progress=false",
                             "pretrain.steps=4", "pretrain.batch_size=12",
                             "pretrain.warmup_steps=1", "pretrain.eval_every=0",
                             "pretrain.checkpoint_every=0", "data.eval_items_per_op=4"])
    d = pretrain(cfg, "gold")
    summary = json.loads((d / "summary.json").read_text())
    assert summary["data"]["ops"] == list(cfg.data.retain_ops)
    assert summary["steps"] == 4
    assert (d / "model" / "model.safetensors").is_file()
    assert pretrain(cfg, "gold") == d  # cached: same folder, not retrained


def test_gold_settings_do_not_invalidate_the_base_model():
    from undo.stages.pretrain import pretrain_dir

    cfg = load_config(None)
    other = load_config(None, ["pretrain.gold_batch_size=9", "pretrain.gold_steps=11"])
    assert pretrain_dir(cfg, "base") == pretrain_dir(other, "base")
    assert pretrain_dir(cfg, "gold") != pretrain_dir(other, "gold")


def test_cache_key_follows_the_resolved_shape(monkeypatch):
    """A preset whose shape changes (a new version) must not reuse the old model."""
    from undo import models
    from undo.stages.pretrain import pretrain_dir

    cfg = load_config(None)
    before = pretrain_dir(cfg, "base")
    tiny = dict(models.PRESETS["tiny"])
    monkeypatch.setitem(models.PRESETS, "tiny", {**tiny, "num_layers": tiny["num_layers"] + 1})
    assert pretrain_dir(cfg, "base") != before
    monkeypatch.setitem(models.PRESETS, "tiny", tiny)
    assert pretrain_dir(cfg, "base") == before


def test_bf16_mixed_pretrains_another_model_in_another_folder(tmp_path):
    """`precision` is in the key only when not fp32 (every earlier folder keeps its name),
    and the stage really computes in bf16: the same recipe gives other weights."""
    from undo.models import load_model
    from undo.stages.pretrain import pretrain_dir, pretrain_key

    fast = [f"out_dir={tmp_path}", "model.preset=micro", "progress=false",
            "pretrain.steps=3", "pretrain.batch_size=8", "pretrain.warmup_steps=1",
            "pretrain.eval_every=0", "pretrain.checkpoint_every=0", "data.eval_items_per_op=2"]
    fp32 = load_config(None, fast)
    bf16 = load_config(None, [*fast, "precision=bf16-mixed"])
    assert "precision" not in pretrain_key(fp32, "base")
    assert pretrain_dir(fp32, "base") != pretrain_dir(bf16, "base")
    a, b = pretrain(fp32, "base"), pretrain(bf16, "base")
    wa = load_model(a / "model").state_dict()
    wb = load_model(b / "model").state_dict()
    assert all(wb[k].dtype == wa[k].dtype for k in wa)  # weights saved as they train
    assert any(not wa[k].equal(wb[k]) for k in wa)
    assert "precision" not in (a / "config.yaml").read_text()
    assert "precision: bf16-mixed" in (b / "config.yaml").read_text()
