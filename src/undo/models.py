"""Build (from a named preset) or load any Hugging Face causal LM; save atomically.

Presets are real `transformers` architectures built from config, so every checkpoint is
a `save_pretrained` folder with safetensors that `AutoModelForCausalLM` loads.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .config import ConfigError, ModelConfig

# name -> (architecture, shape). The Gemma-2 shapes are the paper's reduced models.
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.5M parameters: the CPU default (DESIGN.md, "Sizing the embedded default"). Two
    # layers, not four: on 2 CPU cores a step's cost is per layer (items are ~14 tokens),
    # and two layers reach the base floors (retain 0.993, forget 0.985 with the default
    # data mix) in 1.8x less time (docs/ARCHITECTURE.md).
    "tiny": dict(arch="llama", hidden_size=128, num_layers=2, num_heads=4,
                 intermediate_size=512, max_position_embeddings=128),
    # A very small model for fast tests.
    "micro": dict(arch="llama", hidden_size=32, num_layers=2, num_heads=2,
                  intermediate_size=64, max_position_embeddings=128),
    "gemma2-0.1b": dict(arch="gemma2", hidden_size=320, num_layers=14, num_heads=4,
                        intermediate_size=1280, max_position_embeddings=2048),
    "gemma2-0.3b": dict(arch="gemma2", hidden_size=768, num_layers=14, num_heads=12,
                        intermediate_size=3072, max_position_embeddings=2048),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_shape(cfg: ModelConfig) -> dict[str, Any]:
    if cfg.preset not in PRESETS:
        raise ConfigError(
            f"config key 'model.preset': got {cfg.preset!r}; valid: {', '.join(PRESETS)}"
        )
    shape = dict(PRESETS[cfg.preset])
    for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
              "max_position_embeddings"):
        if getattr(cfg, k) is not None:
            shape[k] = getattr(cfg, k)
    if shape["hidden_size"] % shape["num_heads"]:
        raise ConfigError(
            f"config key 'model.num_heads': got {shape['num_heads']}; valid: a divisor of "
            f"hidden_size ({shape['hidden_size']})"
        )
    return shape


def hf_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    s = model_shape(cfg)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=s["hidden_size"],
        num_hidden_layers=s["num_layers"],
        num_attention_heads=s["num_heads"],
        num_key_value_heads=s["num_heads"],
        intermediate_size=s["intermediate_size"],
        max_position_embeddings=s["max_position_embeddings"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if s["arch"] == "llama":
        return LlamaConfig(**common, tie_word_embeddings=True)
    return Gemma2Config(**common, head_dim=s["hidden_size"] // s["num_heads"],
                        tie_word_embeddings=True, attn_implementation="eager")


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A randomly initialised model from a preset; the init depends only on `seed`."""
    config = hf_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype])
    return model


def reinit_like(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """A fresh random init with `model`'s architecture (Unlearn-and-Distill's student)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype)
    return fresh


def load_model(path: str | Path, dtype: str | None = None) -> PreTrainedModel:
    kwargs = {"dtype": DTYPES[dtype]} if dtype else {}
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a causal LM from '{path}': {e}") from None


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from '{path}': {e}") from None
    if tok.pad_token is None:  # many HF LMs ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
               path: str | Path) -> Path:
    """Write a `save_pretrained` folder atomically: a temp folder renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)
    return path


def count_params(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def stage_tokenizer(cfg: ModelConfig, bench: Any) -> PreTrainedTokenizerBase:
    """The benchmark's own tokenizer if it builds one, else the model's."""
    own = bench.own_tokenizer()
    if own is not None:
        return own
    if not cfg.name_or_path:
        raise ConfigError("config key 'model.name_or_path': got null; valid: a Hugging Face "
                          "model id or folder, since the benchmark uses the model's tokenizer")
    return load_tokenizer(cfg.name_or_path)


def new_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A randomly initialised model: the preset's shape, or `name_or_path`'s architecture."""
    if not cfg.name_or_path:
        return build_model(cfg, tokenizer, seed)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(cfg.name_or_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype])


def load_pretrained(cfg: ModelConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The model `name_or_path` names, with its tokenizer."""
    assert cfg.name_or_path is not None
    return load_model(cfg.name_or_path, cfg.dtype), load_tokenizer(cfg.name_or_path)
