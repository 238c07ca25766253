"""`undo robustify`: a pretrained model (a local stand-in of a hub model) and the user's
JSONL in, a release folder out; defaults scaled to the model with the user's keys
winning; every bad input stopped before any work."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from transformers import LlamaConfig

from undo.artifacts import read_json
from undo.benchmarks.text.shipped import python_docs, python_source
from undo.cli import main
from undo.configlib import ConfigError
from undo.release.card import model_card
from undo.release.robustify import robustify_config, student_name
from undo.study.recipe import scaled_defaults


def _jsonl(path: Path, texts: list[str]) -> str:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("data")
    return (_jsonl(d / "forget.jsonl", python_source()[:150]),
            _jsonl(d / "retain.jsonl", python_docs()[:400]))


def _files(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")} if root.exists() else set()


def test_scaled_defaults_fill_only_what_the_user_left_unset(gpt2_dir, data, tmp_path):
    forget, retain = data
    r = robustify_config(model=str(gpt2_dir), forget=[forget], retain=[retain],
                         overrides=["distill.lr=0.01", f"out_dir={tmp_path}"], device="cpu")
    cfg, scaled = r.cfg, r.scaled
    from transformers import AutoModelForCausalLM

    assert r.shape[0].params == AutoModelForCausalLM.from_pretrained(gpt2_dir).num_parameters()
    assert cfg.distill.lr == 0.01 and "distill.lr" not in scaled  # the user's key wins
    rule = scaled_defaults(1, "cpu")  # (a tiny model: the clamped end of the LR lines)
    assert cfg.attack.lrs == rule["attack.lrs"] == scaled["attack.lrs"]
    assert cfg.unlearn.method == "maxent" and cfg.study.gold == "none"
    assert cfg.study.alphas == rule["study.alphas"] and cfg.study.seeds == [0]
    assert not cfg.study.unlearn_distill and not cfg.study.oracles
    assert cfg.name == "robustify-model" and cfg.data.tokenizer == "model"
    assert [s.path for s in cfg.data.forget] == [forget]
    assert student_name(cfg) == f"undo-a{rule['study.alphas'][0]:g}-s0"


def test_a_config_file_wins_over_the_scaled_defaults(gpt2_dir, data, tmp_path):
    own = tmp_path / "mine.yaml"
    own.write_text("name: mine\ndata:\n  benchmark: text\n  tokenizer: model\n"
                   "  seq_len: 32\nstudy:\n  alphas: [0.7]\n  seeds: [3]\n  gold: none\n")
    r = robustify_config(model=str(gpt2_dir), forget=[data[0]], retain=[data[1]],
                         config=str(own), device="cpu")
    cfg, scaled = r.cfg, r.scaled
    assert cfg.name == "mine" and cfg.data.seq_len == 32 and cfg.study.alphas == [0.7]
    assert "data.seq_len" not in scaled and "study.alphas" not in scaled
    assert student_name(cfg) == "undo-a0.7-s3"


@pytest.mark.parametrize("args, message", [
    (["--retain", "{retain}", "--out", "{out}"], "needs --forget"),
    (["--forget", "{forget}", "--out", "{out}"], "needs --retain"),
    (["--forget", "{tmp}/nope.jsonl", "--retain", "{retain}", "--out", "{out}"],
     "no such file or folder"),
    (["--forget", "{forget}", "--retain", "{retain}"], "needs --out"),
    (["--forget", "{forget}", "--retain", "{retain}", "--out", "{existing}"],
     "already exists"),
    (["--forget", "{forget}", "--retain", "{retain}", "--out", "{out}",
      "study.alphas=[0.2,0.8]"], "robustify makes one model"),
    (["--forget", "{forget}", "--retain", "{retain}", "--out", "{out}", "distill.lr=-1"],
     "distill.lr"),
])
def test_bad_input_stops_before_any_work(gpt2_dir, data, tmp_path, capsys, args, message):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("earlier results")
    fill = {"forget": data[0], "retain": data[1], "out": tmp_path / "release",
            "existing": existing, "tmp": tmp_path}
    before = _files(tmp_path)
    argv = ["robustify", "--model", str(gpt2_dir), f"out_dir={tmp_path / 'runs'}",
            *[a.format(**fill) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert _files(tmp_path) == before  # nothing written, earlier results intact


def test_a_missing_model_or_gguf_is_one_clear_error(tmp_path, data, capsys):
    with pytest.raises(ConfigError, match="needs --model"):
        robustify_config(model=None, forget=[data[0]], retain=[data[1]])
    assert main(["robustify", "--model", str(tmp_path / "m.gguf"), "--forget", data[0],
                 "--retain", data[1], "--out", str(tmp_path / "o")]) == 2
    assert "no such GGUF file" in capsys.readouterr().err


def test_dry_run_plans_a_1b_model_without_weights(tmp_path, data, capsys):
    """A Llama-3.2-1B-shaped stand-in: config.json only, so any weight load would fail."""
    llama = tmp_path / "llama-3.2-1b"
    LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                tie_word_embeddings=True).save_pretrained(llama)
    runs = tmp_path / "runs"
    assert main(["robustify", "--model", str(llama), "--forget", data[0], "--retain", data[1],
                 "--out", str(tmp_path / "release"), f"out_dir={runs}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    lr = scaled_defaults(1_235_814_400, "cpu")["distill.lr"]  # the stand-in's size
    assert "1.24B parameters" in out and f"distill.lr={lr}" in out
    assert "model.dtype=float32" in out  # below the bf16 limit (study.recipe)
    for stage in ("unlearn maxent", "UNDO a=", "attack unlearn-only", "search replays"):
        assert stage in out
    assert "then: export the UNDO student" in out
    assert not runs.exists() and not (tmp_path / "release").exists()


@pytest.mark.slow
def test_robustify_releases_a_loadable_model_with_its_evidence(gpt2_dir, data, tmp_path,
                                                               capsys):
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM

    runs, release = tmp_path / "runs", tmp_path / "release"
    argv = ["robustify", "--model", str(gpt2_dir), "--forget", data[0], "--retain", data[1],
            f"out_dir={runs}", "threads=1"]
    assert main([*argv, "--out", str(release)]) == 0
    out = capsys.readouterr().out
    lm = AutoModelForCausalLM.from_pretrained(release)
    assert lm.config.n_embd == 32
    card = ModelCard.load(release / "README.md")
    assert card.data.to_dict()  # the YAML front matter parses
    summary = read_json(runs / "robustify-model" / "summary.json")
    [student] = [m for m in summary["models"] if m["kind"] == "undo"]
    teacher = next(m for m in summary["models"] if m["kind"] == "unlearn_only")
    assert student["attack"] and teacher["attack"]  # both attacked
    assert summary["gold_standard"] is False
    state = "recovered the teacher" if student["recovered"] else "did NOT recover"
    assert state in out
    assert ("did not recover" in card.text.lower()) != bool(student["recovered"])
    assert "no gold standard" in card.text and "study.gold" in card.text
    evidence = read_json(release / "evidence" / "summary.json")
    assert evidence["models"] == summary["models"]
    # The card names the base model, the user's forget and retain data in words (not a
    # dump of benchmark fields), and the base model's own metrics beside the student's.
    assert f"Base model: the local model folder `{gpt2_dir}`" in card.text
    assert card.data.to_dict().get("base_model") is None  # a folder: no hub id
    section = card.text.split("## Data", 1)[1].split("## ", 1)[0]
    assert f"**Forget** (what the model should no longer know): the local file `{data[0]}`" \
        in section and f"**Retain** (what it should keep): the local file `{data[1]}`" in section
    assert "the base model's own" in section  # its tokenizer
    assert "= None" not in section and "vocab_size" not in section and "4096" not in section
    base = next(m for m in summary["models"] if m["kind"] == "base")
    rm, fm = summary["retain_metric"]["name"], summary["metric"]["name"]
    for label, m in (("base model (before unlearning)", base),
                     ("teacher (unlearn-only)", teacher), (f"**this model** ({student['name']})",
                                                            student)):
        assert f"| {label} | {m['metrics'][rm]:.3f} | {m['metrics'][fm]:.3f} |" in card.text
    # The same run from a GGUF file (robustify --model x.gguf): named as the file it was.
    stage = read_json(Path(student["stage_dir"]) / "summary.json")
    gguf = copy.deepcopy(summary)
    gguf["environment"]["model_source"] = {"name_or_path": "/models", "revision": None,
                                           "gguf_file": "SmolLM2-135M-Q8_0.gguf",
                                           "hub_commit": None}
    text = model_card(gguf, student, stage=stage, dtype="float32", figure=None, evidence=[])
    assert "Base model: the GGUF file `SmolLM2-135M-Q8_0.gguf` (`/models/SmolLM2-135M-Q8_0" \
           ".gguf`), dequantized to train" in text
    assert "base_model" not in text.split("---")[1]
    # ... and from a hub repository's GGUF file: its repo is the front matter's base_model.
    gguf["environment"]["model_source"] = {
        "name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF", "revision": None,
        "gguf_file": "smollm2-135m-instruct-q8_0.gguf", "hub_commit": "a" * 40}
    card = ModelCard(model_card(gguf, student, stage=stage, dtype="float32", figure=None,
                                evidence=[]))
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    assert ("Base model: the GGUF file `smollm2-135m-instruct-q8_0.gguf` of [HuggingFaceTB/"
            "SmolLM2-135M-Instruct-GGUF](https://huggingface.co/HuggingFaceTB/SmolLM2-135M-"
            "Instruct-GGUF) at commit `aaaaaaaaaaaa`") in card.text
    # Run again into a second folder: every stage is reused, only the export is new.
    stamps = {p: p.stat().st_mtime_ns for p in (runs / "robustify-model").rglob("summary.json")
              if "stages" in p.parts}
    assert main([*argv, "--out", str(tmp_path / "again")]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (tmp_path / "again" / "README.md").read_text() == (release / "README.md").read_text()
