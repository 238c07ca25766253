"""The `undo` command line.

    undo <command> [CONFIG.yaml] [key=value ...] [--options]

CONFIG is a YAML file or a shipped config's name (`undo configs`) and defaults to the
embedded arithmetic study; `key=value` pairs are dotted overrides
(`pretrain.steps=200 seed=3`). User errors print one line and exit with status 2.
Each command's work lives in the library; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from .config import RunConfig, load_config
from .configlib import ConfigError, RegistryError


def _split_config_args(items: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Separate an optional config (a YAML path, or a shipped config's name that is not
    also an existing path), dotted overrides and positional paths."""
    from .configlib import shipped_config

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


def _no_paths(args: argparse.Namespace, command: str) -> None:
    """Commands without path arguments: a stray word is an error, not silently ignored."""
    if args.paths:
        word = args.paths[0]
        raise ConfigError(f"undo {command}: unexpected argument {word!r}, neither a .yaml "
                          f"config file nor a key=value override (e.g. {word}=VALUE); "
                          f"undo {command} takes [CONFIG.yaml] [key=value ...]")


def load_run_config(args: argparse.Namespace) -> RunConfig:
    from . import runtime

    config, overrides, paths = _split_config_args(args.items)
    args.paths = paths
    cfg = load_config(config, overrides)
    runtime.setup(cfg)
    return cfg


def _print_metrics(title: str, metrics: dict[str, float]) -> None:
    print(title)
    for k, v in metrics.items():
        if k.count("/") <= 1:
            print(f"  {k:<28} {v:8.4f}")


# ----------------------------------------------------------------------- commands


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .artifacts import read_json
    from .stages.base import write_run_config
    from .stages.pretrain import pretrain

    cfg = load_run_config(args)
    _no_paths(args, "pretrain")
    write_run_config(cfg)
    whiches = ["base", "gold"] if args.which == "both" else [args.which]
    for which in whiches:
        d = pretrain(cfg, which, force=args.force)
        s = read_json(d / "summary.json")
        _print_metrics(f"{which}: {d}  ({s['steps']} steps, {s['wall_time_s']:.0f}s)",
                       s["metrics"])
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """The whole study: pretrain, unlearn, distill (UNDO, U&D, oracles), attack, report."""
    from .report import format_table
    from .stages.base import run_dir
    from .study.graph import run_study

    cfg = load_run_config(args)
    _no_paths(args, "run")
    if args.dry_run:
        from .study.plan import format_plan, plan

        print(format_plan(cfg, *plan(cfg)))
        return 0
    summary = run_study(cfg, force=args.force or [])
    print()
    print(format_table(summary))
    root = run_dir(cfg)
    print(f"\nsummary: {root / 'summary.json'}\nreport:  {root / 'report.html'}")
    return 0


def opts_run(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--force", action="append", metavar="KIND",
                    help="re-run stages of this kind even if cached (pretrain, unlearn, "
                         "distill, oracle, attack); repeatable")
    sp.add_argument("--dry-run", action="store_true",
                    help="print every stage with its status (cached or not), steps, tokens, "
                         "FLOPs and disk, without running anything or loading weights")


def cmd_configs(args: argparse.Namespace) -> int:
    """The configs shipped with undo: their names and first description line."""
    from .configlib import shipped_configs

    if args.items:
        raise ConfigError(f"undo configs takes no arguments, got {args.items}")
    print("configs shipped with undo (a name works wherever a config path does, e.g. "
          "`undo run text/tiny`):")
    for name, path in shipped_configs().items():
        print(f"  {name:<32} {_description(path)}")
    return 0


def _description(path: Path) -> str:
    """A config's description: its first comment line that is not a command line."""
    for line in path.read_text().splitlines():
        text = line.lstrip("# ").strip()
        if not line.startswith("#"):
            break
        if text and not text.startswith(("undo ", "accelerate ")):
            return text[:90]
    return ""


def cmd_config(args: argparse.Namespace) -> int:
    from .configlib import dump_yaml

    cfg = load_run_config(args)
    _no_paths(args, "config")
    print(dump_yaml(cfg), end="")
    return 0


def _print_before_after(before: dict[str, float], after: dict[str, float]) -> None:
    print(f"  {'metric':<24} {'before':>8} {'after':>8}")
    for k in before:
        if k.count("/") == 1:
            print(f"  {k:<24} {before[k]:8.4f} {after[k]:8.4f}")


def _one_model_dir(args: argparse.Namespace, command: str) -> str | None:
    if len(args.paths) > 1:
        raise ConfigError(f"undo {command} takes at most one MODEL_DIR, got {args.paths}")
    return args.paths[0] if args.paths else None


def cmd_unlearn(args: argparse.Namespace) -> int:
    from .artifacts import read_json
    from .stages.unlearn import unlearn

    cfg = load_run_config(args)
    d = unlearn(cfg, _one_model_dir(args, "unlearn"), force=args.force)
    s = read_json(d / "summary.json")
    print(f"{s['stage']}: {d}  ({s['steps']} steps, {s['tokens']:,} tokens, "
          f"{s['flops']:.3g} FLOPs, {s['wall_time_s']:.0f}s)")
    _print_before_after(s["before"], s["after"])
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from .artifacts import read_json
    from .stages.sweep import sweep

    cfg = load_run_config(args)
    d = sweep(cfg, _one_model_dir(args, "sweep"), force=args.force)
    t = read_json(d / "sweep.json")
    r, f = cfg.sweep.retain_metric, cfg.sweep.forget_metric
    print(f"sweep: {d / 'sweep.json'}")
    print(f"  base: {r} {t['base_metrics'][r]:.4f}  {f} {t['base_metrics'][f]:.4f}")
    for i, row in enumerate(t["rows"]):
        mark = "*" if i == t["selected"] else ("ok" if row["feasible"] else "")
        point = " ".join(f"{k}={v}" for k, v in row["point"].items())
        print(f"  {mark:>2} {point:<40} {r} {row['after'][r]:.4f}  {f} {row['after'][f]:.4f}")
    print(f"  rule: {t['rule']}")
    if t["selected"] is None:
        print("  no point met the retain floor: nothing selected")
    else:
        print(f"  selected: {t['selected_point']} -> {t['selected_stage']}")
    return 0


def opts_force(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--force", action="store_true", help="recompute even if cached")


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every manifest in RUN_DIR; exit 0 only when everything is intact."""
    from .integrity import scan

    if len(args.items) != 1 or not Path(args.items[0]).is_dir():
        raise ConfigError(f"undo verify takes one RUN_DIR (an existing run folder, e.g. "
                          f"runs/arithmetic-tiny), got {args.items or 'nothing'}")
    root = Path(args.items[0])
    findings = scan(root)
    counts = {s: 0 for s in ("intact", "damaged", "rebuild", "unverified")}
    for f in findings:
        counts[f.status] += 1
        print(f"{f.status:<10} {f.path.relative_to(root)}  {f.detail}")
    print(f"{root}: {counts['intact']} intact, {counts['damaged']} damaged, "
          f"{counts['rebuild']} would be rebuilt, {counts['unverified']} unverified")
    return 0 if findings and counts["intact"] == len(findings) else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Regenerate RUN_DIR/plots/*.png and RUN_DIR/report.html from RUN_DIR/summary.json."""
    import textwrap

    from .report import SummaryError, format_table, write_report

    if len(args.items) != 1 or "=" in args.items[0]:
        raise ConfigError(f"undo report takes one RUN_DIR (a folder holding summary.json, "
                          f"e.g. runs/arithmetic-tiny), got {args.items or 'nothing'}")
    try:
        rep = write_report(args.items[0])
    except SummaryError as e:
        raise ConfigError(str(e)) from None
    print(format_table(rep.summary))
    print()
    print(textwrap.fill(("Verdict (composed from the numbers): " if rep.verdict_composed
                         else "Verdict: ") + rep.verdict, 96))
    print()
    print(f"report: {rep.html}")
    print(f"plots:  {', '.join(str(p) for p in rep.plots.values())}")
    return 0


def opts_pretrain(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--which", choices=["base", "gold", "both"], default="both")
    sp.add_argument("--force", action="store_true", help="retrain even if cached")


def _one_path(args: argparse.Namespace, command: str, what: str) -> str:
    if len(args.paths) != 1:
        raise ConfigError(f"undo {command} takes exactly one {what}, got {args.paths or 'none'}")
    return args.paths[0]


def cmd_noise(args: argparse.Namespace) -> int:
    from .stages.noise import noise

    cfg = load_run_config(args)
    src = _one_path(args, "noise", "MODEL_DIR")
    if args.out is None:
        raise ConfigError("undo noise needs --out OUT_DIR (where the noised model goes)")
    r = noise(cfg, src, args.out, base_dir=args.base, seed=args.seed, alpha=args.alpha)
    print(f"noised: {args.out}  (alpha {r.alpha:g}, beta {r.beta:g}, mask {r.mask}, "
          f"{r.fraction_touched:.1%} of {r.params_total:,} params touched, "
          f"norm {r.norm_before:.3f} -> {r.norm_after:.3f})")
    return 0


def opts_noise(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", metavar="OUT_DIR", help="folder for the noised model (required)")
    sp.add_argument("--base", metavar="BASE_DIR", help="model before unlearning (localized mask)")
    sp.add_argument("--seed", type=int, help="noise seed (default: the config's seed)")
    sp.add_argument("--alpha", type=float, help="overrides noise.alpha")


def cmd_distill(args: argparse.Namespace) -> int:
    from .artifacts import read_json
    from .stages.distill import distill

    cfg = load_run_config(args)
    teacher = _one_path(args, "distill", "TEACHER_DIR")
    d = distill(cfg, teacher, init=args.init, alpha=args.alpha, seed=args.seed,
                base_dir=args.base, force=args.force)
    s = read_json(d / "summary.json")
    stop = "stopped early" if s["stopped_early"] else "full budget"
    print(f"{s['init']} student: {d}  ({s['steps']}/{s['max_steps']} steps, {stop}, "
          f"{s['tokens']:,} tokens, {s['flops_incl_teacher']:.3g} FLOPs incl. teacher, "
          f"{s['wall_time_s']:.0f}s)")
    print(f"  {'metric':<24} {'teacher':>8} {'student':>8}")
    for k, v in s["teacher_metrics"].items():
        if k.count("/") == 1:
            print(f"  {k:<24} {v:8.4f} {s['metrics'][k]:8.4f}")
    return 0


def opts_distill(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--init", default="noised", metavar="noised|random|PATH",
                    help="student init: noised teacher (UNDO), random, or a model folder")
    sp.add_argument("--alpha", type=float, help="noise alpha (default: noise.alpha)")
    sp.add_argument("--seed", type=int, help="noise / init seed (default: the config's seed)")
    sp.add_argument("--base", metavar="BASE_DIR", help="model before unlearning (localized mask)")
    sp.add_argument("--force", action="store_true", help="redo even if cached")


def _model_dirs(args: argparse.Namespace, command: str) -> list[str]:
    """Every MODEL_DIR, checked before any work starts (nothing half-done on a typo)."""
    from .artifacts import model_folder

    if not args.paths:
        raise ConfigError(f"undo {command} needs at least one MODEL_DIR (a save_pretrained "
                          f"folder, or a stage folder holding model/)")
    return [str(model_folder(p, "MODEL_DIR")) for p in args.paths]


def cmd_attack(args: argparse.Namespace) -> int:
    from .artifacts import model_identity, read_json
    from .attacks.grid import attack
    from .benchmarks import build_benchmark

    cfg = load_run_config(args)
    dirs = _model_dirs(args, "attack")
    for p in dirs:
        model_identity(p)  # fails early on a folder without weights
    if args.search is not None:
        from .attacks.search import check_search

        check_search(cfg, args.search)  # before the grid: nothing half-done on a typo
    metric = build_benchmark(cfg.data).forget_metric.name
    budgets = cfg.attack.all_budgets()
    head = "".join(f"{metric.split('/')[-1] + '@' + str(k):>22}" for k in budgets)
    rows = []
    for p in dirs:
        d = attack(cfg, p, force=args.force)
        r = read_json(d / "relearn.json")
        wc = r["worst_case"][metric]
        cells = "".join(f"{wc[str(k)]['value']:>8.3f}±{wc[str(k)]['std']:.3f} ({wc[str(k)]['lr']:.0e})"
                        for k in budgets)
        rows.append(f"  {r['model']['label'][:28]:<28}{cells}  {r['wall_time_s']:5.0f}s")
        print(f"attack: {d / 'relearn.json'}")
    print(f"worst-case {metric} over lrs {cfg.attack.lrs} (mean±std over seeds "
          f"{cfg.attack.seeds}, worst lr) after k attack steps")
    print(f"  {'model':<28}{head}")
    print("\n".join(rows))
    if args.search is not None:
        _search(cfg, dirs, args, metric, budgets)
    return 0


def _search(cfg: RunConfig, dirs: list[str], args: argparse.Namespace, metric: str,
            budgets: list[int]) -> None:
    """`--search N`: the adaptive attacker on every model (after its grid), then the
    shared replays; prints the worst case under the search."""
    from .artifacts import read_json
    from .attacks.search import search_models

    folders = search_models(cfg, dirs, args.search, force=False)
    print(f"worst-case {metric} under the search ({args.search} trials x "
          f"{cfg.attack.steps} steps; own trials and replays; null: no trial kept the "
          f"utility floor)")
    print(f"  {'model':<28}" + "".join(f"{'@' + str(k):>10}" for k in budgets)
          + "  best recipe")
    for d in folders:
        r = read_json(d / "search.json")
        cells = "".join(f"{'null' if w is None else format(w['value'], '.3f'):>10}"
                        for w in (r["worst_case"][str(k)] for k in budgets))
        best = r["best"]["params"] if r["best"] else None
        print(f"  {r['model']['label'][:28]:<28}{cells}  {best}")
        print(f"search: {d / 'search.json'}")


def cmd_eval(args: argparse.Namespace) -> int:
    from .artifacts import config_hash, model_identity, write_json
    from .attacks.grid import evaluate_model, model_label
    from .configlib import to_dict
    from .stages.base import run_dir

    cfg = load_run_config(args)
    dirs = _model_dirs(args, "eval")
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


def opts_attack(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--force", action="store_true", help="re-run the attacks even if cached")
    sp.add_argument("--search", type=int, metavar="N",
                    help="also search the attack recipe: N Optuna trials per model "
                         "(settings: the config's search section; docs/attacks.md)")


def opts_eval(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", help="also write every model's metrics to this JSON file")


def cmd_export(args: argparse.Namespace) -> int:
    """A finished run's model as a release folder with its model card and evidence."""
    from .release import export_model, push_folder

    if len(args.items) != 1 or "=" in args.items[0]:
        raise ConfigError(f"undo export takes one RUN_DIR (a finished run's folder, e.g. "
                          f"runs/arithmetic-tiny), got {args.items or 'nothing'}")
    if args.out is None:
        raise ConfigError("undo export needs --out DIR (the release folder to write)")
    from . import runtime

    runtime.quiet()
    ex = export_model(args.items[0], args.out, model=args.model, dtype=args.dtype,
                      license=args.license)
    rec = ex.model.get("recovered")
    state = {True: "recovered", False: "did NOT recover", None: "not distilled"}[rec]
    print(f"exported {ex.model['name']} ({state}; {ex.dtype}) to {ex.folder}")
    print(f"  model card: {ex.folder / 'README.md'}")
    if args.push_to_hub:
        print(f"pushed: {push_folder(ex.folder, args.push_to_hub, private=args.private)}")
    return 0


def opts_export(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", metavar="DIR", help="the release folder to write (required, new)")
    sp.add_argument("--model", metavar="NAME",
                    help="the run's model to export (a name from summary.json, e.g. "
                         "undo-a0.8-s0 or unlearn-only); default: the best-ranked UNDO "
                         "student that recovered")
    sp.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                    help="weights' dtype (default: as stored)")
    sp.add_argument("--license", help="license id for the card (default: the base model's, "
                                      "if its card is in the hub cache)")
    sp.add_argument("--push-to-hub", metavar="REPO", help="also upload to this hub repo")
    sp.add_argument("--private", action="store_true", help="create the hub repo private")


# Training stages that run data-parallel under `torchrun` / `accelerate launch`.
MULTI_PROCESS_COMMANDS = frozenset({"pretrain", "unlearn", "distill"})
# Why not attacks: a grid is many short independent runs, each of which should have its own
# device(s), not a share of one launch whose ranks would have to split the grid and stay
# in step; the study's executors already place each run (docs/scale.md).
ATTACK_NOT_SHARDED = ("; attack runs are independent jobs: spread them with `undo run "
                      "... study.executor=ray study.resources={attack: {gpus: 1}}` (each "
                      "run on its own GPU) or `attack.workers` on CPU")

Command = tuple[Callable[[argparse.Namespace], int], str,
                Callable[[argparse.ArgumentParser], None] | None]
# name -> (handler, help, extra options)
COMMANDS: dict[str, Command] = {
    "attack": (cmd_attack, "relearning attacks (LR x seed grid) on saved models: MODEL_DIR...",
               opts_attack),
    "eval": (cmd_eval, "metrics of saved models on the benchmark's eval sets: MODEL_DIR...",
             opts_eval),
    "run": (cmd_run, "run the whole study on the config (default: embedded arithmetic)",
            opts_run),
    "pretrain": (cmd_pretrain, "pretrain the base and gold-standard models", opts_pretrain),
    "config": (cmd_config, "print the fully resolved config", None),
    "verify": (cmd_verify, "check every manifest in RUN_DIR: intact, damaged, would be "
               "rebuilt (exit 0: all intact)", None),
    "configs": (cmd_configs, "list the configs shipped with undo (usable by name)", None),
    "export": (cmd_export, "a finished run's model as a release folder with a model card: "
               "RUN_DIR --out DIR", opts_export),
    "report": (cmd_report, "regenerate plots and report.html from RUN_DIR/summary.json",
               None),
    "unlearn": (cmd_unlearn, "unlearn a model (default: the study's base) into a teacher",
                opts_force),
    "sweep": (cmd_sweep, "sweep unlearning settings and select the teacher", opts_force),
    "noise": (cmd_noise, "shrink-and-perturb a model into a new folder", opts_noise),
    "distill": (cmd_distill, "distill a teacher into a (noised / random / given) student",
                opts_distill),
}


class _Version(argparse.Action):
    """`undo --version`: the version and, from a git checkout, its commit (asked of git
    only when the option is given)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from .provenance import version_line

        print(version_line())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="undo", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action=_Version)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name, (fn, help_, add_options) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("items", nargs="*", metavar="[CONFIG] [key=value] [PATH]",
                        help="an optional YAML config, dotted overrides, paths")
        sp.set_defaults(func=fn)
        if add_options is not None:
            add_options(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Options may come between items (`undo pretrain CONFIG --which base k=v`): argparse
    # stops the `items` list at the option, so collect the items after it here.
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if rest:
        args.items = [*getattr(args, "items", []), *rest]
    if args.command is None:
        parser.print_help()
        return 2
    try:
        # Before anything runs: a launch of N processes without a process group would
        # run N copies of this command, racing on one folder.
        from .sharding import check_launch

        world = check_launch()
    except ConfigError as e:
        print(f"undo: error: {e}", file=sys.stderr)
        return 2
    if world > 1:
        if args.command not in MULTI_PROCESS_COMMANDS:
            print(f"undo: error: `undo {args.command}` runs in one process, but this is a "
                  f"{world}-process launch; launch only "
                  f"{', '.join(sorted(MULTI_PROCESS_COMMANDS))} with torchrun / accelerate "
                  "launch, and the rest as plain `undo` commands"
                  + (ATTACK_NOT_SHARDED if args.command in ("attack", "run") else ""),
                  file=sys.stderr)
            return 2
        if int(os.environ.get("RANK", "0")) != 0:  # one copy of tables and paths
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (lives as long as the process)
    try:
        return args.func(args)
    except (ConfigError, RegistryError, FileNotFoundError) as e:
        print(f"undo: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the filesystem refused: read-only, no permission, disk full
        print(f"undo: error: cannot write or read a file: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("undo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
