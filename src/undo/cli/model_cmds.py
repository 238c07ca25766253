"""Commands on saved models: attack (and the adaptive search), eval."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import RunConfig
from .common import (
    load_run_config,
    model_dirs,
)


def cmd_attack(args: argparse.Namespace) -> int:
    from ..artifacts import model_identity, read_json
    from ..attacks import registry
    from ..benchmarks import build_benchmark

    cfg = load_run_config(args)
    if args.attack is not None:  # a registered attack (checked before any work)
        cfg = registry.configured(cfg, args.attack)
    dirs = model_dirs(args, "attack")
    for p in dirs:
        model_identity(p)  # fails early on a folder without weights
    if args.search is not None:
        from ..attacks.search import check_search

        check_search(cfg, args.search)  # before the grid: nothing half-done on a typo
    metric = build_benchmark(cfg.data).forget_metric.name
    budgets = cfg.attack.all_budgets()
    head = "".join(f"{metric.split('/')[-1] + '@' + str(k):>22}" for k in budgets)
    rows = []
    for p in dirs:
        d = registry.run_attack(cfg, p, force=args.force)
        r = read_json(d / "relearn.json")
        wc = r["worst_case"][metric]
        names = r.get("settings")  # an attack without training: settings, not LRs

        cells = "".join(f"{wc[str(k)]['value']:>8.3f}±{wc[str(k)]['std']:.3f} "
                        f"({_setting(wc[str(k)], names)})" for k in budgets)
        took = r.get("wall_time_s", (r.get("cost") or {}).get("wall_time_s", 0.0))
        rows.append(f"  {r['model']['label'][:28]:<28}{cells}  {took:5.0f}s")
        print(f"attack: {d / 'relearn.json'}")
    over = (f"settings {list(names.values())}" if names else f"lrs {cfg.attack.lrs}")
    print(f"worst-case {metric} over {over} (mean±std over seeds {cfg.attack.seeds}, worst "
          f"{'setting' if names else 'lr'}) after k attack steps")
    print(f"  {'model':<28}{head}")
    print("\n".join(rows))
    if args.search is not None:
        _search(cfg, dirs, args, metric, budgets)
    return 0


def _search(cfg: RunConfig, dirs: list[str], args: argparse.Namespace, metric: str,
            budgets: list[int]) -> None:
    """`--search N`: the adaptive attacker on every model (after its grid), then the
    shared replays; prints the worst case under the search."""
    from ..attacks.search import read_search, search_models

    folders = search_models(cfg, dirs, args.search, force=False)
    print(f"worst-case {metric} under the search ({args.search} trials x "
          f"{cfg.attack.steps} steps; own trials and replays; null: no trial kept the "
          f"utility floor)")
    print(f"  {'model':<28}" + "".join(f"{'@' + str(k):>10}" for k in budgets)
          + "  best recipe")
    for d in folders:
        r = read_search(d)
        cells = "".join(f"{'null' if w is None else format(w['value'], '.3f'):>10}"
                        for w in (r["worst_case"][str(k)] for k in budgets))
        best = r["best"]["params"] if r["best"] else None
        print(f"  {r['model']['label'][:28]:<28}{cells}  {best}")
        print(f"search: {d / 'search.json'}")


def cmd_eval(args: argparse.Namespace) -> int:
    from ..artifacts import config_hash, model_identity, write_json
    from ..attacks.grid import evaluate_model, model_label
    from ..configlib import to_dict
    from ..stages.base import run_dir

    cfg = load_run_config(args)
    dirs = model_dirs(args, "eval")
    results = {}
    for p in dirs:
        ident = model_identity(p)
        metrics = evaluate_model(cfg, p)
        rec = {"model": {"label": model_label(p), "path": str(Path(p).resolve()),
                         "identity": ident}, "data": to_dict(cfg.data), "metrics": metrics}
        out = (run_dir(cfg) / "evals" /
               f"{model_label(p)}-{config_hash({'model': ident, 'data': rec['data']})}.json")
        write_json(out, rec)
        results[p] = rec
        print(f"eval: {out}")
    if args.out:
        write_json(args.out, list(results.values()))
    # Every set's overall metrics (no per-group breakdowns), whatever the benchmark.
    cols = [k for k in next(iter(results.values()))["metrics"] if k.count("/") == 1]
    print(f"  {'model':<28}" + "".join(f"{c:>20}" for c in cols))
    for rec in results.values():
        m = rec["metrics"]
        print(f"  {rec['model']['label'][:28]:<28}" + "".join(f"{m[c]:>20.4f}" for c in cols))
    return 0


def _setting(w: dict, names: dict | None) -> str:
    """A worst case's learning rate, or its setting's name for an attack without training."""
    return names[repr(float(w["lr"]))] if names else f"{w['lr']:.0e}"


def opts_attack(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--force", action="store_true", help="re-run the attacks even if cached")
    sp.add_argument("--attack", metavar="NAME",
                    help="a registered attack (paper, forget_only, benign_retain, in_context, "
                         "quantize, quantize_finetune; docs/attacks.md); default: the "
                         "config's attack section as it is (the paper's finetuning grid)")
    sp.add_argument("--search", type=int, metavar="N",
                    help="also search the attack recipe: N Optuna trials per model "
                         "(settings: the config's search section; docs/attacks.md)")


def opts_eval(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", help="also write every model's metrics to this JSON file")
