"""One tiny config per supported architecture family (tests build models from these)."""

from __future__ import annotations

from transformers import (
    Gemma2Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
)

H, LAYERS, HEADS, FF = 32, 2, 2, 64


def tiny_configs(vocab: int, special: dict[str, int],
                 positions: int = 64) -> dict[str, PretrainedConfig]:
    """One tiny config per family; tied and untied heads both occur."""
    common = dict(vocab_size=vocab, hidden_size=H, num_hidden_layers=LAYERS,
                  num_attention_heads=HEADS, intermediate_size=FF,
                  max_position_embeddings=positions, **special)
    return {
        "llama": LlamaConfig(**common, num_key_value_heads=HEADS, tie_word_embeddings=False),
        "gemma2": Gemma2Config(**common, num_key_value_heads=HEADS, head_dim=H // HEADS,
                               tie_word_embeddings=True, attn_implementation="eager"),
        "qwen2": Qwen2Config(**common, num_key_value_heads=HEADS, tie_word_embeddings=False),
        "mistral": MistralConfig(**common, num_key_value_heads=1, tie_word_embeddings=True),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=H, n_layer=LAYERS, n_head=HEADS,
                           n_inner=FF, n_positions=positions, **special),
        "gpt_neox": GPTNeoXConfig(**common, tie_word_embeddings=False),
    }


FAMILY_NAMES = ["llama", "gemma2", "qwen2", "mistral", "gpt2", "gpt_neox"]
