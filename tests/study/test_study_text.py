"""Studies beyond the arithmetic default: one that starts from an existing model
(`model.name_or_path`) instead of pretraining
one, with and without a gold standard; and the model errors that must stop it before work."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import GPT2Config

from undo.artifacts import read_json
from undo.cli import main

SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "text" / "smoke.yaml")


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


@pytest.mark.slow
def test_study_from_a_pretrained_model_without_gold(tmp_path, gpt2_dir, capsys):
    assert main(["run", SMOKE, f"out_dir={tmp_path}", f"model.name_or_path={gpt2_dir}",
                 "data.tokenizer=model", "study.gold=none", "threads=1"]) == 0
    run = tmp_path / "text-smoke"
    stages = {p.name.rsplit("-", 1)[0] for p in (run / "stages").iterdir() if p.is_dir()}
    assert "import-base" in stages  # loaded, not trained
    assert not {"pretrain-base", "pretrain-gold"} & stages
    summary = read_json(run / "summary.json")
    assert summary["gold_standard"] is False
    assert {m["kind"] for m in summary["models"]} == {"base", "unlearn_only", "undo",
                                                      "unlearn_distill"}
    assert all(v is None for m in summary["models"] for v in m["robustness"].values())
    report = (run / "report.html").read_text()
    assert "no gold standard" in report and "not available" in report
    base = read_json(next((run / "stages").glob("import-base-*")) / "summary.json")
    assert base["steps"] is None and base["metrics"]["retain/ce"] > 0
    capsys.readouterr()


def test_arithmetic_refuses_a_model_with_another_tokenizer(tmp_path, gpt2_dir, capsys):
    before = _snapshot(tmp_path)
    assert main(["run", f"out_dir={tmp_path}", f"model.name_or_path={gpt2_dir}"]) == 2
    err = capsys.readouterr().err
    assert "arithmetic benchmark writes its data with its own tokenizer" in err
    assert "Traceback" not in err and _snapshot(tmp_path) == before


@pytest.mark.parametrize("path, message", [
    ("./does-not-exist/model", "not an existing folder"),
    ("{t5}", "is not a causal language model"),
    ("{empty}", "has no weights"),
])
def test_bad_model_paths_stop_before_work(tmp_path, gpt2_dir, capsys, path, message):
    from transformers import T5Config

    t5 = tmp_path / "t5"  # an encoder-decoder: not a causal LM
    T5Config(vocab_size=50, d_model=8, num_layers=1, num_heads=1, d_ff=8, d_kv=8
             ).save_pretrained(t5)
    empty = tmp_path / "empty"
    GPT2Config(n_embd=8, n_layer=1, n_head=1).save_pretrained(empty)  # config, no weights
    path = path.format(t5=t5, empty=empty)
    out = tmp_path / "runs"
    assert main(["run", SMOKE, f"out_dir={out}", f"model.name_or_path={path}",
                 "data.tokenizer=model"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow
def test_text_smoke_study_end_to_end(tmp_path, capsys):
    """configs/text/smoke.yaml: a preset model with a locally trained BPE, every stage."""
    assert main(["run", SMOKE, f"out_dir={tmp_path}", "threads=1"]) == 0
    summary = read_json(tmp_path / "text-smoke" / "summary.json")
    assert summary["benchmark"] == "text" and summary["gold_standard"] is True
    assert summary["metric"] == {"name": "forget/ce", "label": "forget CE (nats/token)",
                                 "higher_is_worse": False, "chance": None}
    kinds = {m["kind"] for m in summary["models"]}
    assert kinds == {"base", "gold", "unlearn_only", "unlearn_distill", "undo", "oracle_base",
                     "oracle_random"}
    for m in summary["models"]:
        if m["kind"] in ("undo", "unlearn_distill"):
            assert isinstance(m["recovered"], bool)
    capsys.readouterr()
