"""`undo export`: a finished run's model as a release folder that transformers loads, with
a model card whose metadata huggingface_hub parses and whose numbers are the run's."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, constants
from transformers import AutoModelForCausalLM, AutoTokenizer

from hub_cache import micro_hub_model
from undo.cli import main
from undo.release import ExportError, choose_model
from undo.release.card import front_matter, model_card

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "arithmetic" / "smoke.yaml")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A smoke study whose students count as recovered (a loose retain-CE stop rule), with
    an Unlearn-and-Distill arm and no oracles."""
    out = tmp_path_factory.mktemp("runs")
    assert main(["run", SMOKE, f"out_dir={out}", "name=release", "study.oracles=false",
                 "distill.stop=retain_ce", "distill.stop_within=10"]) == 0
    return out / "release"


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.mark.slow
def test_default_export_is_the_best_recovered_undo_student_and_loads(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "rel")]) == 0
    summary = _summary(run)
    undo = [m for m in summary["models"] if m["kind"] == "undo" and m["recovered"]]
    assert len(undo) == 2
    chosen = choose_model(summary)
    assert chosen in undo
    rel = tmp_path / "rel"
    assert f"exported {chosen['name']} (recovered; float32)" in capsys.readouterr().out
    # The folder is a plain save_pretrained model: same weights as the run's student.
    model = AutoModelForCausalLM.from_pretrained(rel)
    src = AutoModelForCausalLM.from_pretrained(Path(chosen["stage_dir"]) / "model")
    tok = AutoTokenizer.from_pretrained(rel)
    ids = tok("12+7=19", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, src(ids).logits)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    # The card: metadata the hub library parses, the run's numbers, the evidence beside it.
    card = ModelCard.load(rel / "README.md")
    assert card.data.library_name == "transformers" and "undo" in card.data.tags
    assert card.data.to_dict().get("base_model") is None  # a preset: no hub base model
    preset = summary["config"]["model"]["preset"]
    assert f"Base model: the `{preset}` preset, pretrained from scratch in the run" in card.text
    assert ("**Forget** (what the model should no longer know): arithmetic problems of the "
            "operations mul, div.") in card.text
    base = next(m for m in summary["models"] if m["kind"] == "base")
    assert (f"| base model (before unlearning) | {base['metrics']['retain/acc']:.3f} | "
            f"{base['metrics']['forget/acc']:.3f} |") in card.text
    retain = chosen["metrics"]["retain/acc"]
    assert "**Recovered**" in card.text and f"retain/acc {retain:.3f}" in card.text
    assert f"α = {chosen['alpha']:g}" in card.text
    wc = chosen["attack"]["worst_case"]["10"]
    assert f"| 10 | {wc['value']:.3f} ± {wc['std']:.3f}" in card.text
    assert "exported with undo 0.1.0 (git " in card.text
    assert (rel / "evidence" / "summary.json").read_bytes() == (run / "summary.json").read_bytes()
    relearn = Path(chosen["attack"]["relearn_json"])
    assert (rel / "evidence" / "relearn.json").read_bytes() == relearn.read_bytes()
    assert (rel / "relearning.png").read_bytes() == (run / "plots" / "relearning.png").read_bytes()
    assert "![Relearning curves" in card.text


@pytest.mark.slow
def test_any_arm_by_name_in_a_chosen_dtype(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "ud"), "--model",
                 "unlearn-distill", "--dtype", "bfloat16"]) == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "ud")
    assert model.dtype == torch.bfloat16
    text = (tmp_path / "ud" / "README.md").read_text()
    assert "# release: unlearn-distill" in text and "Unlearn-and-Distill" in text
    # The unlearn-only teacher: not distilled, so no recovery claim either way.
    assert main(["export", str(run), "--out", str(tmp_path / "uo"), "--model",
                 "unlearn-only"]) == 0
    assert "no recovery test applies" in (tmp_path / "uo" / "README.md").read_text()
    capsys.readouterr()


@pytest.mark.slow
def test_bad_exports_are_one_clear_error_and_write_nothing(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "x"), "--model", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no such model" in err and "undo-a0.8-s0" in err and "Traceback" not in err
    (tmp_path / "taken").mkdir()
    assert main(["export", str(run), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "y")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no partial folders


@pytest.mark.slow
def test_a_student_that_did_not_recover_is_never_the_default_and_its_card_says_so(run):
    summary = _summary(run)
    for m in summary["models"]:
        if m["kind"] == "undo":
            m["recovered"] = False
    with pytest.raises(ExportError, match="none of its UNDO students .* recovered"):
        choose_model(summary)
    entry = choose_model(summary, "undo-a0.8-s0")
    stage = json.loads((Path(entry["stage_dir"]) / "summary.json").read_text())
    text = model_card(summary, entry, stage=stage, dtype="float32", figure=None,
                      evidence=["evidence/summary.json"])
    assert "**Did NOT recover**" in text and "**Recovered**" not in text


@pytest.mark.slow
def test_hub_base_model_and_its_cached_license_go_into_the_metadata(run, tmp_path,
                                                                    monkeypatch):
    cache, commit = micro_hub_model(tmp_path, "undo-test/base")
    (cache / "models--undo-test--base" / "snapshots" / commit / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# base\n")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    summary = copy.deepcopy(_summary(run))
    summary["environment"]["model_source"] = {"name_or_path": "undo-test/base",
                                              "gguf_file": None, "revision": None,
                                              "hub_commit": commit}
    card = ModelCard(front_matter(summary, None) + "\ntext\n")
    assert card.data.base_model == "undo-test/base" and card.data.license == "apache-2.0"
    assert ModelCard(front_matter(summary, "mit")).data.license == "mit"


@pytest.mark.slow
def test_push_to_hub_offline_fails_clearly_after_a_complete_export(run, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "undo.cli", "export", str(run), "--out",
                          str(tmp_path / "rel"), "--push-to-hub", "someone/undo-model"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2
    assert "push to someone/undo-model failed" in out.stderr and "Traceback" not in out.stderr
    assert "hf upload someone/undo-model" in out.stderr
    assert (tmp_path / "rel" / "README.md").is_file()  # the export itself is complete
