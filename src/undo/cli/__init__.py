"""The `undo` command line.

    undo <command> [CONFIG.yaml] [key=value ...] [--options]

CONFIG is a YAML file or a shipped config's name (`undo configs`) and defaults to the
embedded arithmetic study; `key=value` pairs are dotted overrides
(`pretrain.steps=200 seed=3`). User errors print one line and exit with status 2.
Each command's work lives in the library; this module only parses and prints.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from collections.abc import Callable

from ..configlib import ConfigError, RegistryError
from .model_cmds import cmd_attack, cmd_eval, opts_attack, opts_eval
from .stage_cmds import (
    cmd_distill,
    cmd_noise,
    cmd_pretrain,
    cmd_sweep,
    cmd_unlearn,
    opts_distill,
    opts_force,
    opts_noise,
    opts_pretrain,
)
from .study_cmds import (
    cmd_config,
    cmd_configs,
    cmd_export,
    cmd_pool,
    cmd_report,
    cmd_robustify,
    cmd_run,
    cmd_verify,
    opts_export,
    opts_pool,
    opts_report,
    opts_robustify,
    opts_run,
)

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
    "robustify": (cmd_robustify, "make a pretrained model robust to relearning and export it: "
                  "--model M --forget F --retain R --out DIR", opts_robustify),
    "pretrain": (cmd_pretrain, "pretrain the base and gold-standard models", opts_pretrain),
    "config": (cmd_config, "print the fully resolved config", None),
    "verify": (cmd_verify, "check every manifest in RUN_DIR: intact, damaged, would be "
               "rebuilt (exit 0: all intact)", None),
    "configs": (cmd_configs, "list the configs shipped with undo (usable by name)", None),
    "export": (cmd_export, "a finished run's model as a release folder with a model card: "
               "RUN_DIR --out DIR", opts_export),
    "report": (cmd_report, "plots, table.csv and report.html from RUN_DIR/summary.json; "
               "RUN_A RUN_B ... --out DIR compares runs on one page", opts_report),
    "pool": (cmd_pool, "one study over several run seeds: pooled robustness and compute "
             "with intervals that include the run seed: RUN_DIR RUN_DIR ...", opts_pool),
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
        from ..provenance import version_line

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
    """`undo ARGS`: the command's exit status. A reader that closes the pipe early
    (`undo configs | head -3`) ends the command quietly with 141 (128 + SIGPIPE, the
    status `git log | head` leaves), as any command that writes to a closed pipe."""
    try:
        try:
            return _main(argv)
        finally:  # `--help` exits through SystemExit: its output is flushed here too
            sys.stdout.flush()  # a closed pipe shows here for output still buffered
    except BrokenPipeError:
        return _closed_pipe()
    except OSError as e:
        if e.errno == errno.EPIPE:
            return _closed_pipe()
        raise


def _closed_pipe() -> int:
    # Python flushes stdout again at exit, which would print "Exception ignored ...
    # BrokenPipeError": point the descriptor at /dev/null so that flush has nowhere to fail.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (a test's capture)
        pass
    return 128 + signal.SIGPIPE


def _main(argv: list[str] | None) -> int:
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
        from ..sharding import check_launch

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
    except BrokenPipeError:
        raise  # stdout's reader went away: not a file error (main ends quietly)
    except OSError as e:
        if e.errno == errno.EPIPE:
            raise
        # the filesystem refused: read-only, no permission, disk full
        print(f"undo: error: cannot write or read a file: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("undo: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130

