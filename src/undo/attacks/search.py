"""The adaptive attacker: an Optuna search over the attack recipe, per model.

A fixed grid (AdamW, constant LR, one batch size, one data mix) overstates robustness;
other optimizers, schedules, batch sizes, LoRA and data mixes find what it misses. Each
trial is one relearning attack (`undo.attacks.grid.run_one`) with a recipe drawn from the
`search:` space, `attack.steps` steps long; its objective is the benchmark's forget
metric at that budget, maximised when higher means more capability (the worst case for
the defender). A trial counts only if the model keeps its utility (`utility_ok`):
destroying the model is not relearning, so such a trial is stored as PRUNED and never
the best.

Storage: `<attack folder>/search.db` (SQLite, beside the grid's relearn.json). The study
records the model identity and the search settings in its user attrs; a db made for
anything else is refused. Finished trials (COMPLETE or PRUNED) are kept; a trial left
RUNNING by a killed process is marked FAIL and not counted; the search runs until `n`
trials have finished. Integrity (docs/integrity.md): search.db gets a sidecar manifest
whenever the search is at rest (removed while it runs), checked before the db is opened
(damaged: the search stops); search.json and replay files are written with theirs and
rebuilt when damaged. The TPE sampler is re-seeded from (search.seed, finished trials)
before each draw and TPE reads only finished trials, so a resumed search draws what an
uninterrupted one would (tests/attacks/test_search.py; with several workers, up to the batch a
kill cut). Trials run `attack.workers` at a time, as the grid's runs (`plan_workers`:
processes of one thread on a CPU, one at a time on a GPU), asked in batches: TPE's
constant liar keeps a batch's draws apart.

Warm start: the first trials are the grid's worst-case recipes (AdamW, constant LR, the
grid's worst LR at each budget), so the search is at least as strong as the grid
wherever those recipes keep the utility floor. Fair comparison across a study
(`replay_all`): each model's best recipe is replayed against every other model; the
worst case per model and budget is the worst over its own trials and those replays.
Results: `search.json` beside relearn.json (schema in docs/attacks.md).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import optuna

from .. import integrity
from ..analysis.robustness import budget_key
from ..artifacts import (
    config_hash,
    json_text,
    model_folder,
    model_identity,
    read_json,
    stage_lock,
)
from ..benchmarks import build_benchmark
from ..benchmarks.base import MetricSpec
from ..config import RunConfig
from ..configlib import ConfigError
from ..models import load_model, load_tokenizer
from ..runtime import compute_precision, process_pool, torch_threads
from ..stages.base import precision_key, run_dir
from .grid import (
    AttackEval,
    attack,
    attack_dir,
    model_label,
    plan_workers,
    resolved,
)
from .space import (
    Params,
    Start,
    grid_recipes,
    lora_modules,
    recipe_task,
    score,
    search_space,
    suggest,
    utility_bound,
)

SCHEMA = "undo.search/1"
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


# ------------------------------------------------------------------- the study


def check_search(cfg: RunConfig, n_trials: int) -> dict[str, Params]:
    """Refuse a bad trial count or an empty space before any attack runs; the space."""
    if n_trials <= 0:
        raise ConfigError(f"--search / study.attack_search: got {n_trials}; valid: a "
                          "positive number of trials per model")
    return search_space(resolved(cfg), build_benchmark(cfg.data).attack_knobs())


def search_key(cfg: RunConfig, model_dir: Path) -> dict[str, Any]:
    """What a search db belongs to: the model and the search settings (not the number
    of trials, so that a larger N extends a finished search)."""
    return {"model": model_identity(model_dir), "search": asdict(cfg.search),
            **precision_key(resolved(cfg))}


def open_study(path: Path, key: Mapping[str, Any], maximize: bool) -> optuna.Study:
    """The study in `path` (created if missing); ConfigError if it belongs elsewhere."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="attack-search",
                                load_if_exists=True,
                                direction="maximize" if maximize else "minimize")
    stored = study.user_attrs.get("key")
    if stored is None:
        study.set_user_attr("key", config_hash(key))
        study.set_user_attr("identity", dict(key))
    elif stored != config_hash(key):
        was = study.user_attrs.get("identity", {})
        what = [k for k in key if was.get(k) != key[k]] or ["settings"]
        raise ConfigError(f"search storage {path} was made for a different "
                          f"{' and '.join(what)} (its search settings: {was.get('search')}); "
                          f"valid: the same model and search settings, or delete the file "
                          f"(or use --force) to start a new search")
    return study


def recover(study: optuna.Study) -> int:
    """Mark trials a killed process left RUNNING as FAIL (never counted); returns how
    many. One process runs a search at a time."""
    stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
    return len(stale)


def search_attack(cfg: RunConfig, model_dir: str | Path, n_trials: int, *,
                  force: bool = False, log: Callable[[str], None] | None = print) -> Path:
    """Run the LR grid (cached), then the search up to `n_trials` finished trials;
    writes `search.json` in the attack folder and returns the folder. `force` starts
    the search afresh (not the grid); `log=None` is silent (the study's workers)."""
    log = log or _silent
    cfg = resolved(cfg)
    space = check_search(cfg, n_trials)
    model_dir = model_folder(model_dir)
    d = attack(cfg, model_dir)  # the grid (cached; a forced study stage has just rerun it)
    with stage_lock(d):  # one search per folder at a time: another process waits
        if force:  # a new search; the grid stays
            for p in (d / "search.db", d / "search.json"):
                p.unlink(missing_ok=True)
                integrity.sidecar(p).unlink(missing_ok=True)
            shutil.rmtree(d / "replays", ignore_errors=True)
        with compute_precision(cfg.precision, cfg.device):  # the start's evaluation
            _search(cfg, d, model_dir, space, n_trials, log)
    return d


def _search(cfg: RunConfig, d: Path, model_dir: Path, space: Mapping[str, Params],
            n_trials: int, log: Callable[[str], None]) -> None:
    """The search in attack folder `d`: open or resume the study, run the missing
    trials, write search.json."""
    bench = build_benchmark(cfg.data)
    forget, retain = bench.forget_metric, bench.retain_metric
    knobs = bench.attack_knobs()
    model = load_model(model_dir)
    start = AttackEval(bench, load_tokenizer(model_dir), cfg.attack.curve_items_per_op
                       ).full(model)
    targets = {g: lora_modules(model, g) for g in cfg.search.lora_targets}
    bound = utility_bound(retain, start[0][retain.name], cfg.search.utility_floor)
    db = d / "search.db"
    integrity.check_file(db, "Delete it (the search starts over), or start it over with "
                             "`undo attack MODEL --search N --force` (a study: --force attack)")
    integrity.sidecar(db).unlink(missing_ok=True)  # the db changes from here on
    study = open_study(db, search_key(cfg, model_dir), forget.higher_is_better)
    if recover(study):
        log("   search: a killed trial was marked failed (not counted)")
    if not study.get_trials(deepcopy=False):
        relearn = read_json(d / "relearn.json")
        for r in grid_recipes(cfg, relearn, forget.name, space, knobs)[:n_trials]:
            study.enqueue_trial(r, user_attrs={"source": "grid"})
    workers, threads = plan_workers(cfg, n_trials)  # as the grid's: attack.workers, threads
    tcfg = replace(cfg, threads=threads)
    with torch_threads(0):  # trials set their own threads; the caller's are restored
        if workers == 1:
            _run_trials(tcfg, study, model_dir, space, start, targets, bound, n_trials, 1,
                        map, log)
        else:
            with process_pool(workers, threads) as pool:
                _run_trials(tcfg, study, model_dir, space, start, targets, bound, n_trials,
                            workers, pool.map, log)
    record = search_record(cfg, model_dir, study, n_trials, start, bound, space, forget,
                           retain, replays=[],
                           grid=grid_entries(read_json(d / "relearn.json"), forget, retain,
                                             bound))
    integrity.write_manifest(d, [db], path=integrity.sidecar(db))  # at rest again
    write_search(d, {**record, "workers": workers, "threads_per_worker": threads})


def write_search(d: Path, record: dict[str, Any]) -> None:
    """search.json with its manifest (derived from search.db: rebuilt by the next search)."""
    integrity.write_file(d / "search.json", json_text(record).encode())


def read_search(d: Path) -> dict[str, Any]:
    """Attack folder `d`'s search.json, checked (`IntegrityError` saying how to rebuild it)."""
    try:
        return json.loads(integrity.read_file(d / "search.json"))
    except integrity.IntegrityError as e:
        raise integrity.IntegrityError(f"{e}; run the search again (`undo attack MODEL "
                                       "--search N`, or `undo run`) to rebuild it from "
                                       "search.db") from None


def _run_trials(cfg: RunConfig, study: optuna.Study, model_dir: Path,
                space: Mapping[str, Params], start: Start, targets: Mapping[str, list[str]],
                bound: float | None, n_trials: int, workers: int,
                map_fn: Callable[..., Any], log: Callable[[str], None]) -> None:
    """Ask up to `workers` trials at a time (TPE's constant liar spreads them), run them
    (`map_fn`: in-process or a pool), tell each result, until `n_trials` are counted."""
    s = cfg.search
    bench = build_benchmark(cfg.data)
    forget, retain = bench.forget_metric, bench.retain_metric
    while (done := len(study.get_trials(deepcopy=False, states=COUNTED))) < n_trials:
        batch = []
        for i in range(min(workers, n_trials - done)):
            study.sampler = optuna.samplers.TPESampler(
                seed=s.seed * 100_003 + done + i, n_startup_trials=s.startup_trials)
            trial = study.ask()
            batch.append((trial, suggest(trial, space)))
        jobs = [(cfg, model_dir, recipe, start, targets) for _, recipe in batch]
        for n, ((trial, _), run) in enumerate(zip(batch, map_fn(recipe_task, jobs),
                                                  strict=True)):
            if "diverged" in run:  # no budget is valid; never counted as an attack
                for k, v in (("budgets", {}), ("flops", 0.0), ("wall_time_s", 0.0),
                             ("diverged", run["diverged"])):
                    trial.set_user_attr(k, v)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log(f"   search {model_label(model_dir)}: trial {done + n + 1}/{n_trials} "
                    "diverged (does not count)")
                continue
            budgets = score(run, forget, retain, bound)
            final = budgets[budget_key(cfg.attack.steps)]
            for k, v in (("budgets", budgets), ("flops", run["flops"]),
                         ("wall_time_s", run["wall_time_s"])):
                trial.set_user_attr(k, v)
            if final["valid"]:
                study.tell(trial, final["forget"])
            else:  # not an attack that counts: the model lost its utility
                trial.report(final["forget"], cfg.attack.steps)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            log(f"   search {model_label(model_dir)}: trial {done + n + 1}/{n_trials} "
                f"{forget.name}={final['forget']:.3f} {retain.name}={final['retain']:.3f}"
                f"{'' if final['valid'] else ' (below the utility floor)'}")


def _silent(_: str) -> None:
    pass


# ----------------------------------------------------------------- the record


def worst_case(entries: Sequence[Mapping[str, Any]], budgets: Sequence[int],
               higher_is_worse: bool) -> dict[str, dict[str, Any] | None]:
    """Per budget, the worst (for the defender) forget value over entries valid there.

    An entry is {"budgets": {k: {"forget", "retain", "valid"}}, "params", "source"};
    None where no entry kept the utility floor.
    """
    out: dict[str, dict[str, Any] | None] = {}
    for k in map(budget_key, budgets):
        best: dict[str, Any] | None = None
        for e in entries:
            b = e["budgets"].get(k)
            if b is None or not b["valid"]:
                continue
            if best is None or (b["forget"] > best["value"] if higher_is_worse
                                else b["forget"] < best["value"]):
                best = {"value": b["forget"], "retain": b["retain"], "params": e["params"],
                        "source": e["source"]}
        out[k] = best
    return out


def best_so_far(values: Sequence[float | None], higher_is_worse: bool) -> list[float | None]:
    """Running best of the counted trials' objective (None: not counted / none yet)."""
    out: list[float | None] = []
    cur: float | None = None
    for v in values:
        if v is not None and (cur is None or (v > cur if higher_is_worse else v < cur)):
            cur = v
        out.append(cur)
    return out


def grid_entries(relearn: Mapping[str, Any], forget: MetricSpec, retain: MetricSpec,
                 bound: float | None) -> list[dict[str, Any]]:
    """The grid's runs (relearn.json) scored like trials, under the search's utility floor."""
    return [{"source": "grid", "params": {"lr": run["lr"], "seed": run["seed"]},
             "budgets": score(run, forget, retain, bound)} for run in relearn["runs"]]


def search_record(cfg: RunConfig, model_dir: Path, study: optuna.Study, n_trials: int,
                  start: Start, bound: float | None, space: Mapping[str, Params],
                  forget: MetricSpec, retain: MetricSpec,
                  replays: list[dict[str, Any]], grid: list[dict[str, Any]]) -> dict[str, Any]:
    """search.json: every counted trial, the best recipe, the worst case and the cost;
    and the grid's worst case under the same utility floor (`grid_under_floor`): the grid
    has none, so its own worst case may be a model that lost its retain ability."""
    hiw = forget.higher_is_better
    trials = []
    # The first n counted trials: a study grown by a larger N earlier reports n of them,
    # so that every model's record is the same budget.
    for t in study.get_trials(deepcopy=False, states=COUNTED)[:n_trials]:
        complete = t.state == optuna.trial.TrialState.COMPLETE
        trials.append({"number": t.number, "state": t.state.name.lower(), "params": t.params,
                       "value": t.value if complete else None,
                       "source": t.user_attrs.get("source", "tpe"),
                       "budgets": t.user_attrs["budgets"], "flops": t.user_attrs["flops"],
                       "wall_time_s": t.user_attrs["wall_time_s"],
                       "diverged": t.user_attrs.get("diverged")})
    counted = [t for t in trials if t["value"] is not None]
    best = (max if hiw else min)(counted, key=lambda t: t["value"]) if counted else None
    budgets = cfg.attack.all_budgets()
    return {
        "schema": SCHEMA,
        "model": {"label": model_label(model_dir), "path": str(model_dir.resolve()),
                  "identity": model_identity(model_dir)},
        "metric": forget.to_dict(), "retain_metric": retain.to_dict(),
        "steps": cfg.attack.steps, "budgets": budgets, "trials_requested": n_trials,
        "search": asdict(cfg.search), "space": dict(space),
        "utility": {"floor": cfg.search.utility_floor, "retain_before": start[0][retain.name],
                    "bound": bound,
                    "rule": "retain >= bound" if retain.higher_is_better else "retain <= bound"},
        "start": start[0],
        "trials": trials,
        "failed_trials": len(study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.FAIL,))),
        "best_so_far": best_so_far([t["value"] for t in trials], hiw),
        "best": None if best is None else {k: best[k] for k in ("number", "params", "value")},
        "replays": replays,
        "worst_case": worst_case(trials + replays, budgets, hiw),
        "grid_under_floor": worst_case(grid, budgets, hiw),
        "cost": {"trials": len(trials), "steps_per_trial": cfg.attack.steps,
                 "flops": sum(t["flops"] for t in trials),
                 "replay_flops": sum(r["flops"] for r in replays),
                 "wall_time_s": sum(t["wall_time_s"] for t in trials)},
    }


def replay_all(cfg: RunConfig, model_dirs: Sequence[str | Path], *, force: bool = False,
               log: Callable[[str], None] | None = print,
               model_cfgs: Sequence[RunConfig] | None = None) -> Path:
    """Replay every model's best recipe against every other model (cached per recipe in
    `replays/` of the attack folder) and fold the results into each model's search.json
    worst case; returns the attacks folder. `model_cfgs`: each model's own attack config
    (a study's, seeds shifted per model), where its search ran; `cfg` for all if None.
    `force` needs no action here: a forced attack stage already removed its folder,
    replays included."""
    log = log or _silent
    cfgs = [resolved(c) for c in (model_cfgs or [cfg] * len(model_dirs))]
    if len(cfgs) != len(model_dirs):
        raise ValueError(f"replay_all: {len(cfgs)} configs for {len(model_dirs)} models")
    dirs = [model_folder(m) for m in model_dirs]
    folders = [attack_dir(c, m) for c, m in zip(cfgs, dirs, strict=True)]
    records = [read_search(f) for f in folders]
    for i, (c, m, f, rec) in enumerate(zip(cfgs, dirs, folders, records, strict=True)):
        with stage_lock(f), compute_precision(c.precision, c.device):
            _replay_into(c, i, m, f, rec, records, log)  # the folder's one writer
    return run_dir(cfg) / "attacks"


def _replay_into(cfg: RunConfig, i: int, m: Path, f: Path, rec: dict[str, Any],
                 records: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    """Replay the other models' best recipes on model `m` (record `i`, folder `f`)."""
    bench = build_benchmark(cfg.data)
    forget, retain = bench.forget_metric, bench.retain_metric
    start: Start | None = None
    targets: dict[str, list[str]] = {}
    replays = []
    for j, src in enumerate(records):
        if j == i or src["best"] is None:
            continue
        recipe = src["best"]["params"]
        out = f / "replays" / f"{src['model']['label']}-{config_hash(recipe)}.json"
        try:  # a replay done before, used only if intact (derived: replayed again)
            replays.append(json.loads(integrity.read_file(out)))
            continue
        except FileNotFoundError:
            pass
        except integrity.IntegrityError as e:
            integrity.report_rebuild("search replay file", e, "replaying it again")
        if start is None:
            model = load_model(m)
            start = AttackEval(bench, load_tokenizer(m), cfg.attack.curve_items_per_op
                               ).full(model)
            targets = {g: lora_modules(model, g) for g in cfg.search.lora_targets}
        run = recipe_task((cfg, m, recipe, start, targets))
        diverged = "diverged" in run  # then no budget counts
        replay = {"source": f"replay:{src['model']['label']}", "params": recipe,
                  "budgets": {} if diverged else score(run, forget, retain,
                                                       rec["utility"]["bound"]),
                  "flops": 0.0 if diverged else run["flops"],
                  "wall_time_s": 0.0 if diverged else run["wall_time_s"]}
        text = json_text(replay)
        integrity.write_file(out, text.encode())
        log(f"   replay {src['model']['label']} -> {rec['model']['label']}")
        replays.append(json.loads(text))  # as a later run reads it back
    rec["replays"] = replays
    rec["worst_case"] = worst_case(rec["trials"] + replays, rec["budgets"],
                                   forget.higher_is_better)
    rec["cost"]["replay_flops"] = sum(r["flops"] for r in replays)
    write_search(f, rec)


def search_models(cfg: RunConfig, model_dirs: Sequence[str | Path], n_trials: int, *,
                  force: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """`undo attack --search N`: search every model, then the shared replays."""
    t0 = time.time()
    folders = [search_attack(cfg, m, n_trials, force=force, log=log) for m in model_dirs]
    if len(folders) > 1:
        replay_all(cfg, model_dirs, log=log)
    log(f"   search: {time.time() - t0:.0f}s")
    return folders
