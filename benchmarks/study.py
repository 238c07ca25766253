"""The default study's floors, measured by the study itself.

    python benchmarks/study.py --from-scratch [--out benchmarks/results/study.json]
    python benchmarks/study.py [RUN_DIR] [--rerun] [--out ...]

--from-scratch runs the default study (`undo run`, the README's first command) into a
fresh folder (benchmarks/results/study-run, ignored by git), times it end to end (process
start to exit) and then re-runs it cached. Otherwise it reads an existing RUN_DIR
(default runs/arithmetic-tiny). Either way it copies summary.json next to the JSON (study_summary.json) and
checks the paper's qualitative findings with the study's own numbers:
  - fragility: unlearn-only worst-case forget accuracy after the first attack budget
    (40 steps) is >= 3x the gold standard's;
  - Unlearn-and-Distill and UNDO at the largest alpha have robustness >= 0.7 at the
    largest budget;
  - robustness and compute (fraction of gold steps) rise with alpha;
  - oracle matching into the base model relearns faster than into a random init
    (higher worst-case forget accuracy after the first attack budget).
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

TIMING = {"wall_time_s", "train_time_s", "time", "environment", "tok_per_s", "stage_dir",
          "relearn_json", "torch_threads", "build_time_s"}


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in TIMING}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def by_kind(summary: dict, kind: str) -> list[dict]:
    return [m for m in summary["models"] if m["kind"] == kind]


def findings(summary: dict) -> dict:
    k = views.smallest_attack_budget(summary)
    top = views.largest_budget(summary)
    gold, uo = by_kind(summary, "gold")[0], by_kind(summary, "unlearn_only")[0]
    out: dict = {"first_budget": k, "largest_budget": top}
    g_k, u_k = views.worst_case(gold, k), views.worst_case(uo, k)
    out["fragility"] = {"unlearn_only": u_k, "gold": g_k,
                        "ratio": u_k / g_k if g_k else None, "floor": 3.0,
                        "holds": bool(g_k and u_k / g_k >= 3.0) or (not g_k and u_k > 0)}
    undo = sorted(by_kind(summary, "undo"), key=lambda m: (m["alpha"], m["seed"] or 0))
    alphas = sorted({m["alpha"] for m in undo})

    def mean(xs: list) -> float | None:
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    per_alpha = {}
    for a in alphas:
        ms = [m for m in undo if m["alpha"] == a]
        per_alpha[str(a)] = {
            "robustness": mean([views.robustness(m, top) for m in ms]),
            "robustness_first_budget": mean([views.robustness(m, k) for m in ms]),
            "compute_fraction_of_gold_steps": mean(
                [m["compute"]["fraction_of_gold_steps"] for m in ms]),
            "steps": mean([m["compute"]["steps"] for m in ms]),
            "retain_acc": mean([m["metrics"]["retain/acc"] for m in ms]),
            "forget_acc": mean([m["metrics"]["forget/acc"] for m in ms])}
    out["undo_by_alpha"] = per_alpha
    ud = by_kind(summary, "unlearn_distill")
    rob_ud = mean([views.robustness(m, top) for m in ud])
    rob_top = per_alpha[str(alphas[-1])]["robustness"] if alphas else None
    out["robust_at_largest_budget"] = {
        "unlearn_distill": rob_ud, "largest_alpha": rob_top, "floor": 0.7,
        "holds": rob_ud is not None and rob_top is not None and min(rob_ud, rob_top) >= 0.7}
    robs = [per_alpha[str(a)]["robustness"] for a in alphas]
    comps = [per_alpha[str(a)]["compute_fraction_of_gold_steps"] for a in alphas]
    out["monotonic_in_alpha"] = {
        "robustness": robs, "compute": comps,
        "robustness_rises": all(a is not None and b is not None and b >= a
                                for a, b in zip(robs, robs[1:], strict=False)),
        "compute_rises": all(a is not None and b is not None and b >= a
                             for a, b in zip(comps, comps[1:], strict=False))}
    ob, orand = by_kind(summary, "oracle_base"), by_kind(summary, "oracle_random")
    if ob and orand:
        b_k, r_k = views.worst_case(ob[0], k), views.worst_case(orand[0], k)
        b_t, r_t = views.worst_case(ob[0], top), views.worst_case(orand[0], top)
        out["oracles"] = {"base_first_budget": b_k, "random_first_budget": r_k,
                          "base_largest_budget": b_t, "random_largest_budget": r_t,
                          "holds": b_k is not None and r_k is not None and b_k > r_k}
    out["models"] = {m["name"]: {
        "retain_acc": m["metrics"]["retain/acc"], "forget_acc": m["metrics"]["forget/acc"],
        "worst_case": {b: (w or {}).get("value") for b, w in
                       ((m.get("attack") or {}).get("worst_case") or {}).items()},
        "robustness": m.get("robustness"), "compute": m.get("compute"),
        "wall_time_s": m.get("wall_time_s")} for m in summary["models"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default="runs/arithmetic-tiny")
    ap.add_argument("--rerun", action="store_true", help="time a fully cached re-run")
    ap.add_argument("--out", default="benchmarks/results/study.json")
    ap.add_argument("--from-scratch", action="store_true",
                    help="run the default study into a fresh folder first (~35 min)")
    args = ap.parse_args()
    run = Path(args.run_dir)
    scratch_wall = None
    if args.from_scratch:
        out_dir = Path("benchmarks/results/study-run")
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
              else summary.get("wall_time_s"),
              "study_wall_time_floor_s": 20 * 60, "findings": findings(summary),
              "environment": environment("cpu")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "summary.json", out.with_name(out.stem + "_summary.json"))
    if args.rerun:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "undo.cli", "run", str(run / "config.yaml")],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        again = read_json(run / "summary.json")
        result["cached_rerun"] = {"wall_time_s": wall, "floor_s": 30,
                                  "summary_unchanged": strip(again) == strip(summary)}
    write_json(Path(args.out), result)
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1,
                     default=str)[:4000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
