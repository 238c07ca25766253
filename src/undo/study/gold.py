"""The gold standard a study runs (`study.gold: auto`), settled before any work.

`auto` is `pretrain` for a preset or a small pretrained model; a pretrained model above
GOLD_AUTO_MAX_PARAMS stops the study and asks, because its gold standard would be
pretrained from scratch. Its size comes from its config alone (`model_shape`, shared with
the plan of `undo run --dry-run`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..configlib import ConfigError

# Above this many parameters a pretrained model's gold standard is not pretrained from
# scratch unless asked (study.gold=pretrain): it would cost far more than the rest.
GOLD_AUTO_MAX_PARAMS = 10_000_000


@dataclass
class Shape:
    """What the plan needs of a model: sizes, not weights."""

    params: int
    matmul_params: int  # N of compute.py's 2N / 6N rule
    bytes_per_param: int
    source: str  # how the shape was found, for the printout


def hub_shapes() -> dict[str, dict[str, Any]]:
    """The shape fields of every hub model a shipped recipe names (data/hub_shapes.yaml),
    so those recipes plan offline."""
    import yaml

    from .. import data

    return yaml.safe_load((Path(data.__file__).parent / "hub_shapes.yaml").read_text())


def model_shape(cfg: RunConfig, local_only: bool = True) -> tuple[Shape | None, str]:
    """(shape, how it was found or why it is unknown). `local_only`: never download
    (a hub id whose config is not cached has no shape)."""
    import torch
    from huggingface_hub import try_to_load_from_cache
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..compute import matmul_params
    from ..models import hf_config, pretrained_config, resolve_dtype, stage_tokenizer
    from ..provenance import is_hub_id
    from ..runtime import device_name

    m = cfg.model
    if m.is_pretrained():
        src = m.name_or_path or ""
        if local_only and m.gguf_file is None and is_hub_id(src) and not isinstance(
                try_to_load_from_cache(src, "config.json", revision=m.revision), str):
            shipped = hub_shapes().get(src)
            if shipped is None:
                return None, (f"unknown: the config of {src!r} is not in the hub cache (the "
                              f"run fetches it; `hf download {src} config.json` to plan "
                              f"with it)")
            shape = dict(shipped)
            config = AutoConfig.for_model(shape.pop("model_type"), **shape)
            how = f"shipped shape of {src} (its config is not in the hub cache)"
        else:
            # Checked as the study checks it (a causal LM of a known family), weights
            # aside: a plan needs none.
            config = pretrained_config(m, weights=False, local_only=local_only)
            how = f"config of {m.name_or_path or m.gguf_file}"
    else:
        from ..benchmarks import build_benchmark

        config = hf_config(m, stage_tokenizer(m, build_benchmark(cfg.data)))
        how = f"preset {m.preset}"
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    dtype = resolve_dtype(m.dtype, device_name(cfg))
    params = sum(p.numel() for p in model.parameters())
    return Shape(params, matmul_params(model), dtype.itemsize, how), how


def resolve_gold(cfg: RunConfig, shape: Shape | None) -> str:
    """`study.gold` as the study runs it: `auto` is `pretrain` for a preset or a small
    pretrained model; for a larger one (or one of unknown size) the study stops and asks."""
    gold = cfg.study.gold
    if gold != "auto" or not cfg.model.is_pretrained():
        return "pretrain" if gold == "auto" else gold
    if shape is not None and shape.params <= GOLD_AUTO_MAX_PARAMS:
        return "pretrain"
    size = f"has {shape.params / 1e6:,.0f}M parameters" if shape else "is of unknown size"
    raise ConfigError(
        f"config key 'study.gold': not set, and the model "
        f"{cfg.model.name_or_path or cfg.model.gguf_file!r} {size}: the default would "
        f"pretrain a gold standard of that size from scratch on the retain data, which costs "
        f"far more than the rest of the study. Set it explicitly: study.gold=none (no gold "
        f"standard: relearning is compared with the unlearn-only model; robustness relative "
        f"to a gold standard needs one), study.gold=PATH (a model that never saw the forget "
        f"data), or study.gold=pretrain (pretrain it anyway)")


def with_gold(cfg: RunConfig, local_only: bool = False) -> RunConfig:
    """`cfg` with `study.gold: auto` resolved (unchanged otherwise)."""
    if cfg.study.gold != "auto":
        return cfg
    shape = model_shape(cfg, local_only)[0] if cfg.model.is_pretrained() else None
    return replace(cfg, study=replace(cfg.study, gold=resolve_gold(cfg, shape)))
