"""`undo robustify`: a pretrained model, forget data and retain data in; a robust model,
its evidence and its model card out.

    robustify_config  the run config: robustify/default (or the user's config), then the
                      defaults scaled to the model and device (study.recipe) for every key
                      the user did not set, then the user's overrides
    robustify         the study that config describes (unlearn -> noise -> distill at one
                      α -> attack student and unlearn-only teacher -> report), then
                      `export_model` of the student, recovered or not (its card says which)

Everything is checked before any work: the model's config (no weights), the data files,
the release folder (`--out` must not exist), the config's keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig, load_config
from ..configlib import ConfigError, config_path, read_yaml
from ..study.gold import Shape
from .export import Exported, export_model

DEFAULT = "robustify/default"


@dataclass
class Resolved:
    """robustify's run config, the scaled defaults it took (key -> value), and the model's
    shape (for the plan, which would otherwise find it again)."""

    cfg: RunConfig
    scaled: dict[str, object]
    shape: tuple[Shape, str]


@dataclass
class Robustified:
    cfg: RunConfig
    run_dir: Path
    summary: dict[str, Any]
    exported: Exported


def model_overrides(model: str) -> list[str]:
    """`--model` as config keys: a .gguf file, or a hub id / local folder."""
    p = Path(model).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ConfigError(f"--model {model}: no such GGUF file; valid: a hub id, a "
                              f"save_pretrained folder, or an existing .gguf file")
        return [f"model.name_or_path={p.parent}", f"model.gguf_file={p.name}"]
    return [f"model.name_or_path={model}"]


def _sources(paths: list[str], flag: str) -> str:
    for path in paths:
        if not Path(path).expanduser().exists():
            raise ConfigError(f"{flag} {path}: no such file or folder; valid: a .jsonl file "
                              f"(one {{\"text\": ...}} object per line), a .txt file, or a "
                              f"folder of them")
    return "[" + ", ".join(f"{{path: '{Path(p).expanduser()}'}}" for p in paths) + "]"


def _has(raw: dict, dotted: str) -> bool:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _name_of(model: str) -> str:
    stem = Path(model.rstrip("/")).name.removesuffix(".gguf") or "model"
    return "robustify-" + re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-").lower()


def robustify_config(*, model: str | None, forget: list[str], retain: list[str],
                     config: str | None = None, overrides: list[str] | None = None,
                     device: str | None = None) -> Resolved:
    """The validated run config, the scaled defaults it took, the model's shape.

    `device`: the device the budgets are sized for (None: CUDA if available, else CPU).
    """
    from ..configlib import parse_override
    from ..study.gold import model_shape
    from ..study.recipe import scaled_defaults

    overrides = list(overrides or [])
    raw = read_yaml(config_path(config or DEFAULT))
    given = set(k for k, _ in map(parse_override, overrides))
    model_keys = model_overrides(model) if model is not None else []
    if model is None and not (_has(raw, "model.name_or_path") or "model.name_or_path" in given):
        raise ConfigError("undo robustify needs --model (a hub id such as "
                          "HuggingFaceTB/SmolLM2-135M, a save_pretrained folder, or a .gguf "
                          "file)")
    data_keys = []
    for flag, role, paths in (("--forget", "forget", forget), ("--retain", "retain", retain)):
        if paths:
            data_keys.append(f"data.{role}={_sources(paths, flag)}")
        elif not raw.get("data", {}).get(role) and f"data.{role}" not in given:
            raise ConfigError(f"undo robustify needs {flag} PATH (repeatable): the {role} "
                              f"text as a .jsonl file (one {{\"text\": ...}} per line), a "
                              f".txt file or a folder of them")
    # The run folder is named after the model unless the user names it.
    named = "name" in given or raw.get("name", "robustify") != "robustify"
    name = [] if named else [f"name={_name_of(model or str(raw['model']['name_or_path']))}"]
    first = [*model_keys, *data_keys, *name, *overrides]
    cfg = load_config(config or DEFAULT, first)  # the user's keys, validated
    if device is None:
        import torch

        device = "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
    shape, how = model_shape(cfg, local_only=False)
    if shape is None:  # pragma: no cover - local_only=False always finds a shape
        raise ConfigError(f"the size of {cfg.model.name_or_path!r} is unknown: {how}")
    scaled = {k: v for k, v in scaled_defaults(shape.params, device).items()
              if not _has(raw, k) and k not in given}
    cfg = load_config(config or DEFAULT, first, values=scaled)
    return Resolved(cfg, scaled, (shape, how))


def student_name(cfg: RunConfig) -> str:
    """The summary name of robustify's one UNDO student."""
    [alpha], [seed] = cfg.study.alphas, cfg.study.seeds
    return f"undo-a{alpha:g}-s{seed}"


def check_robustify(cfg: RunConfig, out: str | Path) -> None:
    """What must hold before any work: one α, one seed, a new release folder."""
    if len(cfg.study.alphas) != 1 or len(cfg.study.seeds) != 1:
        raise ConfigError(f"study.alphas / study.seeds: robustify makes one model, got "
                          f"alphas {cfg.study.alphas} and seeds {cfg.study.seeds}; valid: one "
                          f"of each (e.g. study.alphas=[0.5]); `undo run` studies several")
    if Path(out).exists():
        raise ConfigError(f"--out {out}: already exists; valid: a new folder (the release "
                          f"folder is written whole at the end)")


def robustify(cfg: RunConfig, out: str | Path, *, force: list[str] | None = None,
              log: Callable[[str], None] = print) -> Robustified:
    """Run the robustify study and export its student to `out`."""
    from ..stages.base import run_dir
    from ..study.graph import run_study

    check_robustify(cfg, out)
    summary = run_study(cfg, force=force, log=log)
    exported = export_model(run_dir(cfg), out, model=student_name(cfg))
    return Robustified(cfg, run_dir(cfg), summary, exported)
