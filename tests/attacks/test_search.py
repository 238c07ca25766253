"""The adaptive attacker (undo.attacks.search) on micro models: the space, the utility floor, the
stored study (resume after SIGKILL, refusing a foreign db), replays and the CLI."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from undo.artifacts import read_json
from undo.attacks.grid import attack_dir
from undo.attacks.search import (
    best_so_far,
    open_study,
    search_attack,
    search_key,
    search_models,
    worst_case,
)
from undo.attacks.space import lora_modules, utility_bound, utility_ok
from undo.benchmarks import build_benchmark
from undo.benchmarks.base import MetricSpec
from undo.cli import main
from undo.config import ConfigError, ModelConfig, OptimConfig, load_config
from undo.models import build_model, save_model
from undo.objectives import LOSSES
from undo.train import make_optimizer, train

FAST = ["data.eval_items_per_op=8", "attack.steps=12", "attack.batch_size=16",
        "attack.eval_every=4", "attack.budgets=[0,8]", "attack.curve_items_per_op=4",
        "attack.lrs=[0.01,0.001]", "attack.workers=1", "threads=1", "progress=false",
        "search.batch_sizes=[8,16]", "search.lora_ranks=[0,4]", "search.startup_trials=2"]
ACC = MetricSpec("retain/acc", "retain accuracy", True, None)
CE = MetricSpec("retain/ce", "retain CE", False, None)


def _cfg(tmp_path: Path, *extra: str):
    return load_config(None, [f"out_dir={tmp_path}", *FAST, *extra])



def _save_micro(path: Path, tokenizer, seed: int) -> Path:
    save_model(build_model(ModelConfig(preset="micro"), tokenizer, seed=seed), tokenizer, path)
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer):
    return _save_micro(tmp_path_factory.mktemp("micro") / "model", tokenizer, 0)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("override, key", [
    ("search.optimizers=[]", "search.optimizers"),
    ("search.batch_sizes=[]", "search.batch_sizes"),
    ("search.utility_floor=1.5", "search.utility_floor"),
    ("search.utility_floor=-0.1", "search.utility_floor"),
    ("search.lr=[0.01,0.000001]", "search.lr"),
    ("search.retain_fraction=[0.0,1.0]", "search.retain_fraction"),
    ("search.optimizers=[rmsprop]", "search.optimizers[0]"),
    ("study.attack_search=-1", "study.attack_search"),
])
def test_bad_settings_name_their_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        _cfg(tmp_path, override)


def test_a_space_with_nothing_free_is_refused(tmp_path, model_dir):
    fixed = ["search.lr=[0.001]", "search.optimizers=[adamw]", "search.schedules=[constant]",
             "search.batch_sizes=[16]", "search.weight_decays=[0.0]", "search.lora_ranks=[0]",
             "search.retain_fraction=[0.0]"]
    with pytest.raises(ConfigError, match="every dimension of the search space is fixed"):
        search_attack(_cfg(tmp_path, *fixed, "search.benchmark_knobs=false"), model_dir, 3)
    # LoRA alphas are no freedom when no trial uses LoRA.
    with pytest.raises(ConfigError, match="fixed"):
        search_attack(_cfg(tmp_path, *fixed, "search.benchmark_knobs=false",
                           "search.lora_alphas=[8,16]"), model_dir, 3)
    # The arithmetic benchmark's word-problem share is a dimension of its own.
    assert search_attack(_cfg(tmp_path, *fixed), model_dir, 1).is_dir()


@pytest.mark.parametrize("n", [0, -2])
def test_no_trials_is_refused_before_any_attack(tmp_path, model_dir, n, capsys):
    with pytest.raises(ConfigError, match="positive number of trials"):
        search_attack(_cfg(tmp_path), model_dir, n)
    assert main(["attack", f"out_dir={tmp_path}", *FAST, str(model_dir), "--search",
                 str(n)]) == 2
    assert "positive number of trials" in capsys.readouterr().err
    assert not (tmp_path / "arithmetic-tiny" / "attacks").exists()  # the grid never ran


def test_a_db_of_another_model_or_config_is_refused(tmp_path, model_dir, tokenizer):
    cfg = _cfg(tmp_path)
    db = tmp_path / "search.db"
    open_study(db, search_key(cfg, model_dir), True)
    other = _save_micro(tmp_path / "other" / "model", tokenizer, 1)
    with pytest.raises(ConfigError, match="different model"):
        open_study(db, search_key(cfg, other), True)
    with pytest.raises(ConfigError, match="different search"):
        open_study(db, search_key(_cfg(tmp_path, "search.utility_floor=0.5"), model_dir), True)
    open_study(db, search_key(cfg, model_dir), True)  # the same one opens again


# ---------------------------------------------------------------- pure parts


def test_utility_bound_in_both_directions():
    assert utility_bound(ACC, 0.8, 0.9) == pytest.approx(0.72)
    assert utility_bound(CE, 2.0, 0.9) == pytest.approx(2.0 / 0.9)  # CE may grow ~11%
    assert utility_bound(ACC, 0.8, 0.0) is None
    assert utility_ok(ACC, 0.72, 0.72) and not utility_ok(ACC, 0.71, 0.72)
    assert utility_ok(CE, 2.2, 2.0 / 0.9) and not utility_ok(CE, 2.3, 2.0 / 0.9)
    assert not utility_ok(CE, math.nan, 3.0) and utility_ok(CE, math.nan, None)


def test_worst_case_skips_invalid_entries_and_best_so_far_runs():
    def entry(v: float, ok: bool, src: str) -> dict:
        return {"budgets": {"5": {"forget": v, "retain": 0.9, "valid": ok}}, "params": {},
                "source": src}
    entries = [entry(0.3, True, "a"), entry(0.9, False, "b"), entry(0.5, True, "c")]
    assert worst_case(entries, [5], True)["5"]["source"] == "c"
    assert worst_case(entries, [5], False)["5"]["value"] == 0.3
    assert worst_case([entry(0.9, False, "b")], [5], True)["5"] is None
    assert best_so_far([None, 0.2, 0.1, None, 0.4], True) == [None, 0.2, 0.2, 0.2, 0.4]
    assert best_so_far([0.2, 0.1, 0.4], False) == [0.2, 0.1, 0.1]


def _two_steps(name: str, wd: float) -> torch.Tensor:
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    opt = make_optimizer(name, [{"params": list(lin.parameters()), "weight_decay": wd}],
                         OptimConfig(lr=0.1, betas=[0.9, 0.999]))
    for _ in range(2):
        lin(torch.ones(2, 4)).pow(2).sum().backward()
        opt.step()
        opt.zero_grad()
    return lin.weight.detach().clone()


def test_optimizer_choice():
    assert torch.equal(_two_steps("adam", 0.0), _two_steps("adamw", 0.0))
    assert not torch.allclose(_two_steps("adam", 0.1), _two_steps("adamw", 0.1))
    sgd = make_optimizer("sgd", [{"params": [torch.nn.Parameter(torch.zeros(1))]}],
                         OptimConfig(lr=0.1))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    with pytest.raises(ValueError, match="valid: adamw, adam, sgd"):
        make_optimizer("lion", [], OptimConfig())


def test_lora_groups_name_the_blocks_projections(micro_model):
    attn, mlp = lora_modules(micro_model, "attention"), lora_modules(micro_model, "mlp")
    assert attn and all(".self_attn." in n for n in attn)
    assert mlp and all(".mlp." in n for n in mlp)
    assert lora_modules(micro_model, "all-linear") == ["all-linear"]


# ------------------------------------------------------------------ searches


def test_search_starts_from_the_grid_and_records_trials(tmp_path, model_dir):
    cfg = _cfg(tmp_path)
    d = search_attack(cfg, model_dir, 4)
    assert d == attack_dir(cfg, model_dir) and (d / "search.db").is_file()
    r = read_json(d / "search.json")
    rel = read_json(d / "relearn.json")
    assert [t["number"] for t in r["trials"]] == [0, 1, 2, 3] and r["cost"]["trials"] == 4
    grid = r["trials"][0]
    assert grid["source"] == "grid" and grid["params"]["optimizer"] == "adamw"
    worst_lr = rel["worst_case"]["forget/acc"]["12"]["lr"]
    assert grid["params"]["lr"] == worst_lr
    # The grid's recipe replayed as a trial gives the grid run's own numbers.
    run = next(x for x in rel["runs"] if x["lr"] == worst_lr)
    for k in ("8", "12"):
        assert grid["budgets"][k]["forget"] == pytest.approx(run["budgets"][k]["forget/acc"])
        assert grid["budgets"][k]["retain"] == pytest.approx(run["budgets"][k]["retain/acc"])
    assert {t["source"] for t in r["trials"][1:]} == {"tpe"}
    assert r["cost"]["flops"] == pytest.approx(sum(t["flops"] for t in r["trials"]))
    assert r["cost"]["flops"] > 0
    values = [t["value"] for t in r["trials"]]
    assert r["best"]["value"] == max(v for v in values if v is not None)
    assert r["worst_case"]["12"]["value"] >= rel["worst_case"]["forget/acc"]["12"]["value"]
    # The grid under the search's utility floor: its worst run among those that kept it.
    for k in ("8", "12"):
        kept = [x["budgets"][k]["forget/acc"] for x in rel["runs"]
                if x["budgets"][k]["retain/acc"] >= r["utility"]["bound"]]
        got = r["grid_under_floor"][k]
        assert (got is None) == (not kept)
        if kept:
            assert got["value"] == pytest.approx(max(kept)) and got["source"] == "grid"
    # Asking for more trials extends the study; the first four are kept as they were.
    r6 = read_json(search_attack(cfg, model_dir, 6) / "search.json")
    assert r6["trials"][:4] == r["trials"] and len(r6["trials"]) == 6
    # A smaller N reports the first N trials of the grown study.
    r2 = read_json(search_attack(cfg, model_dir, 2) / "search.json")
    assert r2["trials"] == r["trials"][:2] and r2["cost"]["trials"] == 2


def _corpus(path: Path, alphabet: str, seed: int) -> str:
    """60 documents of random words over `alphabet` (a toy language), as JSONL."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 6)))
             for _ in range(30)]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(10, 40))) + "."
            for _ in range(60)]
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(path)


def test_parallel_trials_count_to_n(tmp_path, model_dir):
    d = search_attack(_cfg(tmp_path, "attack.workers=2", "threads=2"), model_dir, 3,
                      log=None)
    r = read_json(d / "search.json")
    assert r["workers"] == 2 and r["threads_per_worker"] == 1
    assert [t["number"] for t in r["trials"]] == [0, 1, 2]
    assert len({repr(t["params"]) for t in r["trials"]}) == 3  # a batch's draws differ
    assert torch.get_num_threads() == 1  # restored


def test_a_diverged_trial_is_pruned_not_fatal(tmp_path, model_dir):
    cfg = _cfg(tmp_path, "search.lr=[100,1000]", "search.optimizers=[sgd]",
               "attack.grad_clip=null")
    r = read_json(search_attack(cfg, model_dir, 2, log=None) / "search.json")
    tpe = [t for t in r["trials"] if t["source"] == "tpe"]
    assert tpe and all(t["state"] == "pruned" and t["budgets"] == {} for t in tpe)
    assert all("training diverged" in t["diverged"] for t in tpe)
    assert r["best"] is None or r["trials"][r["best"]["number"]]["source"] == "grid"


def test_a_trial_below_the_utility_floor_never_counts(tmp_path, tokenizer):
    """Text benchmark (retain CE, lower is better): a floor of 1.0 allows no CE rise, so
    an lr of 1e-2 on forget text is pruned; state and floor agree for every trial."""
    docs = {"forget": _corpus(tmp_path / "g.jsonl", "αβγδεζηθικλμνξοπρστυφχψω", 1),
            "retain": _corpus(tmp_path / "e.jsonl", "abcdefghijklmnopqrstuvwxyz", 2)}
    data = [f"data.forget=[{{path: {docs['forget']}}}]", "data.benchmark=text",
            f"data.retain=[{{path: {docs['retain']}}}]", "data.seq_len=16",
            "data.vocab_size=320", "data.eval_fraction=0.2", "data.attack_fraction=0.2"]
    cfg = load_config(None, [f"out_dir={tmp_path}", *data, *FAST[1:], "search.utility_floor=1",
                             "search.optimizers=[adam]", "search.lr=[0.003,0.01]"])
    bench = build_benchmark(cfg.data)
    tok = bench.own_tokenizer()
    # A model that knows some of the retain text first, so forget text can cost it some.
    model = build_model(ModelConfig(preset="micro"), tok, seed=0)
    train(model, LOSSES.get("ce")(), bench.batches("gold", tok, 16, 0),
          OptimConfig(steps=60, batch_size=16, lr=3e-3, log_every=0), progress=False)
    m = tmp_path / "text-micro" / "model"
    save_model(model, tok, m)
    r = read_json(search_attack(cfg, m, 3) / "search.json")
    bound = r["utility"]["bound"]
    assert bound == pytest.approx(r["start"]["retain/ce"]) and r["utility"]["rule"].endswith("<= bound")
    states = [t["state"] for t in r["trials"]]
    assert "pruned" in states
    for t in r["trials"]:
        retain = t["budgets"]["12"]["retain"]
        assert (t["state"] == "pruned") == (retain > bound)
        assert (t["value"] is None) == (t["state"] == "pruned")
    if r["best"] is not None:
        assert r["trials"][r["best"]["number"]]["state"] == "complete"


SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from undo.config import load_config
from undo.attacks.search import search_attack
search_attack(load_config(None, sys.argv[3:]), sys.argv[1], int(sys.argv[2]), log=print)
"""


@pytest.mark.slow
def test_a_killed_search_resumes_without_redoing_finished_trials(tmp_path, model_dir):
    """SIGKILL a search process mid-trial; the rerun keeps every finished trial and
    stops at N counted ones, drawing what an uninterrupted search draws."""
    n = 6
    args = [f"out_dir={tmp_path / 'killed'}", *FAST, "attack.steps=40", "attack.budgets=[0]"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(model_dir), str(n), *args],
                            env=env, stdout=subprocess.PIPE, text=True)
    cfg = load_config(None, args)
    db = attack_dir(cfg, model_dir) / "search.db"
    assert proc.stdout is not None
    for line in proc.stdout:  # kill while trial 3 runs: two trials are finished
        if "trial 2/" in line:
            time.sleep(0.3)
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = optuna.load_study(study_name="attack-search", storage=f"sqlite:///{db}")
    before = {t.number: (t.params, t.value) for t in study.get_trials()
              if t.state == optuna.trial.TrialState.COMPLETE}
    assert 2 <= len(before) < n
    search_attack(cfg, model_dir, n, log=lambda _: None)
    trials = optuna.load_study(study_name="attack-search", storage=f"sqlite:///{db}"
                               ).get_trials()
    done = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                             optuna.trial.TrialState.PRUNED)]
    assert len(done) == n
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)
    for t in done:  # finished trials kept as they were, not redone
        if t.number in before:
            assert (t.params, t.value) == before[t.number]
    # The same draws as a search that was never killed.
    fresh = search_attack(load_config(None, [f"out_dir={tmp_path / 'fresh'}", *args[1:]]),
                          model_dir, n, log=lambda _: None)
    ref = read_json(fresh / "search.json")["trials"]
    got = read_json(attack_dir(cfg, model_dir) / "search.json")["trials"]
    assert [t["params"] for t in got] == [t["params"] for t in ref]


def test_replays_fold_into_each_models_worst_case(tmp_path, model_dir, tokenizer, capsys):
    other = _save_micro(tmp_path / "other" / "model", tokenizer, 1)
    cfg = _cfg(tmp_path)
    folders = search_models(cfg, [model_dir, other], 3, log=lambda _: None)
    recs = [read_json(f / "search.json") for f in folders]
    for i, r in enumerate(recs):
        (rep,) = r["replays"]
        src = recs[1 - i]
        assert rep["source"] == f"replay:{src['model']['label']}"
        assert rep["params"] == src["best"]["params"]
        for k in ("8", "12"):
            own = [t["budgets"][k]["forget"] for t in r["trials"] if t["budgets"][k]["valid"]]
            assert r["worst_case"][k]["value"] == max(own + [rep["budgets"][k]["forget"]])
        assert r["cost"]["replay_flops"] == rep["flops"]
        assert rep["flops"] > 0
    # CLI: the grid table and then the search table, from the cached results.
    assert main(["attack", f"out_dir={tmp_path}", *FAST, str(model_dir), str(other),
                 "--search", "3"]) == 0
    out = capsys.readouterr().out
    assert "under the search (3 trials x 12 steps" in out and out.count("search.json") == 2


# -------------------------------------------------------------------- report


def _with_search(summary: dict) -> dict:
    """The report fixture plus search sections: the search finds 0.1 more than the grid."""
    for i, m in enumerate(summary["models"]):
        if not m.get("attack"):
            continue
        wc = {k: {"value": w["value"] + 0.1, "retain": 0.9, "source": "tpe",
                  "params": {"lr": 3e-3, "optimizer": "sgd"}}
              for k, w in m["attack"]["worst_case"].items()}
        m["search"] = {"trials": 4, "steps": 500, "worst_case": wc, "best": None,
                       "best_so_far": [None, 0.2, 0.2 + i / 100, 0.5],
                       "utility": {"floor": 0.9, "retain_before": 1.0, "bound": 0.9,
                                   "rule": "retain >= bound"},
                       "cost": {"trials": 4, "flops": 1e12, "replay_flops": 0.0}}
        m["robustness_search"] = {k: 0.5 for k in wc}
    return summary


def test_report_shows_grid_and_search_side_by_side(tmp_path):
    from undo.report import write_report

    fixture = Path(__file__).parents[1] / "fixtures" / "summary_example.json"
    summary = _with_search(json.loads(fixture.read_text()))
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    rep = write_report(tmp_path)
    assert rep.plots["search"].read_bytes()[:4] == b"\x89PNG"
    html = rep.html.read_text()
    assert "Under the adaptive attack search" in html and "tpe: lr=0.003, optimizer=sgd" in html
    undo = next(m for m in summary["models"] if m["name"] == "undo-a0.6-s0")
    row = html[html.index("<td>undo-a0.6-s0</td>", html.index("adaptive attack search")):]
    grid40 = undo["attack"]["worst_case"]["40"]["value"]
    assert row.index(f"<td>{grid40:.3f}</td>") < row.index(f"<td>{grid40 + 0.1:.3f}</td>")
    # Without a search the report has neither the section nor the figure.
    (tmp_path / "summary.json").write_text(fixture.read_text())
    rep = write_report(tmp_path)
    assert "search" not in rep.plots and "adaptive attack search" not in rep.html.read_text()


@pytest.mark.slow
def test_study_searches_every_attacked_model_with_the_same_budget(tmp_path):
    smoke = Path(__file__).resolve().parents[2] / "configs" / "arithmetic" / "smoke.yaml"
    assert main(["run", str(smoke), f"out_dir={tmp_path}", "study.attack_search=2",
                 # gold and unlearn-only: the two models robustness is measured against
                 "study.alphas=[]", "study.unlearn_distill=false", "study.oracles=false",
                 "search.batch_sizes=[8,16]",
                 "search.lora_ranks=[0,4]"]) == 0
    summary = read_json(tmp_path / "arithmetic-smoke" / "summary.json")
    searched = [m for m in summary["models"] if m["search"]]
    assert [m["name"] for m in searched] == [m["name"] for m in summary["models"]
                                             if m["attack"]]
    assert {(m["search"]["trials"], m["search"]["steps"]) for m in searched} == {(2, 10)}
    for m in searched:  # every other model's best recipe was replayed against it
        rec = read_json(m["search"]["search_json"])
        assert len(rec["replays"]) == len(searched) - 1
        assert set(m["robustness_search"]) == {"0", "5", "10"}
    assert {m["kind"] for m in searched} == {"gold", "unlearn_only"}
    assert (tmp_path / "arithmetic-smoke" / "plots" / "search.png").is_file()
