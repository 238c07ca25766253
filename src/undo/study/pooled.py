"""One study over several run seeds: robustness and compute with intervals that include
the run seed's draw of the base model, the gold standard and the teacher, which one run's
intervals hold fixed (README, "What these intervals leave out").

`pool_runs` reads only files: each run's summary.json and its attacks' relearn.json (no
torch). The runs must be the same study but for `seed` (and settings that leave results
alone). `run_seed_configs` is what `undo run` runs under `study.run_seeds` before it pools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..analysis.arms import label_of
from ..analysis.intervals import pooled, pooled_seed_interval
from ..artifacts import read_json
from ..config import RESULT_NEUTRAL_KEYS, RunConfig
from ..configlib import ConfigError, differing
from ..report.views import fmt_ci
from .summary import interval_studies

COMPUTE_KEYS = ("fraction_of_gold_steps", "fraction_of_gold_flops",
                "total_fraction_of_gold_steps", "total_fraction_of_gold_flops")


def run_seed_configs(cfg: RunConfig) -> list[RunConfig]:
    """One ordinary study per `study.run_seeds` (its own `run_seeds` emptied): run seed
    `cfg.seed` in the folder `name` (so a finished single-seed run is reused), every
    other N in `name-seedN`."""
    study = replace(cfg.study, run_seeds=[])
    return [replace(cfg, seed=s, study=study,
                    name=cfg.name if s == cfg.seed else f"{cfg.name}-seed{s}")
            for s in cfg.study.run_seeds]


def pooled_path(cfg: RunConfig) -> Path:
    """Where `undo run` writes the pooled study of `study.run_seeds`: beside the run
    folders, not in one (each folder stays one run's)."""
    return Path(cfg.out_dir) / f"{cfg.name}-pooled.json"


def _check_same_study(run_dirs: Sequence[Path], summaries: list[dict[str, Any]]) -> None:
    diff = differing([s["config"] for s in summaries], RESULT_NEUTRAL_KEYS | {"seed"})
    if diff:
        shown = "; ".join(f"{k}: {' / '.join(map(repr, v))}" for k, v in list(diff.items())[:5])
        raise ConfigError(f"runs to pool differ in more than the run seed ({shown}); valid: "
                          f"runs of one config with different `seed`")
    seeds = [s["config"]["seed"] for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"runs to pool repeat a run seed ({seeds} for "
                          f"{', '.join(map(str, run_dirs))}); valid: distinct run seeds")


def _relearn_runs(run_dir: Path, summary: dict[str, Any]) -> dict[tuple[str, str], list]:
    """(model, attack) -> its relearn.json runs, found by folder name under the run folder
    (the summary's paths are relative to where the run was started)."""
    out = {}
    for e in summary["models"]:
        for attack, section in (e.get("attacks") or {}).items():
            if section and section.get("relearn_json"):
                path = run_dir / "attacks" / Path(section["relearn_json"]).parent.name
                out[(e["name"], attack)] = read_json(path / "relearn.json")["runs"]
    return out


def pool_runs(run_dirs: Sequence[str | Path], seed: int = 0) -> dict[str, Any]:
    """Per attack and budget, each arm's robustness over the runs (mean of the runs' own
    robustness, with a 95% interval resampling runs, items, attack seeds and students),
    and per arm each compute fraction over runs and students."""
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise ConfigError(f"pooling needs at least two run folders, got {len(dirs)}")
    for d in dirs:
        if not (d / "summary.json").is_file():
            raise ConfigError(f"{d}: no summary.json (not a finished study folder)")
    summaries = [read_json(d / "summary.json") for d in dirs]
    _check_same_study(dirs, summaries)
    first = summaries[0]
    tol = first["config"]["study"]["min_robustness_gap"]
    per_run = [interval_studies(_relearn_runs(d, s), s["models"], s["budgets"],
                                s["metric"]["higher_is_worse"], s["attacks"])
               for d, s in zip(dirs, summaries, strict=True)]
    attacks: dict[str, Any] = {}
    for attack, by_budget in per_run[0].items():
        attacks[attack] = {k: pooled([r[attack][k] for r in per_run], tol, seed)
                           for k in by_budget if all(k in r.get(attack, {}) for r in per_run)}
    arms = [a for a in first["intervals"]["compute"]
            if all(a in s["intervals"]["compute"] for s in summaries)]
    compute = {a: {key: pooled_seed_interval(
        [[e["compute"].get(key) for e in s["models"] if label_of(e) == a] for s in summaries],
        seed) for key in COMPUTE_KEYS} for a in arms}
    return {"runs": [str(d) for d in dirs],
            "run_seeds": [s["config"]["seed"] for s in summaries],
            "attacks": attacks, "compute": compute}


def format_pooled(pooled_runs: dict[str, Any]) -> str:
    """`pool_runs`' result as text: per attack at its largest budget, each arm's pooled
    robustness and every run's own; per arm, total FLOPs as a fraction of gold's."""
    lines = []
    for attack, by_budget in pooled_runs["attacks"].items():
        budget = max(by_budget, key=int)
        lines.append(f"{attack}, {budget} steps, run seeds {pooled_runs['run_seeds']}:")
        for arm, r in by_budget[budget]["robustness"].items():
            runs = " ".join("-" if p is None else f"{p:.2f}" for p in r["per_run"])
            lines.append(f"  {arm:22s} R {fmt_ci(r):24s} per run {runs}")
    for arm, c in pooled_runs["compute"].items():
        lines.append(f"  {arm:22s} total FLOPs of gold's "
                     f"{fmt_ci(c['total_fraction_of_gold_flops'], pct=True)}")
    return "\n".join(lines)
