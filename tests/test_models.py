import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from undo.compute import matmul_params
from undo.config import ConfigError, ModelConfig
from undo.models import build_model, count_params, load_model, save_model


def test_presets_build_real_hf_models(tokenizer):
    tiny = build_model(ModelConfig(preset="tiny"), tokenizer, seed=0)
    assert type(tiny).__name__ == "LlamaForCausalLM"
    assert 0.5e6 < count_params(tiny) < 2e6
    gemma = build_model(ModelConfig(preset="gemma2-0.1b", num_layers=2), tokenizer, seed=0)
    assert type(gemma).__name__ == "Gemma2ForCausalLM"
    assert gemma.config.hidden_size == 320 and gemma.config.intermediate_size == 1280


def test_same_seed_same_init(tokenizer):
    a = build_model(ModelConfig(preset="micro"), tokenizer, seed=1)
    b = build_model(ModelConfig(preset="micro"), tokenizer, seed=1)
    c = build_model(ModelConfig(preset="micro"), tokenizer, seed=2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_save_is_hf_safetensors_folder(micro_model, tokenizer, tmp_path):
    d = save_model(micro_model, tokenizer, tmp_path / "m")
    assert (d / "model.safetensors").is_file() and (d / "config.json").is_file()
    assert not (tmp_path / "m.tmp").exists()
    m = AutoModelForCausalLM.from_pretrained(d)
    AutoTokenizer.from_pretrained(d)
    x = torch.tensor([[1, 5, 6, 7]])
    assert torch.allclose(m(x).logits, micro_model(x).logits, atol=1e-6)
    assert torch.equal(load_model(d).model.embed_tokens.weight, m.model.embed_tokens.weight)


def test_bad_preset_and_heads(tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="valid: tiny, micro"):
        build_model(ModelConfig(preset="huge"), tokenizer, seed=0)
    with pytest.raises(ConfigError, match="divisor of hidden_size"):
        build_model(ModelConfig(preset="micro", num_heads=3), tokenizer, seed=0)
    with pytest.raises(ConfigError, match="cannot load a causal LM"):
        load_model(tmp_path / "missing")


def test_matmul_params_counts_tied_head_once(micro_model):
    total = count_params(micro_model)
    # Tied head: the embedding matrix is used as the output matmul, the lookup is free.
    assert matmul_params(micro_model) == total
