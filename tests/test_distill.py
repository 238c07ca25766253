import pytest
import torch

from undo.artifacts import read_json
from undo.cli import main
from undo.config import ConfigError, ModelConfig, load_config
from undo.models import build_model, load_model, save_model
from undo.stages.distill import distill, recovered

FAST = ["progress=false", "data.eval_items_per_op=8", "distill.steps=4", "distill.batch_size=8",
        "distill.eval_every=2", "distill.checkpoint_every=0", "distill.warmup_steps=0"]


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"out_dir={tmp_path / 'runs'}", *FAST])


@pytest.fixture
def teacher_dir(tokenizer, tmp_path):
    return save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=1), tokenizer,
                      tmp_path / "teacher")


def test_recovered_rules_hand_cases():
    t = {"retain/acc": 0.9, "retain/ce": 1.0}
    # Relative: 95% of the teacher's 0.9 is 0.855 (an absolute 0.05 would accept 0.85).
    assert recovered({"retain/acc": 0.855, "retain/ce": 9.0}, t, "retain_acc", 0.05)
    assert not recovered({"retain/acc": 0.85, "retain/ce": 0.0}, t, "retain_acc", 0.05)
    assert recovered({"retain/acc": 0.0, "retain/ce": 1.05}, t, "retain_ce", 0.05)
    assert not recovered({"retain/acc": 1.0, "retain/ce": 1.06}, t, "retain_ce", 0.05)
    assert not recovered({"retain/acc": 1.0, "retain/ce": 0.0}, t, "budget", 0.05)
    gold = {"retain/acc": 0.98, "forget/acc": 0.01}
    assert not recovered({"retain/acc": 0.99, "forget/acc": 0.90}, gold, "match", 0.05)
    assert not recovered({"retain/acc": 0.90, "forget/acc": 0.01}, gold, "match", 0.05)
    assert recovered({"retain/acc": 0.95, "forget/acc": 0.05}, gold, "match", 0.05)


def test_undo_stage_writes_model_summary_and_is_reused(cfg, teacher_dir, tmp_path):
    cfg.distill.stop = "budget"
    d = distill(cfg, teacher_dir, init="noised", alpha=0.5, seed=0)
    s = read_json(d / "summary.json")
    assert s["steps"] == 4 and not s["stopped_early"] and s["init"] == "noised"
    assert s["tokens"] > 0 and s["positions"] >= s["tokens"]
    assert s["flops_incl_teacher"] == pytest.approx(s["flops"] + s["teacher_forward_flops"])
    assert s["teacher_outputs"]["mode"] == "full" and s["noise"]["alpha"] == 0.5
    assert {"retain/acc", "forget/acc", "retain_heldout/acc", "forget_heldout/acc"} <= set(s["metrics"])
    assert (d / "model" / "model.safetensors").is_file() and (d / "metrics.jsonl").is_file()
    assert "compute" not in s  # fractions of gold are the study summary's, not the stage's
    mtime = (d / "summary.json").stat().st_mtime_ns
    # Reused as it is: nothing retrained, nothing rewritten.
    assert distill(cfg, teacher_dir, init="noised", alpha=0.5, seed=0) == d
    assert (d / "summary.json").stat().st_mtime_ns == mtime
    # Another alpha at the same seed is another stage on the same batches: the teacher
    # cache is shared. Another seed distills on another data order: its own cache.
    d3 = distill(cfg, teacher_dir, init="noised", alpha=0.7, seed=0)
    s3 = read_json(d3 / "summary.json")
    assert d3 != d and s3["teacher_outputs"]["built_chunks"] == 0
    assert s3["teacher_outputs"]["cache_dir"] == s["teacher_outputs"]["cache_dir"]
    d4 = distill(cfg, teacher_dir, init="noised", alpha=0.7, seed=1)
    s4 = read_json(d4 / "summary.json")
    assert s4["teacher_outputs"]["built_chunks"] > 0
    assert s4["teacher_outputs"]["cache_dir"] != s["teacher_outputs"]["cache_dir"]


def test_alpha_zero_student_stops_before_any_step(cfg, teacher_dir):
    d = distill(cfg, teacher_dir, init="noised", alpha=0.0, seed=0)
    s = read_json(d / "summary.json")
    assert s["stopped_early"] and s["steps"] == 0
    assert s["metrics"]["retain/acc"] == s["teacher_metrics"]["retain/acc"]


def test_random_and_checkpoint_inits_online(cfg, teacher_dir, tokenizer, tmp_path):
    cfg.distill.stop, cfg.distill.teacher_cache = "budget", "online"
    r = read_json(distill(cfg, teacher_dir, init="random", seed=3) / "summary.json")
    assert r["init"] == "random" and r["alpha"] is None and r["noise"] is None
    assert r["teacher_outputs"]["mode"] == "online"
    assert r["flops"] == pytest.approx(r["flops_incl_teacher"])  # teacher counted by train()
    other = save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=9), tokenizer,
                       tmp_path / "init")
    c = read_json(distill(cfg, teacher_dir, init=str(other)) / "summary.json")
    assert c["init"] == "checkpoint" and c["init_from"] == str(other)


def test_user_errors(cfg, teacher_dir, tmp_path):
    with pytest.raises(ConfigError, match="no model there"):
        distill(cfg, tmp_path / "missing")
    with pytest.raises(ConfigError, match="valid: a number in"):
        distill(cfg, teacher_dir, alpha=1.5)
    cfg.noise.mask = "magnitude"
    with pytest.raises(ConfigError, match="needs the base model"):
        distill(cfg, teacher_dir)


def test_cli_noise_and_distill(teacher_dir, tmp_path, capsys):
    out = tmp_path / "noised"
    assert main(["noise", "noise.alpha=0.5", str(teacher_dir), "--out", str(out), "--seed", "1"]) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert read_json(out / "noise.json")["report"]["alpha"] == 0.5
    a, b = load_model(teacher_dir), load_model(out)
    # noise.norms=keep (the default): norm gains untouched; shrink halves them.
    assert torch.equal(b.model.norm.weight, a.model.norm.weight)
    assert main(["noise", "noise.alpha=0.5", "noise.norms=shrink", str(teacher_dir), "--out",
                 str(out), "--seed", "1"]) == 0
    assert torch.allclose(load_model(out).model.norm.weight, 0.5 * a.model.norm.weight)
    assert main(["noise", str(teacher_dir)]) == 2  # no --out
    assert main(["distill", f"out_dir={tmp_path / 'r'}", *FAST, str(teacher_dir),
                 "--init", "random"]) == 0
    assert "random student" in capsys.readouterr().out
    assert main(["distill", f"out_dir={tmp_path / 'r'}", str(tmp_path / "nope")]) == 2
