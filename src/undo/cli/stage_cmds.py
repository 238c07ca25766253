"""The stage commands: pretrain, unlearn, sweep, noise, distill."""

from __future__ import annotations

import argparse

from ..configlib import ConfigError
from .common import (
    load_run_config,
    no_paths,
    one_model_dir,
    one_path,
    print_before_after,
    print_metrics,
)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..artifacts import read_json
    from ..stages.pretrain import pretrain
    from ..study.run_folder import record_run, write_run_config

    cfg = load_run_config(args)
    no_paths(args, "pretrain")
    write_run_config(cfg)
    whiches = ["base", "gold"] if args.which == "both" else [args.which]
    for which in whiches:
        d = pretrain(cfg, which, force=args.force)
        s = read_json(d / "summary.json")
        print_metrics(f"{which}: {d}  ({s['steps']} steps, {s['wall_time_s']:.0f}s)",
                       s["metrics"])
    record_run(cfg)
    return 0


def cmd_unlearn(args: argparse.Namespace) -> int:
    from ..artifacts import read_json
    from ..stages.unlearn import unlearn

    cfg = load_run_config(args)
    d = unlearn(cfg, one_model_dir(args, "unlearn"), force=args.force)
    s = read_json(d / "summary.json")
    print(f"{s['stage']}: {d}  ({s['steps']} steps, {s['tokens']:,} tokens, "
          f"{s['flops']:.3g} FLOPs, {s['wall_time_s']:.0f}s)")
    print_before_after(s["before"], s["after"])
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..artifacts import read_json
    from ..stages.sweep import sweep

    cfg = load_run_config(args)
    d = sweep(cfg, one_model_dir(args, "sweep"), force=args.force)
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


def opts_pretrain(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--which", choices=["base", "gold", "both"], default="both")
    sp.add_argument("--force", action="store_true", help="retrain even if cached")


def cmd_noise(args: argparse.Namespace) -> int:
    from ..stages.noise import noise

    cfg = load_run_config(args)
    src = one_path(args, "noise", "MODEL_DIR")
    if args.out is None:
        raise ConfigError("undo noise needs --out OUT_DIR (where the noised model goes)")
    r = noise(cfg, src, args.out, base_dir=args.base, seed=args.seed)
    print(f"noised: {args.out}  (alpha {r.alpha:g}, beta {r.beta:g}, mask {r.mask}, "
          f"{r.fraction_touched:.1%} of {r.params_total:,} params touched, "
          f"norm {r.norm_before:.3f} -> {r.norm_after:.3f})")
    return 0


def opts_noise(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--out", metavar="OUT_DIR", help="folder for the noised model (required)")
    sp.add_argument("--base", metavar="BASE_DIR", help="model before unlearning (localized mask)")
    sp.add_argument("--seed", type=int, help="noise seed (default: the config's seed)")
    sp.add_argument("--alpha", type=float, help="noise.alpha (the same as noise.alpha=X)")


def cmd_distill(args: argparse.Namespace) -> int:
    from ..artifacts import read_json
    from ..stages.distill import distill

    cfg = load_run_config(args)
    teacher = one_path(args, "distill", "TEACHER_DIR")
    d = distill(cfg, teacher, init=args.init, seed=args.seed,
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
    sp.add_argument("--alpha", type=float, help="noise.alpha (the same as noise.alpha=X)")
    sp.add_argument("--seed", type=int, help="noise / init seed (default: the config's seed)")
    sp.add_argument("--base", metavar="BASE_DIR", help="model before unlearning (localized mask)")
    sp.add_argument("--force", action="store_true", help="redo even if cached")
