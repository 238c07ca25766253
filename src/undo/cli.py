"""The `undo` command line.

    undo <command> [CONFIG.yaml] [key=value ...] [--options]

CONFIG defaults to the embedded arithmetic study; `key=value` pairs are dotted overrides
(`pretrain.steps=200 seed=3`). User errors print one line and exit with status 2.
Each command's work lives in the library; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from .config import ConfigError, RunConfig, load_config
from .registry import RegistryError


def _split_config_args(items: list[str]) -> tuple[str | None, list[str], list[str]]:
    """Separate an optional YAML path, dotted overrides and positional paths."""
    config, overrides, paths = None, [], []
    for it in items:
        if "=" in it:
            overrides.append(it)
        elif it.endswith((".yaml", ".yml")) and config is None:
            config = it
        else:
            paths.append(it)
    return config, overrides, paths


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
    from .artifacts import read_json, write_text
    from .config import dump_yaml
    from .pretrain import pretrain
    from .stages import run_dir

    cfg = load_run_config(args)
    if args.paths:
        raise ConfigError(f"undo pretrain takes no paths, got {args.paths}")
    write_text(run_dir(cfg) / "config.yaml", dump_yaml(cfg))
    whiches = ["base", "gold"] if args.which == "both" else [args.which]
    for which in whiches:
        d = pretrain(cfg, which, force=args.force)
        s = read_json(d / "summary.json")
        _print_metrics(f"{which}: {d}  ({s['steps']} steps, {s['wall_time_s']:.0f}s)",
                       s["metrics"])
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .config import dump_yaml

    cfg = load_run_config(args)
    print(dump_yaml(cfg), end="")
    return 0


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


Command = tuple[Callable[[argparse.Namespace], int], str,
                Callable[[argparse.ArgumentParser], None] | None]
# name -> (handler, help, extra options)
COMMANDS: dict[str, Command] = {
    "pretrain": (cmd_pretrain, "pretrain the base and gold-standard models", opts_pretrain),
    "config": (cmd_config, "print the fully resolved config", None),
    "report": (cmd_report, "regenerate plots and report.html from RUN_DIR/summary.json",
               None),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="undo", description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ConfigError, RegistryError, FileNotFoundError) as e:
        print(f"undo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("undo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


def _json_default(x: object) -> object:
    return str(x) if isinstance(x, Path) else x


def dumps(obj: object) -> str:
    return json.dumps(obj, indent=2, default=_json_default)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
