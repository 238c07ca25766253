"""What every command shares: config and argument parsing, printing metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import RunConfig, load_config
from ..configlib import ConfigError


def split_config_args(items: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Separate an optional config (a YAML path, or a shipped config's name that is not
    also an existing path), dotted overrides and positional paths."""
    from ..configlib import shipped_config

    config, overrides, paths = None, [], []
    for it in items:
        if "=" in it:
            overrides.append(it)
        elif config is None and (it.endswith((".yaml", ".yml")) or (
                not Path(it).exists() and shipped_config(it) is not None)):
            config = it
        else:
            paths.append(it)
    return config, overrides, paths


def no_paths(args: argparse.Namespace, command: str) -> None:
    """Commands without path arguments: a stray word is an error, not silently ignored."""
    if args.paths:
        word = args.paths[0]
        raise ConfigError(f"undo {command}: unexpected argument {word!r}, neither a .yaml "
                          f"config file nor a key=value override (e.g. {word}=VALUE); "
                          f"undo {command} takes [CONFIG.yaml] [key=value ...]")


def load_run_config(args: argparse.Namespace) -> RunConfig:
    from .. import runtime

    config, overrides, paths = split_config_args(args.items)
    args.paths = paths
    if getattr(args, "alpha", None) is not None:  # --alpha X is noise.alpha=X, checked there
        overrides = [*overrides, f"noise.alpha={args.alpha}"]
    cfg = load_config(config, overrides)
    runtime.setup(cfg)
    return cfg


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    print(title)
    for k, v in metrics.items():
        if k.count("/") <= 1:
            print(f"  {k:<28} {v:8.4f}")


def print_before_after(before: dict[str, float], after: dict[str, float]) -> None:
    print(f"  {'metric':<24} {'before':>8} {'after':>8}")
    for k in before:
        if k.count("/") == 1:
            print(f"  {k:<24} {before[k]:8.4f} {after[k]:8.4f}")


def one_model_dir(args: argparse.Namespace, command: str) -> str | None:
    if len(args.paths) > 1:
        raise ConfigError(f"undo {command} takes at most one MODEL_DIR, got {args.paths}")
    return args.paths[0] if args.paths else None


def one_path(args: argparse.Namespace, command: str, what: str) -> str:
    if len(args.paths) != 1:
        raise ConfigError(f"undo {command} takes exactly one {what}, got {args.paths or 'none'}")
    return args.paths[0]


def model_dirs(args: argparse.Namespace, command: str) -> list[str]:
    """Every MODEL_DIR, checked before any work starts (nothing half-done on a typo)."""
    from ..artifacts import model_folder

    if not args.paths:
        raise ConfigError(f"undo {command} needs at least one MODEL_DIR (a save_pretrained "
                          f"folder, or a stage folder holding model/)")
    return [str(model_folder(p, "MODEL_DIR")) for p in args.paths]
