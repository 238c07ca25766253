"""Quantization: weight-only round-to-nearest, then score (arXiv 2410.16454 reported that
4-bit quantization of an unlearned model brings back much of what was removed).

Every linear layer but the output head (tied to the embedding in most models, and left
in full precision by every weight-only scheme we know) is quantized through
optimum-quanto, bit-exact to a hand round-to-nearest (tests/attacks/test_quantize.py):

    int8        symmetric, per output channel: scale = max|w| / 127 (quanto qint8)
    int4        affine, per output channel: scale = (max - min) / 15, zero point -min
    int4-g<G>   affine, per group of G input columns (quanto qint4, group_size G); a layer
                whose width G does not divide is quantized per channel (as quanto's
                own QLinear does) and counted in the run's `info`

The model keeps its dequantized weights (values on the quantization grid), so it scores,
saves and finetunes as any HF model: `quantize_finetune` quantizes and then runs the LR
grid on the quantized model (the paper's attack data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..configlib import ConfigError
from .scored import Attacked, Context, ScoredAttack

SCHEME = re.compile(r"^int(8|4)(?:-g(\d+))?$")


@dataclass
class Config:
    # Schemes tried (the worst is the attack's result): int8, int4, int4-g<G>.
    schemes: list[str] = field(default_factory=lambda: ["int8", "int4", "int4-g32"])

    def validate(self, p: str) -> None:
        for s in self.schemes:
            m = SCHEME.match(s)
            if m is None or (m[2] is not None and (m[1] != "4" or int(m[2]) <= 0)):
                raise ConfigError(f"config key '{p}.schemes': got {s!r}; valid: int8, int4, "
                                  f"int4-g<G> (G a positive group size)")
        if not self.schemes or len(set(self.schemes)) != len(self.schemes):
            raise ConfigError(f"config key '{p}.schemes': got {self.schemes!r}; valid: a "
                              f"non-empty list of distinct schemes")


def quantize_weight(w: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """`w` (out, in) round-to-nearest at `bits`, dequantized: int8 symmetric per channel,
    int4 affine per channel (`group` None) or per `group` input columns."""
    from optimum.quanto import AbsmaxOptimizer, MaxOptimizer, qint4, qint8
    from optimum.quanto import quantize_weight as qw

    w = w.detach().float()
    if bits == 8:
        scale = AbsmaxOptimizer()(w, qint8, axis=0)
        return qw(w, qint8, axis=0, scale=scale).dequantize()
    scale, shift = MaxOptimizer()(w, qint4, axis=0, group_size=group)
    return qw(w, qint4, axis=0, scale=scale, shift=shift, group_size=group).dequantize()


def quantize_model(model: torch.nn.Module, scheme: str) -> dict[str, Any]:
    """Quantize every linear layer but the output head in place; what was done."""
    m = SCHEME.match(scheme)
    assert m is not None, scheme
    bits, group = int(m[1]), int(m[2]) if m[2] else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    done, per_channel = 0, 0
    for mod in model.modules():
        if not isinstance(mod, torch.nn.Linear) or mod is head:
            continue
        g = group if group is not None and mod.in_features % group == 0 else None
        per_channel += group is not None and g is None
        with torch.no_grad():
            mod.weight.copy_(quantize_weight(mod.weight, bits, g).to(mod.weight.dtype))
        done += 1
    return {"layers": done, "per_channel_fallback": per_channel}


class Quantize(ScoredAttack):
    name = "quantize"
    family = "quantization"
    Config = Config
    deterministic = True

    def settings(self, options: Config) -> list[str]:
        return list(options.schemes)

    def apply(self, model: torch.nn.Module, setting: str, ctx: Context, seed: int) -> Attacked:
        return Attacked(model, info=quantize_model(model, setting))


ATTACK = Quantize()


@dataclass
class FinetuneConfig:
    scheme: str = "int4"  # the scheme quantized before the paper's LR grid

    def validate(self, p: str) -> None:
        Config([self.scheme]).validate(p)


@dataclass(frozen=True)
class QuantizeFinetune:
    """Quantize (one scheme), save the quantized model in the attack folder, then the
    paper's LR grid on it: the grid's own relearn.json, read like any finetuning attack."""

    name: str = "quantize_finetune"
    family: str = "quantize + finetune"
    trains: bool = True

    def configure(self, cfg: RunConfig) -> RunConfig:
        from . import registry

        registry.options(cfg, self.name, FinetuneConfig)
        return replace(cfg, attack=replace(cfg.attack, family=self.name))

    def _quantized(self, cfg: RunConfig, model_dir: str | Path) -> tuple[Path, RunConfig]:
        from ..artifacts import config_hash, model_folder, model_identity
        from ..stages.base import run_dir
        from . import registry
        from .grid import model_label
        from .registry import finetune_config

        opts = registry.options(cfg, self.name, FinetuneConfig)
        model_dir = model_folder(model_dir)
        key = {"model": model_identity(model_dir), "quantize": opts.scheme}
        q = run_dir(cfg) / "attacks" / \
            f"{model_label(model_dir)}-{opts.scheme}-{config_hash(key)}" / "model"
        paper = registry.get("paper").configure(finetune_config(cfg))
        return q, paper

    def folder(self, cfg: RunConfig, model_dir: str | Path) -> Path:
        from .grid import attack_dir

        q, paper = self._quantized(cfg, model_dir)
        # Before the quantized model exists its grid's folder cannot be named (its key
        # holds the model's identity): the quantized model's folder stands in.
        return attack_dir(paper, q) if (q / "config.json").is_file() else q.parent

    def run(self, cfg: RunConfig, model_dir: str | Path, *, force: bool = False) -> Path:
        from ..artifacts import stage_lock
        from ..models import load_model, load_tokenizer, save_model
        from . import registry
        from .grid import attack

        q, paper = self._quantized(cfg, model_dir)
        opts = registry.options(cfg, self.name, FinetuneConfig)
        with stage_lock(q.parent):
            if force or not (q / "config.json").is_file():
                model = load_model(model_dir)
                quantize_model(model, opts.scheme)
                save_model(model, load_tokenizer(model_dir), q)
        return attack(paper, q, force=force)


QUANTIZE_FINETUNE = QuantizeFinetune()
