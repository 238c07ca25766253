"""Shrink-and-perturb noise: the "N" of UNDO (Unlearn, Noise, Distill-on-Outputs).

    θ ← (1 − α)·θ + α·β·(I ⊙ N)

(Ash & Adams 2020, "On warm-starting neural network training"; used by Lee et al. 2025,
"Distillation Robustifies Unlearning", arXiv 2506.06278.) N is a fresh Xavier-uniform
draw, U(±√(6 / (fan_in + fan_out))) (Glorot & Bengio 2010), for every 2-D weight (linear
layers, embeddings, an untied output head); 1-D weights (norm scales, biases) get N = 0
and are only shrunk. Norm *gains* g follow `noise.norms`:

- `toward_init` (the default, the paper's experiment): (1 − α)·g + α·g_init, g_init the
  family's fresh-init gain. Every model of the paper is a Gemma-2, whose RMSNorm computes
  x·(1 + g) with g initialised at 0, so the authors' code line "shrink every 1-D weight
  by 1 − α" moves the *effective* gain 1 + g toward a fresh init's 1: exactly this rule.
- `shrink`: (1 − α)·g, a literal port of that code line. On Gemma-2 it equals
  `toward_init`; on families whose gain starts at 1 (Llama, Qwen2, Mistral, GPT-2, NeoX)
  it scales every block's output down instead, which the paper never ran, and it stalls
  high-α students (docs/distillation.md).
- `keep`: g untouched (a measured option; it noises the network less than the paper).

The Xavier bound is symmetric in the two fans, so GPT-2's `Conv1D` weights, stored
transposed as (in, out), get the same bound as the equivalent Linear (out, in); a tied output head is the embedding's tensor and is noised once. I is an
importance mask (all ones for the paper's global noise; the *localized* variant builds it
from |θ_unlearned − θ_base| so the noise lands where unlearning changed the weights).

Every random number comes from an explicit `torch.Generator` on the CPU, drawn in
`named_parameters()` order, so the noise depends only on the seed and the selection,
never on the device (CUDA generators give other numbers) or on global RNG state. With
the same seed an α sweep shares one N, so runs differ only in α.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..architectures import Family, classify, family
from ..config import NoiseConfig
from ..configlib import ConfigError

GROUPS = ("attention", "mlp", "embeddings", "norms", "other")
MASKS = ("none", "top_fraction", "magnitude")
NORMS = ("toward_init", "shrink", "keep")


# ------------------------------------------------------------------- pure functions


def xavier_bound(shape: Sequence[int]) -> float:
    """√(6 / (fan_in + fan_out)); fan_in = shape[1]·receptive, fan_out = shape[0]·receptive."""
    if len(shape) < 2:
        raise ValueError(f"Xavier init needs a weight of 2+ dimensions, got shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return math.sqrt(6.0 / ((shape[0] + shape[1]) * receptive))


def xavier_uniform(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """A float32 CPU draw from U(−b, b), b = `xavier_bound(shape)`."""
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float32)  # [0, 1)
    return (2.0 * u - 1.0) * xavier_bound(shape)


def shrink_perturb(theta: torch.Tensor, alpha: float, beta: float,
                   noise: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """(1 − α)·θ + α·β·(mask ⊙ noise), in float32, returned in θ's dtype.

    `noise=None` means N = 0 (1-D weights: shrink only); `mask=None` means I = 1.
    """
    out = theta.float() * (1.0 - alpha)
    if noise is not None:
        n = noise.to(device=theta.device, dtype=torch.float32)
        if mask is not None:
            n = n * mask.to(device=theta.device, dtype=torch.float32)
        out = out + (alpha * beta) * n
    return out.to(theta.dtype)


def toward(theta: torch.Tensor, alpha: float, target: float) -> torch.Tensor:
    """(1 − α)·θ + α·target, in float32, returned in θ's dtype: a 1-D weight mixed with a
    fresh init's constant value (`noise.norms: toward_init`)."""
    return (theta.float() * (1.0 - alpha) + alpha * target).to(theta.dtype)


def importance_mask(theta: torch.Tensor, theta_base: torch.Tensor, mode: str,
                    fraction: float = 0.1) -> torch.Tensor:
    """Where unlearning moved the weights, from d = |θ − θ_base| (float32, θ's shape).

    - `top_fraction`: 1 on the k = ⌈fraction·numel⌉ entries of largest d among those that
      changed (d > 0), 0 elsewhere. Exactly k entries when at least k changed; ties at the
      k-th value go to the lowest flat indices. Entries unlearning did not touch are never
      selected: with fewer than k changed, only the changed ones are (a threshold at the
      k-th value would be 0 there and put noise on every untouched weight);
    - `magnitude`: d / max(d) (all zeros when the tensors are equal).
    Computed per tensor with a selection (kthvalue), not a sort, so it scales to large
    tensors.
    """
    if theta.shape != theta_base.shape:
        raise ValueError(f"shape mismatch {tuple(theta.shape)} vs {tuple(theta_base.shape)}")
    d = (theta.float() - theta_base.to(theta.device).float()).abs()
    if mode == "magnitude":
        top = d.max()
        return d / top if top > 0 else torch.zeros_like(d)
    if mode == "top_fraction":
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        flat = d.flatten()
        k = math.ceil(fraction * flat.numel())
        # The k-th largest value is the (numel − k + 1)-th smallest.
        thresh = flat.kthvalue(flat.numel() - k + 1).values
        above = flat > thresh
        # Fill the remaining slots with entries equal to the threshold, in index order.
        at = flat == thresh
        slots = k - int(above.sum())
        keep = above | (at & (torch.cumsum(at.long(), 0) <= slots))
        return (keep & (flat > 0)).float().view_as(d)
    raise ValueError(f"unknown mask mode {mode!r}; valid: {', '.join(MASKS[1:])}")


def param_group(name: str, fam: Family) -> str:
    """attention | mlp | embeddings | norms | other: parameter `name`'s group in `fam`.

    The output head counts as an embedding (it is one when tied; `noise.targets:
    embeddings` includes an untied head).
    """
    group, _ = classify(fam, name)
    return "embeddings" if group == "head" else group


def layer_index(name: str, fam: Family) -> int | None:
    """The decoder block a parameter belongs to (`model.layers.3.…` -> 3), else None."""
    return classify(fam, name)[1]


# ----------------------------------------------------------------------- on a model


@dataclass
class NoiseReport:
    """What a noising did. Norms are global L2 norms over all (unique) parameters."""

    alpha: float
    beta: float
    mask: str
    params_total: int
    params_touched: int  # shrunk (and, if 2-D, perturbed)
    params_perturbed: int  # received noise (2-D weights among the touched)
    fraction_touched: float
    norm_before: float
    norm_after: float
    noise_norm: float  # ‖α·β·(I ⊙ N)‖ over the perturbed weights
    touched_by_group: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_parameters(model: torch.nn.Module, targets: Sequence[str] = GROUPS,
                      layers: Sequence[int] | None = None
                      ) -> list[tuple[str, torch.nn.Parameter]]:
    """Parameters whose group is in `targets` and, if `layers` is set, whose block is in it.

    With `layers` set, parameters outside every block (embeddings, final norm) are left
    out. `named_parameters()` lists a tied tensor once (a tied head under the embedding's
    name), so it is noised once. Names are classified by the model's family
    (`undo.architectures`); an unsupported family is a ConfigError.
    """
    bad = [t for t in targets if t not in GROUPS]
    if bad:
        raise ConfigError(f"config key 'noise.targets': got {bad}; valid: {', '.join(GROUPS)}")
    fam = family(model)
    keep = []
    for name, p in model.named_parameters():
        if param_group(name, fam) not in targets:
            continue
        if layers is not None and layer_index(name, fam) not in set(layers):
            continue
        keep.append((name, p))
    return keep


@torch.no_grad()
def apply_noise(model: torch.nn.Module, alpha: float, beta: float, generator: torch.Generator,
                *, targets: Sequence[str] = GROUPS, layers: Sequence[int] | None = None,
                mask: str = "none", mask_fraction: float = 0.1, norms: str = "toward_init",
                base: torch.nn.Module | None = None) -> NoiseReport:
    """Shrink-and-perturb `model` in place; see the module docstring. Returns a report.

    `norms` (norm gains g; norm biases are always shrunk): "toward_init" makes g
    (1 − α)·g + α·g_init, g_init the family's fresh gain (the paper's experiment),
    "shrink" (1 − α)·g (a literal port of the authors' line), "keep" leaves g as it is. `base` (the model before unlearning) is
    required for the localized masks.
    """
    if norms not in NORMS:
        raise ConfigError(f"config key 'noise.norms': got {norms!r}; valid: {', '.join(NORMS)}")
    if mask not in MASKS:
        raise ConfigError(f"config key 'noise.mask': got {mask!r}; valid: {', '.join(MASKS)}")
    base_params = dict(base.named_parameters()) if base is not None else None
    if mask != "none" and base_params is None:
        raise ConfigError(f"noise.mask={mask!r} needs the base model (--base BASE_DIR)")
    all_params = list(model.parameters())
    norm_before = _global_norm(all_params)
    selected = select_parameters(model, targets, layers)
    fam = family(model)
    touched = perturbed = 0
    noise_sq = 0.0
    by_group: dict[str, int] = {}
    for name, p in selected:
        noise = importance = None
        if p.dim() >= 2:
            noise = xavier_uniform(p.shape, generator)  # drawn even when α·β = 0: same stream
            if base_params is not None and mask != "none":
                if name not in base_params:
                    raise ConfigError(f"base model has no parameter '{name}': not the same "
                                      "architecture as the model being noised")
                importance = importance_mask(p, base_params[name], mask, mask_fraction)
            scaled = alpha * beta * (noise if importance is None else noise * importance.cpu())
            noise_sq += float(scaled.double().pow(2).sum())
            perturbed += p.numel()
        g = param_group(name, fam)
        gain = g == "norms" and name.endswith("weight")
        if gain and norms == "keep":
            continue
        if gain and norms == "toward_init":
            p.copy_(toward(p, alpha, fam.norm_gain_init))  # norm biases start at 0: shrunk
        else:
            p.copy_(shrink_perturb(p, alpha, beta, noise, importance))
        touched += p.numel()
        by_group[g] = by_group.get(g, 0) + p.numel()
    total = sum(p.numel() for p in all_params)
    return NoiseReport(
        alpha=alpha, beta=beta, mask=mask, params_total=total, params_touched=touched,
        params_perturbed=perturbed, fraction_touched=touched / max(total, 1),
        norm_before=norm_before, norm_after=_global_norm(all_params),
        noise_norm=math.sqrt(noise_sq), touched_by_group=by_group,
    )


def noised_copy(model: torch.nn.Module, cfg: NoiseConfig, seed: int, *,
                base: torch.nn.Module | None = None) -> tuple[torch.nn.Module, NoiseReport]:
    """A deep copy of `model` noised with `cfg` from `seed`."""
    student = copy.deepcopy(model)
    g = torch.Generator(device="cpu").manual_seed(seed)
    report = apply_noise(student, cfg.alpha, cfg.beta, g,
                         targets=cfg.targets, layers=cfg.layers, mask=cfg.mask,
                         mask_fraction=cfg.mask_fraction, norms=cfg.norms, base=base)
    return student, report


def _global_norm(params: Sequence[torch.Tensor]) -> float:
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params))


# ------------------------------------------------------------------ folders (I/O)


def noise(cfg: Any, model_dir: str | Path, out_dir: str | Path, *,
          base_dir: str | Path | None = None, seed: int | None = None) -> NoiseReport:
    """Noise the model in `model_dir` with `cfg.noise` and write it to `out_dir`.

    `out_dir` becomes a Hugging Face folder (weights, config, tokenizer) plus
    `noise.json` (the report and settings) and `manifest.json` (undo.integrity: checked
    when the folder is loaded). It appears whole or not at all: everything is written
    beside it and renamed into place. `seed` defaults to `cfg.seed`.
    """
    import shutil

    from ..artifacts import model_folder, write_json
    from ..configlib import to_dict
    from ..integrity import write_manifest
    from ..models import load_model, load_tokenizer, save_model

    src = model_folder(model_dir, "model")
    ncfg: NoiseConfig = cfg.noise
    seed = cfg.seed if seed is None else seed
    if ncfg.mask != "none" and base_dir is None:
        raise ConfigError(f"noise.mask={ncfg.mask!r} needs the base model: pass --base")
    base = load_model(model_folder(base_dir, "--base")) if base_dir is not None else None
    model = load_model(src)
    g = torch.Generator(device="cpu").manual_seed(seed)
    report = apply_noise(model, ncfg.alpha, ncfg.beta, g,
                         targets=ncfg.targets, layers=ncfg.layers, mask=ncfg.mask,
                         mask_fraction=ncfg.mask_fraction, norms=ncfg.norms, base=base)
    out = Path(out_dir)
    staging = out.with_name(out.name + ".partial")
    save_model(model, load_tokenizer(src), staging)
    write_json(staging / "noise.json", {"source": str(src), "seed": seed,
                                        "noise": to_dict(ncfg), "report": report.to_dict()})
    write_manifest(staging)  # checked whenever the folder is loaded (docs/integrity.md)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return report
