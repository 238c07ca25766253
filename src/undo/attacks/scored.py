"""Attacks without training: change the model (its weights, its prompt) and score it.

A subclass of `ScoredAttack` names its settings (`settings`: quantization schemes,
numbers of in-context examples, layers) and says how one setting attacks a model
(`apply`); everything else is shared here: the cache key and folder, the pre-attack
evaluation, scoring every setting x attack seed on the full forget and retain sets with
per-item units, and relearn.json in the schema the finetuning grid writes, so the
summary, the intervals, pooling, the report and the model card read it as they read a
grid's:

    - a setting plays the role of a learning rate: run `lr` is the setting's position
      (1, 2, ...), its name in `setting` and in relearn.json's `settings`; the worst
      case is the worst setting (chosen on the selection half of the eval items in the
      intervals, reported on the other, as the grid's worst LR);
    - budgets: the attack takes no training step, so its result is the same at every
      step budget of the study (`trains: false` in relearn.json); the curve is flat.

Cost accounting: each run records the adversary's own compute (`attack_flops`,
`attack_tokens`: the extra forward tokens of in-context examples, zero for a weight
edit), not the evaluation's; relearn.json's `cost` sums them with the wall time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..analysis.robustness import aggregate, budget_key
from ..artifacts import config_hash, model_folder, model_identity, write_json
from ..benchmarks import build_benchmark
from ..benchmarks.base import Benchmark
from ..config import RunConfig
from ..configlib import key_of
from ..models import load_model, load_tokenizer
from ..runtime import device_name
from ..stages.base import StageResult, at_precision, precision_key, run_dir, run_stage, source_of
from . import registry
from .grid import AttackEval, model_label


@dataclass
class NoOptions:
    """An attack without settings of its own."""


@dataclass
class Attacked:
    """One setting's attacked model, ready to score, and what the adversary spent."""

    model: torch.nn.Module
    attack_flops: float = 0.0
    attack_tokens: int = 0
    # Tokens the attack adds to every scored query (an in-context prefix): counted into
    # attack_tokens and attack_flops (2·N each) over every item scored.
    per_query_tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # recorded with the run


@dataclass
class Context:
    """What `apply` may use: the run config, the benchmark, the tokenizer, the attack's
    options and the model's folder."""

    cfg: RunConfig
    bench: Benchmark
    tokenizer: Any
    options: Any
    model_dir: Path


class ScoredAttack:
    """Base of every attack that scores a changed model instead of training it."""

    name: ClassVar[str]
    family: ClassVar[str]
    Config: ClassVar[type] = NoOptions
    trains: ClassVar[bool] = False
    # True: a setting's result does not depend on the attack seed (a weight edit), so it
    # is computed once and listed for every seed (the intervals see no seed noise).
    deterministic: ClassVar[bool] = False

    def settings(self, options: Any) -> list[str]:
        raise NotImplementedError

    def apply(self, model: torch.nn.Module, setting: str, ctx: Context, seed: int) -> Attacked:
        """The model under attack `setting` (a fresh copy: it may be changed in place)."""
        raise NotImplementedError

    # -------------------------------------------------------------- the registry API

    def options(self, cfg: RunConfig) -> Any:
        return registry.options(cfg, self.name, self.Config)

    def configure(self, cfg: RunConfig) -> RunConfig:
        self.options(cfg)  # checked before any work
        return replace(cfg, attack=replace(cfg.attack, family=self.name))

    def key(self, cfg: RunConfig, model_dir: str | Path) -> dict[str, Any]:
        a = cfg.attack
        opts = self.options(cfg)
        return {"model": model_identity(model_dir), "attack": self.name,
                "options": asdict(opts), "seeds": [0] if self.deterministic else list(a.seeds),
                "budgets": a.all_budgets(), "curve_items_per_op": a.curve_items_per_op,
                "data": key_of(cfg.data), "seed": cfg.seed,
                **precision_key(_at_attack_precision(cfg))}

    def folder(self, cfg: RunConfig, model_dir: str | Path) -> Path:
        model_dir = model_folder(model_dir)
        return (run_dir(cfg) / "attacks" /
                f"{model_label(model_dir)}-{self.name}-{config_hash(self.key(cfg, model_dir))}")

    def run(self, cfg: RunConfig, model_dir: str | Path, *, force: bool = False) -> Path:
        return run_scored(self, cfg, model_dir, force=force)


def _at_attack_precision(cfg: RunConfig) -> RunConfig:
    """Scored as the grid's attacks are: at `attack.precision`."""
    return cfg if cfg.attack.precision == cfg.precision else \
        replace(cfg, precision=cfg.attack.precision)


def run_scored(attack: ScoredAttack, cfg: RunConfig, model_dir: str | Path, *,
               force: bool = False) -> Path:
    """Attack one saved model at every setting x attack seed (cached); returns the folder."""
    t0 = time.time()
    cfg = _at_attack_precision(attack.configure(cfg))
    model_dir = model_folder(model_dir)
    key = attack.key(cfg, model_dir)
    d = attack.folder(cfg, model_dir)
    opts = attack.options(cfg)
    settings = attack.settings(opts)  # checked before the lock
    a = cfg.attack
    bench = build_benchmark(cfg.data)
    tok = load_tokenizer(model_dir)
    ctx = Context(cfg, bench, tok, opts, model_dir)

    def work() -> StageResult:
        ev = AttackEval(bench, tok, a.curve_items_per_op)
        start = ev.full(load_model(model_dir))
        budgets = a.all_budgets()
        runs, cache = [], {}
        for i, setting in enumerate(settings):
            for seed in a.seeds:
                if attack.deterministic and setting in cache:
                    runs.append({**cache[setting], "seed": seed})
                    continue
                t1 = time.perf_counter()
                hit = attack.apply(load_model(model_dir), setting, ctx, seed)
                metrics, point, units = ev.full_with_units(hit.model)
                if hit.per_query_tokens:
                    extra = hit.per_query_tokens * (len(ev.forget) + len(ev.retain))
                    hit.attack_tokens += extra
                    hit.attack_flops += forward_flops(getattr(hit.model, "model", hit.model),
                                                      extra)
                run = {"lr": float(i + 1), "setting": setting, "seed": seed,
                       "curve": [{"step": b, **point} for b in budgets],
                       "budgets": {budget_key(b): metrics for b in budgets},
                       "units": {budget_key(b): units for b in budgets},
                       "steps": 0, "tokens": 0, "flops": 0.0,
                       "attack_flops": hit.attack_flops, "attack_tokens": hit.attack_tokens,
                       "info": hit.info, "wall_time_s": time.perf_counter() - t1}
                cache[setting] = run
                runs.append(run)
        relearn = {
            "schema": "undo.relearn/1",
            "family": attack.family, "attack_name": attack.name, "trains": False,
            "model": {"label": model_label(model_dir), "path": str(model_dir.resolve()),
                      "identity": key["model"]},
            "attack": asdict(a), "options": asdict(opts),
            "settings": {repr(float(i + 1)): s for i, s in enumerate(settings)},
            "lrs": [float(i + 1) for i in reversed(range(len(settings)))],
            "seeds": list(a.seeds), "budgets": budgets,
            "data": {"eval_items": {"forget": len(ev.forget), "retain": len(ev.retain),
                                    "curve": len(ev.curve_idx)}},
            "start": start[0],
            **aggregate(runs, budgets, retain=ev.retain_metric),
            "runs": runs,
            "cost": {"attack_flops": sum(r["attack_flops"] for r in cache.values()),
                     "attack_tokens": sum(r["attack_tokens"] for r in cache.values()),
                     "runs": len(cache), "wall_time_s": time.time() - t0},
        }
        write_json(d / "relearn.json", relearn)
        return StageResult(
            {"stage": "attack", "attack": attack.name, "model": relearn["model"],
             "worst_case": {m: {k: {"value": w["value"], "setting": relearn["settings"][
                 repr(w["lr"])], "std": w["std"]} for k, w in wc.items()}
                 for m, wc in relearn["worst_case"].items()}},
            device=device_name(cfg.device), source=source_of(model_dir))

    return run_stage(d, key, at_precision(cfg, work), force=force)


def forward_flops(model: torch.nn.Module, tokens: int) -> float:
    """2·N per forward token, N = matmul parameters (the project's FLOP rule)."""
    from ..compute import matmul_params

    return 2.0 * matmul_params(model) * tokens

