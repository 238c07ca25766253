"""The relearning attack harness on micro models: data checks, runs, the cached stage, CLI."""

import json

import pytest
import torch

from undo.artifacts import model_identity, read_json
from undo.attacks.grid import (
    attack,
    attack_dir,
    attack_key,
    evaluate_model,
    resolved,
    run_one,
)
from undo.benchmarks.arithmetic.benchmark import Benchmark, ItemEvalSet
from undo.benchmarks.arithmetic.data import Item
from undo.cli import main
from undo.config import ConfigError, ModelConfig, load_config
from undo.models import build_model, load_model, save_model

FAST = ["data.eval_items_per_op=8", "attack.steps=12", "attack.batch_size=16",
        "attack.eval_every=4", "attack.budgets=[0,8]", "attack.curve_items_per_op=4",
        "attack.lrs=[0.01]", "attack.workers=1", "threads=1", "progress=false"]


def _cfg(tmp_path, *extra):
    """The attack's config as the stage runs it (`resolved`: retain_fraction a number)."""
    return resolved(load_config(None, [f"out_dir={tmp_path}", *FAST, *extra]))



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("micro") / "model"
    save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=0), tokenizer, d)
    return d


# ----------------------------------------------------------------------- data


def test_papers_attack_mixes_retain_items_in_the_pretraining_proportions(tmp_path, tokenizer):
    """The default (retain_fraction null) is the authors' arithmetic attack: the base
    model's pretraining mix, retain ops 3/7 of it (op weights 1.5, 1.5, 2, 2)."""
    cfg = _cfg(tmp_path, "attack.batch_size=70", "attack.word_fraction=0.0")
    assert cfg.attack.retain_fraction == pytest.approx(3 / 7)
    bench = Benchmark(cfg.data)
    items = bench.attack_batches(cfg.attack, tokenizer, seed="0").items(0)
    assert sum(it.op in bench.data.retain_ops for it in items) == 30 and len(items) == 70
    assert bench.check_attack(cfg.attack, [bench.attack_batches(cfg.attack, tokenizer, "0")],
                              2, tokenizer)["retain_ops"] == bench.data.retain_ops


def test_batches_are_forget_attack_items_and_deterministic(tmp_path, tokenizer):
    cfg = _cfg(tmp_path, "attack.retain_fraction=0")
    bench = Benchmark(cfg.data)
    data = bench.data
    b = bench.attack_batches(cfg.attack, tokenizer, seed="0")
    items = [it for s in range(20) for it in b.items(s)]
    assert {it.op for it in items} == set(data.forget_ops)
    assert all((it.a, it.b) in data.splits[it.op].attack for it in items)
    assert b.items(3) == bench.attack_batches(cfg.attack, tokenizer, seed="0").items(3)
    assert b.items(3) != bench.attack_batches(cfg.attack, tokenizer, seed="1").items(3)
    assert torch.equal(b(3)["input_ids"], b(3)["input_ids"])


def test_mixed_attack_takes_retain_items_from_their_attack_split(tmp_path, tokenizer):
    cfg = _cfg(tmp_path, "attack.retain_fraction=0.5", "attack.word_fraction=0.0")
    bench = Benchmark(cfg.data)
    items = bench.attack_batches(cfg.attack, tokenizer, seed="0").items(0)
    n_retain = sum(it.op in bench.data.retain_ops for it in items)
    assert n_retain == 8 and len(items) == 16
    assert all((it.a, it.b) in bench.data.splits[it.op].attack for it in items)


@pytest.mark.parametrize("override", ["attack.ops=[add,sub]", "attack.retain_fraction=1.0"])
def test_refuses_attack_without_forget_items(tmp_path, tokenizer, model_dir, override):
    cfg = _cfg(tmp_path, override)
    with pytest.raises(ConfigError, match="no forget-domain items"):
        attack(cfg, model_dir)
    assert not (tmp_path / cfg.name / "attacks").exists()  # nothing half-written
    # ... unless told explicitly; the counts say what it trained on.
    ok = _cfg(tmp_path, override, "attack.allow_no_forget=true")
    bench = Benchmark(ok.data)
    info = bench.check_attack(ok.attack, [bench.attack_batches(ok.attack, tokenizer, "0")], 12,
                              tokenizer)
    counts = info["item_counts"]
    assert counts["forget_items"] == 0 and counts["total_items"] > 0


def test_eval_items_never_in_the_attack_split(tmp_path, tokenizer):
    cfg = _cfg(tmp_path)
    bench = Benchmark(cfg.data)
    data = [bench.attack_batches(cfg.attack, tokenizer, "0")]
    assert bench.check_attack(cfg.attack, data, 4, tokenizer)["eval_disjoint_from_attack"]
    a, b = bench.data.splits["mul"].attack[0]
    bench._eval_items()["forget"].append(Item("mul", a, b))  # a benchmark bug, simulated
    with pytest.raises(RuntimeError, match="of the attack split"):
        bench.check_attack(cfg.attack, data, 4, tokenizer)


def test_curve_subset_takes_the_first_items_of_each_group(tokenizer):
    items = [Item("mul", 1, i) for i in range(5)] + [Item("mul", 1, i, 0) for i in range(5)]
    es = ItemEvalSet("forget", items, tokenizer)
    assert es.subset(2) == [0, 1, 5, 6]
    assert es.subset(0) == list(range(10))


# ----------------------------------------------------------------------- runs


def test_attack_lowers_forget_ce_and_is_deterministic(tmp_path, model_dir):
    cfg = _cfg(tmp_path)
    r1 = run_one(cfg, model_dir, lr=1e-2, seed=0)
    steps = [p["step"] for p in r1["curve"]]
    assert steps == [0, 4, 8, 12]
    assert set(r1["budgets"]) == {"0", "8", "12"}
    before, after = r1["budgets"]["0"], r1["budgets"]["12"]
    assert after["forget/ce"] < before["forget/ce"] - 0.1  # it learns the forget domain
    assert {"retain/acc", "forget/acc/mul/equation"} <= set(after)
    # curve points at budgets come from the same scores as the full-set metrics
    assert r1["curve"][2]["forget/ce"] != before["forget/ce"]
    r2 = run_one(cfg, model_dir, lr=1e-2, seed=0)
    assert r2["curve"] == r1["curve"] and r2["budgets"] == r1["budgets"]
    r3 = run_one(cfg, model_dir, lr=1e-2, seed=1)
    assert r3["curve"][-1] != r1["curve"][-1]


def test_lora_attack_trains_only_adapters(tmp_path, model_dir):
    cfg = _cfg(tmp_path, "attack.lora_rank=4", "attack.lora_alpha=8")
    out = tmp_path / "lora-model"
    r = run_one(cfg, model_dir, lr=1e-2, seed=0, save_to=out)
    assert r["budgets"]["12"]["forget/ce"] < r["budgets"]["0"]["forget/ce"]
    merged, orig = load_model(out), load_model(model_dir)
    changed = [n for (n, p), q in zip(merged.named_parameters(), orig.parameters(), strict=True)
               if not torch.equal(p, q)]
    # LoRA touches linear layers only: embeddings and norms stay as they were.
    assert changed and all("proj" in n for n in changed)
    with pytest.raises(ConfigError, match="lora_targets"):
        run_one(_cfg(tmp_path, "attack.lora_rank=4", "attack.lora_targets=[nope]"),
                model_dir, lr=1e-2, seed=0)


# ---------------------------------------------------------------------- stage


def test_attack_stage_writes_relearn_json_and_caches(tmp_path, model_dir):
    cfg = _cfg(tmp_path, "attack.lrs=[0.01,0.001]", "attack.seeds=[0,1]",
               "attack.retain_fraction=0")
    d = attack(cfg, model_dir)
    assert d == attack_dir(cfg, model_dir)
    r = read_json(d / "relearn.json")
    assert r["budgets"] == [0, 8, 12] and r["lrs"] == [0.01, 0.001] and len(r["runs"]) == 4
    assert r["data"]["item_counts"]["forget_items"] == r["data"]["item_counts"]["total_items"]
    wc = r["worst_case"]["forget/ce"]["12"]
    per_lr = {lr: [x["budgets"]["12"]["forget/ce"] for x in r["runs"] if x["lr"] == lr]
              for lr in r["lrs"]}
    assert wc["value"] == pytest.approx(min(sum(v) / 2 for v in per_lr.values()))
    # Beside every worst case: the attacked model's retain metric at that LR and step.
    retain = [x["budgets"]["12"]["retain/acc"] for x in r["runs"] if x["lr"] == wc["lr"]]
    assert wc["retain"] == pytest.approx(sum(retain) / 2)
    # Per item, the forget metric's parts (what the report's intervals resample).
    run = r["runs"][0]
    units = run["units"]["12"]
    assert sum(units["num"]) / len(units["num"]) == pytest.approx(
        run["budgets"]["12"]["forget/acc"])
    assert set(r["curves"]["forget/acc"]) == {"0.01", "0.001"}
    assert not list(d.glob("runs/*/model"))  # attack weights are not kept by default
    stamp = (d / "relearn.json").stat().st_mtime_ns
    assert attack(cfg, model_dir) == d and (d / "relearn.json").stat().st_mtime_ns == stamp
    # The key follows the model's weights, not only its path.
    other = tmp_path / "copy" / "model"
    save_model(load_model(model_dir), None, other)
    assert model_identity(other) == model_identity(model_dir)


def test_parallel_workers_give_the_same_runs(tmp_path, model_dir):
    one = attack(_cfg(tmp_path / "a", "attack.lrs=[0.01,0.001]"), model_dir)
    two = attack(_cfg(tmp_path / "b", "attack.lrs=[0.01,0.001]", "attack.workers=2",
                      "threads=2"), model_dir)
    r1, r2 = read_json(one / "relearn.json"), read_json(two / "relearn.json")
    assert r2["workers"] == 2
    for a, b in zip(r1["runs"], r2["runs"], strict=True):
        # Point by point: pytest >= 9.2's approx refuses lists of dicts.
        for pa, pb in zip(a["curve"], b["curve"], strict=True):
            assert pa.keys() == pb.keys()
            assert pa == {k: pytest.approx(v, abs=1e-5) for k, v in pb.items()}


# ------------------------------------------------------------------------ CLI


def test_cli_eval_and_attack(tmp_path, model_dir, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", f"out_dir={tmp_path}", "data.eval_items_per_op=8", str(model_dir),
                 "--out", str(out)]) == 0
    rec = json.loads(out.read_text())[0]
    assert set(rec["metrics"]) >= {"retain/acc", "forget/acc", "retain_heldout/acc",
                                   "forget_heldout/acc", "forget/ce"}
    cfg = load_config(None, [f"out_dir={tmp_path}", *FAST])  # the run's precision, not
    assert rec["metrics"] == pytest.approx(evaluate_model(cfg, model_dir))  # the attack's
    assert "forget_heldout/acc" in capsys.readouterr().out
    assert main(["attack", f"out_dir={tmp_path}", *FAST, str(model_dir.parent)]) == 0
    assert "acc@12" in capsys.readouterr().out
    assert main(["attack", f"out_dir={tmp_path}", *FAST, "attack.ops=[add]",
                 str(model_dir)]) == 2
    assert "no forget-domain items" in capsys.readouterr().err
    assert main(["attack", f"out_dir={tmp_path}", str(tmp_path / "missing")]) == 2


def test_bucketed_scoring_equals_one_batch(micro_model, tokenizer, bench):
    from undo.benchmarks.arithmetic.benchmark import score_items, score_items_bucketed

    items = bench.eval_sets()["forget"]
    a = score_items(micro_model, items, tokenizer)
    b = score_items_bucketed(micro_model, items, tokenizer, max_positions=256)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert torch.allclose(a[1], b[1], atol=1e-4)


def test_bf16_mixed_attack_runs_in_bfloat16_and_is_keyed_apart(tmp_path, model_dir):
    """The attack's runs (here and in pool workers alike: `run_one` enters the precision
    itself) train at the attack's precision, and each precision has its own folder."""
    fp32 = _cfg(tmp_path, "attack.precision=fp32")
    bf16 = _cfg(tmp_path, "attack.precision=bf16-mixed")
    a, b = run_one(fp32, model_dir, lr=1e-2, seed=0), run_one(bf16, model_dir, lr=1e-2, seed=0)
    assert a["curve"][0]["forget/ce"] != b["curve"][0]["forget/ce"]  # scored in bf16 too
    assert a["budgets"]["12"]["forget/ce"] != b["budgets"]["12"]["forget/ce"]
    assert b["budgets"]["12"]["forget/ce"] < b["budgets"]["0"]["forget/ce"] - 0.1
    assert attack_dir(fp32, model_dir) != attack_dir(bf16, model_dir)
    assert "precision" not in attack_key(fp32, model_dir)  # fp32 folders keep their names


def test_attack_precision_is_the_attacks_own(tmp_path, model_dir):
    """`attack.precision` sets the attack's precision apart from the run's: by default
    bf16-mixed under an fp32 run, with the same scores and folder as a whole bf16-mixed
    run's attack; fp32 when asked for under a bf16-mixed run."""
    own = _cfg(tmp_path)
    assert own.precision == "bf16-mixed"
    run = _cfg(tmp_path, "precision=bf16-mixed")
    assert attack_dir(own, model_dir) == attack_dir(run, model_dir)
    a, b = run_one(own, model_dir, lr=1e-2, seed=0), run_one(run, model_dir, lr=1e-2, seed=0)
    assert a["budgets"]["12"] == b["budgets"]["12"]
    back = _cfg(tmp_path, "precision=bf16-mixed", "attack.precision=fp32")
    assert attack_dir(back, model_dir) == attack_dir(_cfg(tmp_path, "attack.precision=fp32"),
                                                     model_dir)
    assert "precision" not in attack_key(back, model_dir)["attack"]  # keyed once, top level
