"""`data.tokenizer` naming a tokenizer (a local folder here; a hub id works the same) for a
preset model: the paper trained its 0.1B Gemma-2 shape with Gemma's tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from undo.benchmarks import build_benchmark
from undo.config import ConfigError, run_config
from undo.tokenizers import train_bpe_tokenizer


def data(tmp_path: Path, tokenizer: str) -> dict:
    for name, word in (("f", "virus"), ("r", "river")):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"text": f"{word} {i} " * 20}) + "\n" for i in range(60)))
    return {"benchmark": "text", "forget": [{"path": str(tmp_path / "f.jsonl")}],
            "retain": [{"path": str(tmp_path / "r.jsonl")}], "seq_len": 16,
            "eval_fraction": 0.2, "attack_fraction": 0.2, "tokenizer": tokenizer}


def test_named_tokenizer_folder(tmp_path):
    saved = tmp_path / "tok"
    train_bpe_tokenizer(["a named tokenizer, trained elsewhere"] * 3, 280).save_pretrained(saved)
    bench = build_benchmark(run_config({"data": data(tmp_path, str(saved))}).data)
    tok = bench.own_tokenizer()
    assert len(tok) == 280 and bench.own_tokenizer() is tok
    assert bench.eval_set("forget", tok).windows.max() < 280


def test_model_tokenizer_needs_a_model(tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizer"):
        run_config({"data": data(tmp_path, "model")})


def test_missing_tokenizer_is_one_config_error(tmp_path):
    bench = build_benchmark(run_config({"data": data(tmp_path, str(tmp_path / "none"))}).data)
    with pytest.raises(ConfigError, match="cannot load a tokenizer"):
        bench.own_tokenizer()
