"""The attack registry: every adversary a study can run on a model, by name.

`study.attacks` and `undo attack --attack NAME` name entries of this registry. An attack
is one module holding one object with

    name      its name in `study.attacks`
    family    its column group in the robustness table (finetune, benign finetune,
              in-context, quantization, ...)
    trains    whether it takes gradient steps (then its budgets are steps; otherwise its
              result is the same at every budget: it needs none)
    configure(cfg) -> RunConfig       the run config it runs under (checked; what its
                                      cache key and records hold)
    folder(cfg, model_dir) -> Path    its folder, computed as `run` computes it
    run(cfg, model_dir, force=False) -> Path
                                      attack one saved model; writes relearn.json in the
                                      one schema every attack shares (docs/attacks.md)

Finetuning attacks are presets of the LR grid (`attacks/finetune.py`); attacks that
change the model or its prompt without training subclass `scored.ScoredAttack` and write
only `settings()` and `apply()` (`quantize.py` is the smallest). Adding one is its module
plus one line in `MODULES`; a test or a user script may also `register()` an object.

Entries load lazily ("module:object"), so loading a config does not import torch.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig
from ..configlib import ConfigError, RegistryError, build

MODULES: dict[str, str] = {
    "paper": "undo.attacks.finetune:PAPER",
    "forget_only": "undo.attacks.finetune:FORGET_ONLY",
    "benign_retain": "undo.attacks.finetune:BENIGN_RETAIN",
    "in_context": "undo.attacks.in_context:ATTACK",
    "quantize": "undo.attacks.quantize:ATTACK",
    "quantize_finetune": "undo.attacks.quantize:QUANTIZE_FINETUNE",
}
_registered: dict[str, Any] = {}

FINETUNE = "finetune"  # `attack.family` of the LR grid (undo.attacks.grid)


class Attack(Protocol):
    name: str
    family: str
    trains: bool

    def configure(self, cfg: RunConfig) -> RunConfig: ...

    def folder(self, cfg: RunConfig, model_dir: str | Path) -> Path: ...

    def run(self, cfg: RunConfig, model_dir: str | Path, *, force: bool = False) -> Path: ...


def register(attack: Any) -> Any:
    """Add `attack` under `attack.name` (replacing an entry of that name); returns it."""
    _registered[attack.name] = attack
    return attack


def unregister(name: str) -> None:
    _registered.pop(name, None)


def names() -> list[str]:
    return [*MODULES, *(n for n in _registered if n not in MODULES)]


def get(name: str, key: str = "study.attacks") -> Attack:
    """The attack `name`; a RegistryError listing the valid names otherwise."""
    if name in _registered:
        return _registered[name]
    if name not in MODULES:
        raise RegistryError(f"config key '{key}': unknown attack {name!r}; valid: "
                            f"{', '.join(names())}")
    module, obj = MODULES[name].split(":")
    return getattr(importlib.import_module(module), obj)


def options(cfg: RunConfig, name: str, cls: type) -> Any:
    """`attack.options.<name>` as the attack's typed config `cls` (defaults where unset);
    ConfigError naming the bad key."""
    raw = cfg.attack.options.get(name, {})
    if not isinstance(raw, dict):
        raise ConfigError(f"config key 'attack.options.{name}': got {raw!r}; valid: a mapping")
    return build(cls, raw, f"attack.options.{name}")


def check_options(cfg: RunConfig) -> None:
    """Every key of `attack.options` names a registered attack."""
    for name in cfg.attack.options:
        get(name, key="attack.options")


def _runner(cfg: RunConfig) -> Attack:
    """The attack that runs a configured config: `attack.family` names it; every
    finetuning preset runs the same grid (`paper`'s folder and run are the grid's)."""
    family = cfg.attack.family
    return get("paper" if family == FINETUNE else family, key="attack.family")


def attack_folder(cfg: RunConfig, model_dir: str | Path) -> Path:
    """The folder of the attack `cfg.attack.family` names (a configured config)."""
    return _runner(cfg).folder(cfg, model_dir)


def run_attack(cfg: RunConfig, model_dir: str | Path, *, force: bool = False) -> Path:
    """Run the attack `cfg.attack.family` names on `model_dir` (a study job's function:
    importable in a worker)."""
    return _runner(cfg).run(cfg, model_dir, force=force)


def configured(cfg: RunConfig, name: str) -> RunConfig:
    """`cfg` as the attack `name` runs it."""
    check_options(cfg)
    return get(name).configure(cfg)


def family_of(name: str) -> dict[str, Any]:
    """What the robustness table says of an attack: its family and whether it trains;
    an attack no longer registered is described by its name."""
    try:
        a = get(name)
    except RegistryError:
        return {"family": name, "trains": None}
    return {"family": a.family, "trains": bool(a.trains)}


def finetune_config(cfg: RunConfig, **fields: Any) -> RunConfig:
    """`cfg` with the grid's `attack` fields set, as a finetuning attack runs it."""
    return replace(cfg, attack=replace(cfg.attack, family=FINETUNE, **fields))
