"""The `model` section: which model (a preset, a folder, a hub id, a GGUF file) and how it is held."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..configlib import check

# The config's `precision` (undo.runtime.compute_precision).
Precision = Literal["fp32", "bf16-mixed"]


@dataclass
class ModelConfig:
    """Which network. `preset` builds one from config; `name_or_path` loads any HF causal LM
    of a family in `undo.architectures.FAMILIES` (a hub id or a local folder, or with
    `gguf_file` a GGUF file, dequantized so that it trains and saves as safetensors)."""

    preset: str = "tiny"  # tiny | micro | gemma2-0.1b | gemma2-0.3b (see models.PRESETS)
    name_or_path: str | None = None  # HF hub id or local folder; overrides `preset` when set
    # A GGUF file: a name inside `name_or_path`, or a path to the file (then
    # `name_or_path` may stay null).
    gguf_file: str | None = None
    revision: str | None = None  # hub branch, tag or commit of `name_or_path`
    trust_remote_code: bool = False  # run a hub model's own code (only when set)
    # auto: float32 on CPU, bfloat16 on a CUDA device that supports it (else float32).
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    gradient_checkpointing: bool = False  # recompute activations in backward (less memory)
    # Optional shape overrides on top of the preset (None keeps the preset's value).
    hidden_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    intermediate_size: int | None = None
    max_position_embeddings: int | None = None

    def validate(self, p: str) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            v = getattr(self, name)
            check(v is None or v > 0, f"{p}.{name}", v, "a positive integer or null")
        for name in ("revision", "trust_remote_code"):
            check(self.name_or_path is not None or getattr(self, name) in (None, False),
                   f"{p}.{name}", getattr(self, name), "only with model.name_or_path set")
        if not self.is_pretrained():  # the preset exists and the shape is consistent
            from ..models import model_shape

            model_shape(self)

    def is_pretrained(self) -> bool:
        """A model is loaded (hub id, folder or GGUF file), not built from a preset."""
        return self.name_or_path is not None or self.gguf_file is not None
