"""Build (from a named preset) or load any Hugging Face causal LM; save atomically.

Presets are real `transformers` architectures built from config, so every checkpoint is
a `save_pretrained` folder with safetensors that `AutoModelForCausalLM` loads.
`load_pretrained` loads a user's model (hub id, local folder or GGUF file) after
checking, before any weights are read, that it is a causal LM of a family
`undo.architectures` knows and that its weights exist: a mistake is one `ConfigError`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

try:  # transformers >= 5; older versions always dequantize GGUF weights
    from transformers import GgufConfig
except ImportError:
    GgufConfig = None

from .architectures import family_of
from .configlib import ConfigError, to_dict

if TYPE_CHECKING:
    from .config import ModelConfig

# name -> (architecture, shape). The Gemma-2 shapes are the paper's reduced models.
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.5M parameters: the CPU default (DESIGN.md, "Sizing the embedded default"). Two
    # layers, not four: on 2 CPU cores a step's cost is per layer (items are ~14 tokens),
    # and two layers reach the base floors (retain 0.993, forget 0.985 with the default
    # data mix) in 1.8x less time (docs/ARCHITECTURE.md).
    "tiny": dict(arch="llama", hidden_size=128, num_layers=2, num_heads=4,
                 intermediate_size=512, max_position_embeddings=128),
    # The scale ladder's larger rungs (docs/scale.md, "The ladder"; configs/scale/): width
    # and depth grow together at head_dim 32 and MLP 4x hidden, ~4x parameters a rung
    # (arithmetic's 50-token vocabulary: small 2.4M, medium 9.8M, large 33.6M).
    "small": dict(arch="llama", hidden_size=192, num_layers=4, num_heads=6,
                  intermediate_size=768, max_position_embeddings=128),
    "medium": dict(arch="llama", hidden_size=320, num_layers=6, num_heads=10,
                   intermediate_size=1280, max_position_embeddings=128),
    "large": dict(arch="llama", hidden_size=512, num_layers=8, num_heads=16,
                  intermediate_size=2048, max_position_embeddings=128),
    # A very small model for fast tests.
    "micro": dict(arch="llama", hidden_size=32, num_layers=2, num_heads=2,
                  intermediate_size=64, max_position_embeddings=128),
    "gemma2-0.1b": dict(arch="gemma2", hidden_size=320, num_layers=14, num_heads=4,
                        intermediate_size=1280, max_position_embeddings=2048),
    "gemma2-0.3b": dict(arch="gemma2", hidden_size=768, num_layers=14, num_heads=12,
                        intermediate_size=3072, max_position_embeddings=2048),
}

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Weight files `from_pretrained` reads (single or sharded, safetensors or pickle).
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
_GGUF_HINT = " (GGUF files need the gguf package: pip install 'gguf>=0.10')"


def resolve_dtype(name: str, device: str | torch.device | None = None) -> torch.dtype:
    """`model.dtype` as a torch dtype; "auto" is bfloat16 on a CUDA device that supports
    it and float32 otherwise (CPU bf16 matmuls are slow and fp16 needs loss scaling).
    `device` None: CUDA if available."""
    if name != "auto":
        return DTYPES[name]
    dev = torch.device(device if device is not None else
                       "cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def model_key(cfg: ModelConfig) -> dict[str, Any]:
    """What a model stage's cache key holds: the settings that change the weights.

    Loading options at their defaults are left out (so keys made before they existed stay
    valid) and gradient checkpointing always is (it changes memory, not results); a
    preset adds its resolved shape, so a preset edited between versions is not reused.
    """
    key = to_dict(cfg)
    key.pop("gradient_checkpointing")
    for name, default in (("gguf_file", None), ("revision", None),
                          ("trust_remote_code", False)):
        if key[name] == default:
            key.pop(name)
    if cfg.name_or_path is None and cfg.gguf_file is None:
        key["shape"] = model_shape(cfg)
    return key


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
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(cfg.dtype))
    if cfg.gradient_checkpointing:
        _checkpointing(model)
    return model


def _checkpointing(model: PreTrainedModel) -> None:
    """Recompute activations in backward (transformers 5 renamed the switch; 4.x has only
    the old name)."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    (enable or model.gradient_checkpointing_enable)()


def reinit_like(model: PreTrainedModel, seed: int) -> PreTrainedModel:
    """A fresh random init with `model`'s architecture (Unlearn-and-Distill's student)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(model.config, dtype=model.dtype)
    return fresh


def load_model(path: str | Path, dtype: str | None = None) -> PreTrainedModel:
    """A model folder written by a stage (`save_model`)."""
    kwargs = {"dtype": resolve_dtype(dtype)} if dtype else {}
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a causal LM from '{path}': {e}") from None


def load_tokenizer(path: str | Path, **kwargs: Any) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder (or hub id; `kwargs` go to `from_pretrained`).
    Pad = EOS when it has no pad token (padding positions are masked anyway)."""
    try:
        tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"cannot load a tokenizer from '{path}': {e}") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"the tokenizer of '{path}' has neither a pad nor an EOS token; "
                              "undo needs one to pad batches")
        tok.pad_token = tok.eos_token
    return tok


def load_pretrained(cfg: ModelConfig, device: str | torch.device = "cpu"
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`cfg.name_or_path` (hub id or local folder) or `cfg.gguf_file`, and its tokenizer.

    Checked before weights are read: the folder exists, its config is a causal LM of a
    supported family (`undo.architectures`), a weight file is there. A GGUF file is
    dequantized (to `cfg.dtype`), so the model trains and saves as safetensors.
    """
    config = pretrained_config(cfg)
    src, kwargs = _source(cfg)
    load_kwargs: dict[str, Any] = {}
    if cfg.gguf_file is not None and GgufConfig is not None:
        # Without it transformers 5 may keep the weights packed in GGUF blocks (when a
        # kernel is installed): not trainable and not savable as safetensors.
        load_kwargs["quantization_config"] = GgufConfig(dequantize=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, config=config, dtype=resolve_dtype(cfg.dtype, device), **kwargs, **load_kwargs)
    except (OSError, ValueError, ImportError) as e:
        hint = _GGUF_HINT if cfg.gguf_file else ""
        raise ConfigError(f"cannot load the causal LM '{_shown(cfg)}': {e}{hint}") from None
    if cfg.gradient_checkpointing:
        _checkpointing(model)
    return model.to(device), load_tokenizer(src, **kwargs)


def pretrained_config(cfg: ModelConfig, *, weights: bool = True,
                      local_only: bool = False) -> PretrainedConfig:
    """The HF config of `cfg`'s model, checked to be a loadable causal LM of a known family
    (and, with `weights`, that a local folder holds weights). `local_only`: read the hub
    cache only, never download."""
    src, kwargs = _source(cfg)
    shown = _shown(cfg)
    try:
        config = AutoConfig.from_pretrained(src, local_files_only=local_only, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        hint = _GGUF_HINT if cfg.gguf_file else ""
        raise ConfigError(f"config key 'model.name_or_path': cannot read the model config of "
                          f"{shown!r}: {e}{hint}") from None
    model_type = str(getattr(config, "model_type", ""))
    causal = {c for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
              for c in ((v,) if isinstance(v, str) else v)}
    archs = list(getattr(config, "architectures", None) or [])
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (
            archs and not any(a in causal for a in archs)):
        what = f"architectures {archs}" if archs else f"model_type {model_type!r}"
        raise ConfigError(f"config key 'model.name_or_path': {shown!r} is not a causal "
                          f"language model ({what}); valid: a model AutoModelForCausalLM "
                          "loads, e.g. a *ForCausalLM")
    family_of(model_type)
    if weights and cfg.gguf_file is None and Path(src).is_dir() and not any(
            f for g in WEIGHT_GLOBS for f in Path(src).glob(g)):
        raise ConfigError(f"config key 'model.name_or_path': {shown!r} has no weights "
                          f"({' or '.join(WEIGHT_GLOBS)}); valid: a folder written by "
                          "save_pretrained, or set model.gguf_file")
    return config


def _source(cfg: ModelConfig) -> tuple[str, dict[str, Any]]:
    """(what `from_pretrained` gets, its keyword arguments) for `cfg`; path errors here."""
    kwargs: dict[str, Any] = {}
    if cfg.revision is not None:
        kwargs["revision"] = cfg.revision
    if cfg.trust_remote_code:  # only when asked: it runs the repository's code
        kwargs["trust_remote_code"] = True
    src = cfg.name_or_path
    if cfg.gguf_file is not None:
        gguf = Path(cfg.gguf_file).expanduser()
        if src is None:
            if not gguf.is_file():
                raise ConfigError(f"config key 'model.gguf_file': got {cfg.gguf_file!r}; "
                                  "valid: an existing .gguf file (or a file name inside "
                                  "model.name_or_path)")
            src, gguf = str(gguf.parent), Path(gguf.name)
        elif _is_local(src) and not (Path(src).expanduser() / gguf).is_file():
            raise ConfigError(f"config key 'model.gguf_file': no file {cfg.gguf_file!r} in "
                              f"{src!r}; valid: the name of a .gguf file in that folder")
        kwargs["gguf_file"] = str(gguf)
    if src is None:
        raise ConfigError("config key 'model.name_or_path': got None; valid: a Hugging Face "
                          "hub id or local folder of a causal LM, or set model.gguf_file "
                          "(presets are built, not loaded)")
    if _is_local(src):
        path = Path(src).expanduser()
        if not path.is_dir():
            hint = "; for a GGUF file set model.gguf_file" if path.suffix == ".gguf" else ""
            raise ConfigError(f"config key 'model.name_or_path': got {src!r}, which is not an "
                              f"existing folder; valid: a local model folder or a hub id{hint}")
        src = str(path)
    return src, kwargs


def _is_local(name: str) -> bool:
    """A path rather than a hub id ("org/name" has at most one slash and no prefix)."""
    return (Path(name).expanduser().exists() or name.startswith(("/", ".", "~"))
            or name.count("/") > 1)


def _shown(cfg: ModelConfig) -> str:
    """The model as error messages name it."""
    if cfg.gguf_file is None:
        return str(cfg.name_or_path)
    return f"{cfg.name_or_path or ''}:{cfg.gguf_file}"


def vocab_check(teacher: PreTrainedTokenizerBase, student: PreTrainedTokenizerBase) -> None:
    """Distillation matches the two models' next-token distributions id by id, so their
    tokenizers must map the same tokens to the same ids (same size, same map)."""
    if len(teacher) != len(student) or teacher.get_vocab() != student.get_vocab():
        diff = sorted(set(teacher.get_vocab().items()) ^ set(student.get_vocab().items()))
        raise ConfigError(
            f"teacher tokenizer '{teacher.name_or_path}' ({len(teacher)} tokens) and student "
            f"tokenizer '{student.name_or_path}' ({len(student)} tokens) differ (e.g. "
            f"{diff[:3]}); valid: a student with the teacher's vocabulary (same family and "
            "tokenizer)")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None,
               path: str | Path) -> Path:
    """Write a `save_pretrained` folder atomically: a temp folder renamed into place.

    Under a multi-process launch only torch rank 0 writes: transformers writes weights on
    rank 0 alone, so any other writer would rename a weightless folder over the real
    one (the stages call this on the main process, which `runtime.process_state` keeps
    equal to torch rank 0).
    """
    path = Path(path)
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_rank() != 0:
        return path
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
    return own if own is not None else tokenizer_of(cfg)


def tokenizer_of(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of the model `cfg` names (a ConfigError when it names none)."""
    src, kwargs = _source(cfg)
    return load_tokenizer(src, **kwargs)


def new_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A randomly initialised model: the preset's shape, or `name_or_path`'s architecture."""
    if not cfg.is_pretrained():
        return build_model(cfg, tokenizer, seed)
    config = pretrained_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(cfg.dtype))
