"""The study commands: run, config(s), report, verify, export."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..configlib import ConfigError
from .common import (
    load_run_config,
    no_paths,
)

if TYPE_CHECKING:
    from ..config import RunConfig


def cmd_run(args: argparse.Namespace) -> int:
    """The whole study: pretrain, unlearn, distill (UNDO, U&D, oracles), attack, report."""
    from ..report import format_table
    from ..stages.base import run_dir
    from ..study.graph import run_study

    cfg = load_run_config(args)
    no_paths(args, "run")
    if cfg.study.run_seeds:
        return _run_seeds(cfg, args)
    if args.dry_run:
        from ..study.plan import format_plan, plan

        print(format_plan(cfg, *plan(cfg)))
        return 0
    summary = run_study(cfg, force=args.force or [])
    print()
    print(format_table(summary))
    root = run_dir(cfg)
    print(f"\nsummary: {root / 'summary.json'}\nreport:  {root / 'report.html'}")
    return 0


def _run_seeds(cfg: RunConfig, args: argparse.Namespace) -> int:
    """`study.run_seeds`: each run seed's table, then the pooled figure."""
    from ..report import format_table
    from ..stages.base import run_dir
    from ..study.plan import format_plan, plan
    from ..study.pooled import format_pooled, pooled_path, run_seed_configs
    from ..study.run_seeds import run_seeds

    if args.dry_run:
        for c in run_seed_configs(cfg):
            print(f"run seed {c.seed}:\n{format_plan(c, *plan(c))}\n")
        print(f"then pooled into {pooled_path(cfg)}")
        return 0
    done = run_seeds(cfg, force=args.force or [])
    for c, summary in zip(done.configs, done.summaries, strict=True):
        print(f"\nrun seed {c.seed} ({run_dir(c)}):\n{format_table(summary)}")
    print(f"\n{format_pooled(done.pooled)}\npooled: {done.pooled_file}")
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
    from ..configlib import shipped_configs

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
    from ..configlib import dump_yaml

    cfg = load_run_config(args)
    no_paths(args, "config")
    print(dump_yaml(cfg), end="")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check every manifest in RUN_DIR (or in a folder `undo noise` or `undo export`
    wrote); exit 0 only when everything is intact."""
    from ..integrity import scan

    if len(args.items) != 1 or not Path(args.items[0]).is_dir():
        raise ConfigError(f"undo verify takes one folder: a run folder (e.g. "
                          f"runs/arithmetic-tiny) or one written by undo noise or undo "
                          f"export, got {args.items or 'nothing'}")
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
    """Regenerate RUN_DIR's plots (PNG, SVG, PDF), table.csv and report.html from its
    summary.json; with several runs, one comparison page in --out DIR."""
    import textwrap

    from ..report import SummaryError, format_table, write_comparison, write_report

    runs = args.items
    if not runs or any("=" in r for r in runs):
        raise ConfigError(f"undo report takes RUN_DIR (a folder holding summary.json, e.g. "
                          f"runs/arithmetic-tiny), or several with --out DIR to compare them; "
                          f"got {runs or 'nothing'}")
    if len(runs) > 1 and args.out is None:
        raise ConfigError(f"undo report with {len(runs)} runs writes one comparison page: "
                          f"give the folder for it with --out DIR (got {', '.join(runs)})")
    from ..integrity import check_file, sidecar
    from ..report.build import summary_path

    try:
        for run in runs:  # a damaged summary.json must not become a figure
            path = summary_path(run)
            # A summary without its manifest (copied by hand, a test fixture, an older
            # run) is drawn as it is, without check_file's note: only JSON is needed here.
            if sidecar(path).is_file():
                check_file(path, f"Run the study again (`undo run CONFIG` in {run}'s "
                                 f"config): it rebuilds summary.json")
        if len(runs) > 1:
            cmp = write_comparison(runs, args.out)
            print(f"compared {', '.join(r.label for r in cmp.runs)} at {cmp.budgets[-1]} "
                  f"attack steps; config keys that differ: "
                  f"{', '.join(cmp.differences) or 'none'}")
            print(f"report: {cmp.html}")
            print(f"table:  {cmp.table}")
            print(f"plots:  {', '.join(str(p) for p in cmp.plots.values())} (+ .svg, .pdf)")
            return 0
        rep = write_report(runs[0], out_dir=args.out)
    except SummaryError as e:
        raise ConfigError(str(e)) from None
    print(format_table(rep.summary))
    print()
    print(textwrap.fill(("Verdict (composed from the numbers): " if rep.verdict_composed
                         else "Verdict: ") + rep.verdict, 96))
    print()
    print(f"report: {rep.html}")
    print(f"table:  {rep.table}")
    print(f"plots:  {', '.join(str(p) for p in rep.plots.values())} (+ .svg, .pdf)")
    return 0


def cmd_pool(args: argparse.Namespace) -> int:
    """One study over several run seeds: pooled robustness and compute (undo.study.pooled)."""
    from ..artifacts import write_json
    from ..study.pooled import format_pooled, pool_runs

    if any("=" in r for r in args.items):
        raise ConfigError(f"undo pool takes RUN_DIR folders (finished runs of one config at "
                          f"different seed=N), not overrides; got {' '.join(args.items)}")
    pooled = pool_runs(args.items)
    print(format_pooled(pooled))
    if args.out:
        print(f"pooled: {write_json(args.out, pooled)}")
    return 0


def opts_pool(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", metavar="FILE", help="also write the pooled numbers as JSON")


def opts_report(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", metavar="DIR",
                    help="the folder for report.html, table.csv and plots/ (default: the "
                         "run's own folder; required when comparing several runs)")


def cmd_export(args: argparse.Namespace) -> int:
    """A finished run's model as a release folder with its model card and evidence."""
    from ..release import export_model, push_folder

    if len(args.items) != 1 or "=" in args.items[0]:
        raise ConfigError(f"undo export takes one RUN_DIR (a finished run's folder, e.g. "
                          f"runs/arithmetic-tiny), got {args.items or 'nothing'}")
    if args.out is None:
        raise ConfigError("undo export needs --out DIR (the release folder to write)")
    from .. import runtime

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


def cmd_robustify(args: argparse.Namespace) -> int:
    """A pretrained model made robust and released: study at one α, then export."""
    from .. import runtime
    from ..release.robustify import check_robustify, robustify, robustify_config
    from .common import split_config_args

    config, overrides, paths = split_config_args(args.items)
    if paths:
        raise ConfigError(f"undo robustify: unexpected argument {paths[0]!r}; the model, data "
                          f"and release folder are --model, --forget, --retain and --out")
    if args.out is None:
        raise ConfigError("undo robustify needs --out DIR (the release folder to write)")
    resolved = robustify_config(model=args.model, forget=args.forget or [],
                                retain=args.retain or [], config=config, overrides=overrides)
    cfg = resolved.cfg
    check_robustify(cfg, args.out)
    runtime.setup(cfg)
    print("defaults scaled to the model and device (set any of them to override):")
    for key, value in resolved.scaled.items():
        print(f"  {key}={value}")
    if args.dry_run:
        from ..study.plan import format_plan, plan

        print(format_plan(cfg, *plan(cfg, resolved.shape)))
        print(f"then: export the UNDO student (α={cfg.study.alphas[0]:g}) to {args.out}")
        return 0
    done = robustify(cfg, args.out, force=args.force or [])
    ex = done.exported
    rec = {True: "recovered the teacher's retain ability",
           False: "did NOT recover the teacher's retain ability within its budget",
           None: "not distilled"}[ex.model.get("recovered")]
    print(f"\n{ex.model['name']} {rec}")
    print(f"release folder: {ex.folder}\n  model card: {ex.folder / 'README.md'}")
    print(f"run folder:     {done.run_dir} (summary.json, report.html)")
    return 0


def opts_robustify(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--model", metavar="MODEL",
                    help="the model: a hub id, a save_pretrained folder or a .gguf file")
    sp.add_argument("--forget", action="append", metavar="PATH",
                    help="text to remove: .jsonl ({\"text\": ...} per line), .txt or a "
                         "folder of them; repeatable")
    sp.add_argument("--retain", action="append", metavar="PATH",
                    help="text to keep (same formats); repeatable")
    sp.add_argument("--out", metavar="DIR", help="the release folder to write (required, new)")
    sp.add_argument("--dry-run", action="store_true",
                    help="print the scaled defaults and every stage's plan, run nothing")
    sp.add_argument("--force", action="append", metavar="KIND",
                    help="re-run stages of this kind even if cached; repeatable")
