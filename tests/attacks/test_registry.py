"""The attack registry: a toy attack registered here, in the test, appears in the study,
its summary and its report without any other module knowing it; the paper's two
attacks keep the configs (and so the folders) they had before the registry."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tiny_study import SETTINGS, SMOKE
from undo.attacks import registry
from undo.attacks.grid import attack_dir, resolved
from undo.attacks.scored import Attacked, ScoredAttack
from undo.cli import main
from undo.config import ConfigError, load_config
from undo.configlib import RegistryError
from undo.models import save_model
from undo.report import load_summary
from undo.study.attack_configs import study_attacks


class Shrink(ScoredAttack):
    """Scale every weight by a factor: x1 leaves the model as it is."""

    name = "toy_shrink"
    family = "toy"
    deterministic = True

    def settings(self, options):
        return ["x1", "x0.5"]

    def apply(self, model, setting, ctx, seed):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(float(setting[1:]))
        return Attacked(model, info={"factor": float(setting[1:])})


@pytest.fixture
def toy():
    registry.register(Shrink())
    yield "toy_shrink"
    registry.unregister("toy_shrink")


def test_paper_and_forget_only_are_the_configs_the_study_always_built(tmp_path, micro_model,
                                                                     tokenizer):
    save_model(micro_model, tokenizer, tmp_path / "model")
    cfg = load_config(None, [f"out_dir={tmp_path}"])
    named = study_attacks(cfg)
    assert list(named) == ["paper", "forget_only"]
    assert named["paper"] == resolved(cfg)
    assert named["forget_only"] == replace(cfg, attack=replace(cfg.attack, retain_fraction=0.0))
    # `family` and `options` are not in a finetuning key: a folder made before them is
    # found again (its key has neither).
    other = replace(cfg, attack=replace(cfg.attack, options={"quantize": {"schemes": ["int8"]}}))
    assert attack_dir(other, tmp_path / "model") == attack_dir(cfg, tmp_path / "model")


def test_unknown_attack_names_the_valid_ones(tmp_path):
    cfg = load_config(None, [f"out_dir={tmp_path}", "study.attacks=[paper,nope]"])
    with pytest.raises(RegistryError, match="unknown attack 'nope'.*quantize"):
        study_attacks(cfg)
    bad = load_config(None, [f"out_dir={tmp_path}", "attack.options={quantize: {bits: 3}}"])
    with pytest.raises(ConfigError, match="attack.options.quantize.bits"):
        study_attacks(replace(bad, study=replace(bad.study, attacks=["paper", "quantize"])))


@pytest.mark.slow
def test_a_registered_toy_attack_reaches_study_summary_and_report(tmp_path, toy):
    assert main(["run", str(SMOKE), f"out_dir={tmp_path}", *SETTINGS, "study.gold=pretrain",
                 f"study.attacks=[paper,{toy}]"]) == 0
    run = tmp_path / "arithmetic-smoke"
    summary = load_summary(run / "summary.json")
    attacked = [m for m in summary["models"] if m["kind"] != "base"]
    assert {m["kind"] for m in attacked} >= {"gold", "unlearn_only", "undo"}
    for m in attacked:
        sec = m["attacks"][toy]
        assert sec["family"] == "toy" and sec["trains"] is False
        assert set(sec["settings"].values()) == {"x1", "x0.5"}
        # x1 is the model itself: the toy's worst case is at least the unattacked model's.
        rel = json.loads(Path(sec["relearn_json"]).read_text())
        assert rel["family"] == "toy"
        w = sec["worst_case"]["4"]
        assert w["setting"] in ("x1", "x0.5") and isinstance(w["utility_ok"], bool)
        assert m["attacks"]["paper"]["worst_case"]["4"]["lr"] > 0  # the grid as before
    x1 = [r for r in rel["runs"] if r["setting"] == "x1"][0]
    assert x1["budgets"]["0"] == rel["start"]  # no change: exactly the pre-attack scores
    assert toy in summary["intervals"]["attacks"]
    table = summary["robustness_table"]
    assert [c["attack"] for c in table["attacks"]] == ["paper", toy]
    assert table["attacks"][1] == {"attack": toy, "family": "toy", "trains": False}
    rows = {r["row"]: r for r in table["rows"]}
    assert {"gold", "unlearn-only", "UNDO α=0.5"} <= set(rows)
    undo = rows["UNDO α=0.5"]
    assert undo["cells"][toy]["interval"]["point"] is not None
    assert undo["worst"]["attack"] in ("paper", toy)
    page = (run / "report.html").read_text()
    assert "Robustness across attack families" in page and "toy_shrink (toy)" in page
    assert (run / "plots" / "attack_families.png").stat().st_size > 1000
    from undo.release.card import _attack_families

    entry = next(m for m in summary["models"] if m["kind"] == "undo")
    card = "\n".join(_attack_families(summary, entry))
    assert "## Robustness across attack families" in card
    assert f"| {toy} (toy) |" in card and "| paper (finetune) |" in card


def test_benign_retain_trains_on_retain_attack_items_only(tmp_path, tokenizer):
    from undo.benchmarks.arithmetic.benchmark import Benchmark

    cfg = load_config(None, [f"out_dir={tmp_path}", "attack.batch_size=16"])
    c = study_attacks(replace(cfg, study=replace(cfg.study, attacks=["paper", "benign_retain"])))
    a = c["benign_retain"].attack
    assert (a.retain_fraction, a.allow_no_forget, a.family) == (1.0, True, "finetune")
    bench = Benchmark(cfg.data)
    items = [it for s in range(5) for it in bench.attack_batches(a, tokenizer, "0").items(s)]
    assert {it.op for it in items} <= set(bench.data.retain_ops)
    assert all((it.a, it.b) in bench.data.splits[it.op].attack for it in items)
    assert registry.family_of("benign_retain") == {"family": "benign finetune", "trains": True}


def test_undo_attack_runs_a_registered_attack_on_a_model_folder(tmp_path, micro_model,
                                                                 tokenizer, capsys):
    save_model(micro_model, tokenizer, tmp_path / "m")
    assert main(["attack", str(tmp_path / "m"), "--attack", "quantize", f"out_dir={tmp_path}",
                 "data.eval_items_per_op=4", "attack.curve_items_per_op=2",
                 "attack.precision=fp32", "progress=false",
                 "attack.options={quantize: {schemes: [int8]}}"]) == 0
    out = capsys.readouterr().out
    assert "over settings ['int8']" in out and "(int8)" in out
    assert main(["attack", str(tmp_path / "m"), "--attack", "nope", f"out_dir={tmp_path}"]) == 2
