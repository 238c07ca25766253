"""Choosing the teacher: a small grid over unlearning settings and a selection rule.

    sweep(cfg, base_dir) -> folder with sweep.json (one row per grid point) and selected.yaml,
                            each with its manifest (undo.integrity)

`cfg.sweep.grid` maps `unlearn` keys to lists of values (a nested mapping reaches into
`method_args`), e.g. `{lr: [1e-4, 3e-4], retain_weight: [1, 3]}`; every combination is
one cached `unlearn` stage. The default rule (configurable in `cfg.sweep`):

    among points whose  after[retain_metric] ≥ min_retain_ratio · base[retain_metric],
    pick the lowest  after[forget_metric]  (ties: higher retain, then fewer steps).

With the defaults: lowest forget accuracy subject to retain accuracy ≥ 95% of the base
model's. If no point qualifies, `selected` is null and the table says why.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Any

import yaml

from ..artifacts import config_hash, json_text, read_json
from ..config import RunConfig, SweepConfig, run_config
from ..configlib import ConfigError, fix_yaml_numbers, key_of, to_dict
from ..integrity import write_file
from .base import run_dir
from .unlearn import default_base, resolve_base, unlearn


def grid_points(grid: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[dict[tuple[str, ...], Any]]:
    """Every combination of a (possibly nested) grid: [{("lr",): 1e-4, ...}, ...]."""
    axes: list[tuple[tuple[str, ...], list[Any]]] = []

    def walk(node: dict[str, Any], path: tuple[str, ...]) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, path + (k,))
            elif isinstance(v, list) and v:
                # `sweep.grid.lr=[1e-4,3e-4]` on the command line reads as strings (YAML 1.1)
                axes.append((path + (k,), fix_yaml_numbers(v)))
            else:
                key = ".".join(("sweep", "grid") + path + (k,))
                raise ConfigError(f"config key '{key}': got {v!r}; valid: a non-empty list "
                                  "of values (or a mapping of such lists)")

    walk(grid, prefix)
    if not axes:
        return [{}]
    return [dict(zip([a for a, _ in axes], combo, strict=True))
            for combo in itertools.product(*(vals for _, vals in axes))]


def point_config(cfg: RunConfig, point: dict[tuple[str, ...], Any]) -> RunConfig:
    """`cfg` with the point's values set under `unlearn`, validated like any config."""
    raw = copy.deepcopy(to_dict(cfg))
    for path, value in point.items():
        node = raw["unlearn"]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return run_config(raw)


def select(rows: list[dict[str, Any]], base: dict[str, float], rule: SweepConfig) -> int | None:
    """Index of the chosen row under `rule`, or None when no row keeps enough retain."""
    floor = rule.min_retain_ratio * base[rule.retain_metric]
    ok = [i for i, r in enumerate(rows) if r["after"][rule.retain_metric] >= floor]
    if not ok:
        return None
    return min(ok, key=lambda i: (rows[i]["after"][rule.forget_metric],
                                  -rows[i]["after"][rule.retain_metric], rows[i]["steps"]))


def _label(point: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    return {".".join(k): v for k, v in point.items()}


def sweep(cfg: RunConfig, base_dir: str | Path | None = None, force: bool = False) -> Path:
    """Run (or reuse) every grid point and write the table; returns the sweep folder."""
    points = grid_points(cfg.sweep.grid)
    configs = [point_config(cfg, p) for p in points]  # all validated before any training
    base = Path(base_dir) if base_dir is not None else default_base(cfg)
    _, ident = resolve_base(base)
    rows = []
    for point, pcfg in zip(points, configs, strict=True):
        d = unlearn(pcfg, base, force=force)
        s = read_json(d / "summary.json")
        rows.append({"point": _label(point), "stage": str(d), "before": s["before"],
                     "after": s["after"], "steps": s["steps"], "tokens": s["tokens"],
                     "flops": s["flops"], "wall_time_s": s["wall_time_s"]})
    base_metrics = rows[0]["before"]
    chosen = select(rows, base_metrics, cfg.sweep)
    floor = cfg.sweep.min_retain_ratio * base_metrics[cfg.sweep.retain_metric]
    for r in rows:
        r["feasible"] = r["after"][cfg.sweep.retain_metric] >= floor
    key = {"base": ident, "unlearn": to_dict(cfg.unlearn), "sweep": to_dict(cfg.sweep),
           "data": key_of(cfg.data), "seed": cfg.seed}
    out = run_dir(cfg) / "sweeps" / f"unlearn-{cfg.unlearn.method}-{config_hash(key)}"
    table = {
        "rule": (f"lowest after['{cfg.sweep.forget_metric}'] subject to "
                 f"after['{cfg.sweep.retain_metric}'] >= {cfg.sweep.min_retain_ratio} x base "
                 f"({floor:.4f})"),
        "base": str(base),
        "base_metrics": base_metrics,
        "selected": chosen,
        "selected_point": rows[chosen]["point"] if chosen is not None else None,
        "selected_stage": rows[chosen]["stage"] if chosen is not None else None,
        "rows": rows,
    }
    # With their manifests (docs/integrity.md): derived from the cached unlearn stages
    # (checked as they are reused), so `undo sweep` writes them again every time.
    if chosen is not None:
        write_file(out / "selected.yaml", yaml.safe_dump(
            {"unlearn": to_dict(configs[chosen].unlearn)}, sort_keys=False).encode())
    write_file(out / "sweep.json", json_text(table).encode())
    return out
