"""Where things live inside each supported causal-LM family: one table row per family.

Everything that needs a model's internals (RMU's steered layer and trained projections,
RepNoise's layers, the noise's parameter groups, FLOP accounting) asks this module
instead of assuming Llama's names. A row gives, as dotted paths from the `*ForCausalLM`
module: the list of decoder blocks, the MLP output projection inside a block, the
embedding lookups and the output head; and, per block child, its parameter group.
Parameter names are classified against the row, so `post_attention_layernorm` is a
norm and GPT-2's `attn.c_proj` is attention while its `mlp.c_proj` is MLP.

GPT-2 uses `Conv1D`, whose weight is stored transposed, (in, out) instead of Linear's
(out, in): `conv1d` marks it. The Xavier bound √(6 / (fan_in + fan_out)) is symmetric
in the two fans, so noise draws the same bound either way; anything asymmetric in
(in, out) must check `Family.conv1d`.

A family not in the table (a new `model_type`) is refused with a `ConfigError` naming
it and the supported ones, instead of failing later with an AttributeError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from .configlib import ConfigError

# Parameter groups. The output head is its own group here; noise counts it with the
# embeddings (`noise.targets: embeddings` means "incl. the output head").
GROUPS = ("embeddings", "attention", "mlp", "norms", "head", "other")

_LLAMA_BLOCK = {"self_attn": "attention", "mlp": "mlp", "input_layernorm": "norms",
                "post_attention_layernorm": "norms"}


@dataclass(frozen=True)
class Family:
    """Paths (dotted, from the causal-LM module) of one architecture family."""

    blocks: str  # the ModuleList of decoder blocks
    mlp_out: str  # inside a block: the MLP's output projection (RMU trains it)
    embeddings: tuple[str, ...]  # lookup tables (token, and position where learned)
    head: str  # the output projection to the vocabulary (tied or not)
    final_norm: str
    block_groups: dict[str, str] = field(default_factory=lambda: dict(_LLAMA_BLOCK))
    conv1d: bool = False  # weights stored (in, out) (GPT-2's Conv1D)
    # A fresh norm gain: 1, or 0 where the norm multiplies by (1 + gain) (Gemma-2).
    norm_gain_init: float = 1.0


_LLAMA = Family(blocks="model.layers", mlp_out="mlp.down_proj",
                embeddings=("model.embed_tokens",), head="lm_head", final_norm="model.norm")

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "gemma2": Family(
        blocks="model.layers", mlp_out="mlp.down_proj", embeddings=("model.embed_tokens",),
        head="lm_head", final_norm="model.norm",
        block_groups={**_LLAMA_BLOCK, "pre_feedforward_layernorm": "norms",
                      "post_feedforward_layernorm": "norms"}, norm_gain_init=0.0),
    "gpt2": Family(
        blocks="transformer.h", mlp_out="mlp.c_proj",
        embeddings=("transformer.wte", "transformer.wpe"), head="lm_head",
        final_norm="transformer.ln_f",
        block_groups={"attn": "attention", "mlp": "mlp", "ln_1": "norms", "ln_2": "norms"},
        conv1d=True),
    "gpt_neox": Family(
        blocks="gpt_neox.layers", mlp_out="mlp.dense_4h_to_h",
        embeddings=("gpt_neox.embed_in",), head="lm_head", final_norm="gpt_neox.final_layer_norm",
        block_groups={"attention": "attention", "mlp": "mlp", "input_layernorm": "norms",
                      "post_attention_layernorm": "norms"}),
}


def family_of(model_type: str) -> Family:
    """The table row of `model_type` (a config's `model_type`); ConfigError if unknown."""
    if model_type not in FAMILIES:
        raise ConfigError(
            f"model family {model_type!r} (config.json model_type) is not supported: undo "
            f"needs to know where its decoder blocks, MLP projections and embeddings are. "
            f"Supported families: {', '.join(sorted(FAMILIES))} (add a row to "
            "undo.architectures.FAMILIES for another)"
        )
    return FAMILIES[model_type]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain causal LM under a PEFT wrapper (names and paths are relative to it)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def family(model: torch.nn.Module) -> Family:
    model = unwrap(model)
    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(f"{type(model).__name__} is not a Hugging Face model (no config)")
    return family_of(str(config.model_type))


def blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks, in order."""
    return unwrap(model).get_submodule(family(model).blocks)


def mlp_out_names(model: torch.nn.Module, layers: list[int] | None = None) -> list[str]:
    """Weight names of the MLP output projection of each block in `layers` (all: None)."""
    fam = family(model)
    n = len(blocks(model))
    idx = range(n) if layers is None else layers
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ConfigError(f"layer index {bad[0]} is out of range; valid: 0..{n - 1} "
                          "for this model")
    return [f"{fam.blocks}.{i}.{fam.mlp_out}.weight" for i in idx]


def embedding_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The embedding lookups (their matrices are read, not multiplied)."""
    m = unwrap(model)
    return [m.get_submodule(p) for p in family(model).embeddings]


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The projection to the vocabulary."""
    return unwrap(model).get_submodule(family(model).head)


def head_is_tied(model: torch.nn.Module) -> bool:
    """Whether the output head's weight is the token embedding's tensor."""
    return output_head(model).weight is embedding_modules(model)[0].weight


def classify(fam: Family, name: str) -> tuple[str, int | None]:
    """(group, block index or None) of parameter `name` (as in `named_parameters()`)."""
    m = re.match(rf"{re.escape(fam.blocks)}\.(\d+)\.([^.]+)\.", name)
    if m:
        return fam.block_groups.get(m.group(2), "other"), int(m.group(1))
    module = name.rsplit(".", 1)[0]
    if module in fam.embeddings:
        return "embeddings", None
    if module == fam.head:
        return "head", None
    if module == fam.final_norm:
        return "norms", None
    return "other", None
