"""The default study's floors, measured by the study itself.

    python experiments/study.py --from-scratch [--out experiments/results/study.json]
    python experiments/study.py [RUN_DIR] [--rerun] [--out ...] [--wall-s S --conditions TEXT]

--from-scratch runs the default study (`undo run`, the README's first command) into a
fresh folder (experiments/results/study-run, ignored by git), times it end to end (process
start to exit) and then re-runs it cached. Otherwise it reads an existing RUN_DIR
(default runs/arithmetic-tiny). Either way it copies summary.json next to the JSON (study_summary.json) and
checks issue 14's floors with the study's own numbers (every seed):
  - every UNDO and Unlearn-and-Distill student recovered (stop rule met in budget);
  - robustness rises with alpha in every seed (recovered students only);
  - the largest alpha and Unlearn-and-Distill reach mean robustness >= 0.9 at the largest
    budget at <= 50% of the gold standard's compute (steps and FLOPs incl. the teacher);
  - fragility: unlearn-only worst-case forget accuracy after the first attack budget
    (40 steps) is >= 3x the gold standard's.
--compare SUMMARY checks that another run's summary.json (e.g. a second --from-scratch
run into --scratch-dir) is equal apart from timing fields.
With --rerun it also runs `undo run` again on the same config (everything cached), times
it and checks that summary.json is unchanged apart from timing fields. Every figure is
read from the files; nothing here is hard-coded except the floors themselves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from undo.artifacts import environment, read_json, write_json
from undo.report import views

# Fields that differ between two runs of the same config: timings and where it ran.
TIMING = {"wall_time_s", "train_time_s", "time", "environment", "tok_per_s", "stage_dir",
          "relearn_json", "torch_threads", "build_time_s", "out_dir"}


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def by_kind(summary: dict, kind: str) -> list[dict]:
    return [m for m in summary["models"] if m["kind"] == kind]


def _mean_sd(xs: list) -> dict:
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    mu, sd = views.mean_std(xs)
    return {"mean": mu, "sd": sd, "min": min(xs), "max": max(xs), "n": len(xs)}


def _arm(ms: list[dict], k: int, top: int) -> dict:
    """One distilled arm over its seeds: recovery, robustness and compute, per seed too."""
    return {
        "recovered": f"{sum(m.get('recovered') is True for m in ms)}/{len(ms)}",
        "all_recovered": all(m.get("recovered") is True for m in ms),
        "robustness": _mean_sd([views.robustness(m, top) for m in ms]),
        "robustness_first_budget": _mean_sd([views.robustness(m, k) for m in ms]),
        "steps_fraction": _mean_sd([m["compute"]["fraction_of_gold_steps"] for m in ms]),
        "flops_fraction": _mean_sd([m["compute"]["fraction_of_gold_flops"] for m in ms]),
        "retain_acc": _mean_sd([m["metrics"]["retain/acc"] for m in ms]),
        "per_seed": {str(m["seed"]): {
            "recovered": m.get("recovered"), "robustness": views.robustness(m, top),
            "steps": m["compute"]["steps"],
            "steps_fraction": m["compute"]["fraction_of_gold_steps"],
            "flops_fraction": m["compute"]["fraction_of_gold_flops"],
            "retain_acc": m["metrics"]["retain/acc"]} for m in ms}}


def findings(summary: dict) -> dict:
    """Issue 14's floors, each with the numbers it is judged on."""
    k = views.smallest_attack_budget(summary)
    top = views.largest_budget(summary)
    gold, uo = by_kind(summary, "gold")[0], by_kind(summary, "unlearn_only")[0]
    out: dict = {"first_budget": k, "largest_budget": top}
    g_k, u_k = views.worst_case(gold, k), views.worst_case(uo, k)
    # Gold and unlearn-only are shared by the seeds (one model each, one attack).
    out["fragility"] = {"unlearn_only": u_k, "gold": g_k,
                        "ratio": u_k / g_k if g_k else None, "floor": 3.0,
                        "holds": bool(g_k and u_k / g_k >= 3.0) or (not g_k and u_k > 0)}
    undo = by_kind(summary, "undo")
    alphas = sorted({m["alpha"] for m in undo})
    seeds = sorted({m["seed"] for m in undo})
    arms = {f"undo a{a:g}": _arm([m for m in undo if m["alpha"] == a], k, top) for a in alphas}
    ud = by_kind(summary, "unlearn_distill")
    if ud:
        arms["unlearn_distill"] = _arm(ud, k, top)
    out["arms"] = arms
    out["every_student_recovered"] = all(a["all_recovered"] for a in arms.values())
    rises = {}
    for seed in seeds:
        ms = {m["alpha"]: m for m in undo if m["seed"] == seed}
        r = [views.robustness(ms[a], top) if ms[a].get("recovered") else None for a in alphas]
        rises[str(seed)] = {"robustness": r, "rises": all(x is not None for x in r) and all(
            b > a for a, b in zip(r, r[1:], strict=False))}
    out["robustness_rises_with_alpha"] = {
        "per_seed": rises, "holds": all(v["rises"] for v in rises.values())}
    top_arms = [arms[f"undo a{alphas[-1]:g}"]] + ([arms["unlearn_distill"]] if ud else [])
    out["robust_and_cheap"] = {
        "floor_robustness": 0.9, "floor_compute": 0.5,
        "holds": all(a["all_recovered"] and (a["robustness"]["mean"] or 0) >= 0.9
                     and (a["steps_fraction"]["mean"] or 9) <= 0.5
                     and (a["flops_fraction"]["mean"] or 9) <= 0.5 for a in top_arms)}
    ob, orand = by_kind(summary, "oracle_base"), by_kind(summary, "oracle_random")
    if ob and orand:
        b_k, r_k = views.worst_case(ob[0], k), views.worst_case(orand[0], k)
        out["oracles"] = {"base_first_budget": b_k, "random_first_budget": r_k,
                          "recovered": [ob[0].get("recovered"), orand[0].get("recovered")]}
    # Issue 21: every attack's worst case with the retain metric after it and the
    # utility flag, and the 95% intervals the verdict is built on.
    out["attacks"] = {m["name"]: {name: {k: {x: w.get(x) for x in ("value", "lr", "retain",
                                                                  "utility_ok")}
                                         for k, w in (a or {}).get("worst_case", {}).items()}
                                  for name, a in (m.get("attacks") or {}).items()}
                      for m in summary["models"]}
    out["intervals"] = summary.get("intervals")
    out["models"] = {m["name"]: {
        "retain_acc": m["metrics"]["retain/acc"], "forget_acc": m["metrics"]["forget/acc"],
        "recovered": m.get("recovered"),
        "worst_case": {b: (w or {}).get("value") for b, w in
                       ((m.get("attack") or {}).get("worst_case") or {}).items()},
        "robustness": m.get("robustness"), "compute": m.get("compute"),
        "wall_time_s": m.get("wall_time_s")} for m in summary["models"]}
    return out


def started_in(run: Path, summary: dict) -> Path:
    """The directory `undo run` ran in to make `run`: where its out_dir (as the run's
    summary records it) leads to it."""
    out_dir = Path(summary["config"]["out_dir"])
    return run.resolve().parents[0 if out_dir.is_absolute() else len(out_dir.parts)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/arithmetic-tiny")
    ap.add_argument("--rerun", action="store_true", help="time a fully cached re-run")
    ap.add_argument("--out", default="experiments/results/study.json")
    ap.add_argument("--from-scratch", action="store_true",
                    help="run the default study into a fresh folder first (~14 min)")
    ap.add_argument("--scratch-dir", default="experiments/results/study-run",
                    help="where --from-scratch runs (removed first)")
    ap.add_argument("--compare", help="another run's summary.json: equal but for timings?")
    ap.add_argument("--wall-s", type=float,
                    help="the study's end-to-end wall time, measured outside (process start "
                         "to exit of a background `undo run`)")
    ap.add_argument("--conditions", help="what else ran on the machine meanwhile")
    args = ap.parse_args()
    run = Path(args.run_dir)
    scratch_wall = None
    if args.from_scratch:
        out_dir = Path(args.scratch_dir)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "undo.cli", "run", f"out_dir={out_dir}"],
                       check=True, stdout=subprocess.DEVNULL)
        scratch_wall = time.perf_counter() - t0
        run = out_dir / "arithmetic-tiny"
        args.rerun = True
    summary = read_json(run / "summary.json")
    result = {"run_dir": str(run), "from_scratch": args.from_scratch,
              "study_wall_time_s": scratch_wall if scratch_wall is not None
              else args.wall_s if args.wall_s is not None else summary.get("wall_time_s"),
              # issue 24's floors: 15 min from scratch (issue 21's: 20), 10 s cached
              "study_wall_time_floor_s": 15 * 60, "findings": findings(summary),
              "conditions": args.conditions,
              "environment": environment("cpu")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "summary.json", out.with_name(out.stem + "_summary.json"))
    if args.rerun:
        t0 = time.perf_counter()
        # From where it ran: the folder's config.yaml holds its out_dir, often the
        # relative `runs`, which from another directory would start a new study (and an
        # out_dir override would be recorded in the summary).
        subprocess.run([sys.executable, "-m", "undo.cli", "run", str(run / "config.yaml")],
                       check=True, stdout=subprocess.DEVNULL, cwd=started_in(run, summary))
        wall = time.perf_counter() - t0
        again = read_json(run / "summary.json")
        result["cached_rerun"] = {"wall_time_s": wall, "floor_s": 10,
                                  "summary_unchanged": strip(again) == strip(summary)}
    if args.compare:
        other = read_json(Path(args.compare))
        diff = [m["name"] for m, o in zip(summary["models"], other["models"], strict=False)
                if strip(m) != strip(o)]
        result["second_run"] = {"summary": args.compare,
                                "same": strip(other) == strip(summary),
                                "models_that_differ": diff}
    write_json(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1,
                     default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
