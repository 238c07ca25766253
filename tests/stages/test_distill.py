from pathlib import Path

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
    """The authors' rules: arithmetic absolute 0.05 on the mean of the per-(operation,
    format) retain accuracies; CE relative 5%; read on the validation sets."""
    t = {"retain_val/acc": 0.9, "retain_val/ce": 1.0}
    # Absolute: 0.85 is within 0.05 of 0.9 (a relative 95% would ask for 0.855).
    assert recovered({"retain_val/acc": 0.85, "retain_val/ce": 9.0}, t, "retain_acc", 0.05)
    assert not recovered({"retain_val/acc": 0.849, "retain_val/ce": 0.0}, t, "retain_acc",
                         0.05)
    assert recovered({"retain_val/acc": 0.0, "retain_val/ce": 1.05}, t, "retain_ce", 0.05)
    assert not recovered({"retain_val/acc": 1.0, "retain_val/ce": 1.06}, t, "retain_ce", 0.05)
    assert not recovered({"retain_val/acc": 1.0, "retain_val/ce": 0.0}, t, "budget", 0.05)
    # The mean over (operation, format) groups, each counted once, not the pooled accuracy:
    # pooled these are both 0.9, but the student's group mean is 0.8 (word problems fail).
    teacher = {"retain_val/acc": 0.9, "retain_val/acc/add/equation": 0.9,
               "retain_val/acc/add/word": 0.9}
    student = {"retain_val/acc": 0.9, "retain_val/acc/add/equation": 1.0,
               "retain_val/acc/add/word": 0.6}
    assert not recovered(student, teacher, "retain_acc", 0.05)
    # The sets the report quotes are never read: only the validation sets count.
    assert not recovered({"retain/acc": 1.0, "retain_val/acc": 0.5}, t, "retain_acc", 0.05)
    gold = {"retain_val/acc": 0.98, "forget_val/acc": 0.01}
    assert not recovered({"retain_val/acc": 0.99, "forget_val/acc": 0.90}, gold, "match", 0.05)
    assert not recovered({"retain_val/acc": 0.90, "forget_val/acc": 0.01}, gold, "match", 0.05)
    assert recovered({"retain_val/acc": 0.95, "forget_val/acc": 0.05}, gold, "match", 0.05)


def test_validation_sets_disjoint_from_the_reported_ones():
    """The stop rule's sets share no fact with the eval sets the report and attacks score."""
    from undo.benchmarks.arithmetic.benchmark import Config
    from undo.benchmarks.arithmetic.data import ArithmeticData, fact_key

    sets = ArithmeticData(Config()).eval_sets()
    for val, ev in (("retain_val", "retain"), ("forget_val", "forget")):
        facts = {fact_key(it.op, it.a, it.b) for it in sets[ev]}
        assert sets[val] and not any(fact_key(it.op, it.a, it.b) in facts for it in sets[val])


def test_undo_stage_writes_model_summary_and_is_reused(cfg, teacher_dir, tmp_path):
    cfg.distill.stop = "budget"
    d = distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0)
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
    assert distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0) == d
    assert (d / "summary.json").stat().st_mtime_ns == mtime
    # Another alpha, or under `distill.data_order: shared` another seed, is another
    # stage on the same batches: the teacher cache is shared, nothing rebuilt.
    cfg.distill.data_order = "shared"
    for alpha, seed in ((0.7, 0), (0.7, 1)):
        d3 = distill(cfg.at_alpha(alpha), teacher_dir, init="noised", seed=seed)
        s3 = read_json(d3 / "summary.json")
        assert d3 != d and s3["teacher_outputs"]["built_chunks"] == 0
        assert s3["teacher_outputs"]["cache_dir"] == s["teacher_outputs"]["cache_dir"]
    # `per_seed`: seed 1 distills on another data order, with its own cache and its own
    # stage; seed 0 keeps the run seed's order, so its stage is the same and reused.
    d_shared = distill(cfg.at_alpha(0.7), teacher_dir, init="noised", seed=1)
    cfg.distill.data_order = "per_seed"
    d4 = distill(cfg.at_alpha(0.7), teacher_dir, init="noised", seed=1)
    s4 = read_json(d4 / "summary.json")
    assert d4 != d_shared and s4["teacher_outputs"]["built_chunks"] > 0
    assert s4["teacher_outputs"]["cache_dir"] != s["teacher_outputs"]["cache_dir"]
    assert distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0) == d
    assert (d / "summary.json").stat().st_mtime_ns == mtime


def test_bf16_mixed_student_has_its_own_stage_and_teacher_cache(cfg, teacher_dir):
    """Teacher outputs computed under bf16-mixed are other numbers: never reused by an fp32
    run of the same teacher and data (nor the other way round)."""
    cfg.distill.stop = "budget"
    s = read_json(distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0) / "summary.json")
    cfg.precision = "bf16-mixed"
    d = distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0)
    b = read_json(d / "summary.json")
    assert b["teacher_outputs"]["built_chunks"] > 0
    assert b["teacher_outputs"]["cache_dir"] != s["teacher_outputs"]["cache_dir"]
    assert b["metrics"] != s["metrics"]
    assert "precision: bf16-mixed" in (d / "config.yaml").read_text()


def test_a_student_that_meets_the_rule_at_step_0_still_trains(cfg, teacher_dir):
    """α = 0 is the teacher itself: it meets the rule before any step, but the rule is
    first checked after step 1 (`distill.eval_every` = 2 here), as the authors' is."""
    d = distill(cfg.at_alpha(0.0), teacher_dir, init="noised", seed=0)
    s = read_json(d / "summary.json")
    assert s["stopped_early"] and s["steps"] == 2 and s["recovered"]
    assert s["stop"]["sets"] == ["retain_val", "forget_val"]


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
        cfg.at_alpha(1.5)
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


def test_teacher_evaluated_once_per_process(micro_model, tokenizer, monkeypatch):
    """Students of one teacher share its metrics within a process (the study's workers run
    many distillations); another teacher, data section or dtype, or a multi-process
    launch, evaluates anew. The shared metrics are those a fresh evaluation gives."""
    from undo.benchmarks.arithmetic.benchmark import Benchmark, Config
    from undo.benchmarks.evaluate import evaluate
    from undo.stages import distill as stage

    monkeypatch.setattr(stage, "_TEACHER_METRICS", {})
    calls = []

    def counted(*a, **k):
        calls.append(1)
        return evaluate(*a, **k)

    monkeypatch.setattr(stage, "evaluate", counted)
    bench = Benchmark(Config(eval_items_per_op=4))
    key = {"teacher": "fp-a", "data": {"eval_items_per_op": 4}}
    first = stage.evaluate_teacher(micro_model, bench, tokenizer, key)
    first["retain/acc"] = -1.0  # a caller's edit must not reach the next caller
    again = stage.evaluate_teacher(micro_model, bench, tokenizer, key)
    assert len(calls) == 1 and again == evaluate(micro_model, bench, tokenizer)
    stage.evaluate_teacher(micro_model, bench, tokenizer, {**key, "teacher": "fp-b"})
    stage.evaluate_teacher(micro_model, bench, tokenizer,
                           {**key, "data": {"eval_items_per_op": 5}})
    assert len(calls) == 3
    stage.evaluate_teacher(micro_model.double(), bench, tokenizer, key)
    assert len(calls) == 4
    stage.evaluate_teacher(micro_model, bench, tokenizer, key, single=False)
    assert len(calls) == 5


def test_filtered_inputs_distil_on_the_gold_standards_data(cfg, teacher_dir, tokenizer):
    """`distill.inputs: filtered` (ours): the student distils on the gold standard's
    forget-free data, with its own stage and cache; the mix (the paper's) keeps its keys."""
    from safetensors.torch import load

    from undo import integrity
    from undo.benchmarks import build_benchmark
    from undo.stages.teacher_cache import teacher_targets

    cfg.distill.stop = "budget"
    d_mix = distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0)
    cfg.distill.inputs = "filtered"
    d_f = distill(cfg.at_alpha(0.5), teacher_dir, init="noised", seed=0)
    s_mix, s_f = read_json(d_mix / "summary.json"), read_json(d_f / "summary.json")
    assert d_f != d_mix and (s_mix["inputs"], s_f["inputs"]) == ("mix", "filtered")
    assert s_f["teacher_outputs"]["built_chunks"] > 0
    # The cached targets of step 0 are the teacher's on the gold role's first batch,
    # not on the mix's: the setting reached the data, not only the key.
    bench = build_benchmark(cfg.data)
    gold_batch = bench.batches("gold", tokenizer, cfg.distill.batch_size, seed=cfg.seed)(0, 0)
    want = teacher_targets(load_model(teacher_dir), gold_batch, "full", 64, 1.0)
    for s, same in ((s_f, True), (s_mix, False)):
        chunk = load(integrity.read_file(
            Path(s["teacher_outputs"]["cache_dir"]) / "chunk-0-00000.safetensors"))
        got = {k[len("0.0."):]: v for k, v in chunk.items() if k.startswith("0.0.")}
        matches = all(got[k].shape == v.shape and torch.equal(got[k], v) for k, v in want.items())
        assert matches == same
