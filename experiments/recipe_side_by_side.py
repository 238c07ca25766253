"""UNDO distillation recipes side by side against one teacher (issue 24 item 2, "Push it").

    python experiments/recipe_side_by_side.py --run NAME=RUN_DIR [--run NAME=RUN_DIR ...]
        [--arm NAME=ARM ...] [--compare A:B ...] [--conditions NAME=TEXT ...] [--seeds S ...]
        [--out experiments/results/recipe_side_by_side.json]

Each RUN_DIR is a finished `undo run` of the embedded default study at one α
(`study.alphas=[A] study.unlearn_distill=false study.oracles=false`) that shares the
base, the gold standard, the unlearned teacher, its teacher cache and the references'
attacks with the others (the same stage keys) and differs from the first run (the
baseline) by one change of recipe. What each run changed is read from its config.yaml
(every setting that differs from the baseline's but where and how fast it ran, by
undo.study.run_folder.config_differences), not from its name. A run that holds several arms
(several α, or Unlearn-and-Distill beside them) gives one row per `--arm NAME=ARM` (the
report's arm label, e.g. 'UNDO α=0.9'), each with its own --run name.

Per run the numbers are norms_side_by_side.py's (`treatment`: robustness at the largest
attack budget of each attack with its 95% interval, steps to recover per seed, total
FLOPs of the gold standard's with its interval, whether every student recovered), each
run is compared with the baseline by the report's own rule (`side_by_side`:
undo.report.errorbars.compare, a difference only when intervals separate), and each is
checked against the issue's floor (UNDO arms only; a random-init row has `floor: null`): mean robustness >= 0.95 under every attack and total
FLOPs (unlearning included) <= 50% of the gold standard's, every student recovered.

`--unfinished NAME=STAGE_DIR` records a candidate's student stopped before it finished
(a candidate that cannot meet the floor, whose run would outlast the session): its
retain_val accuracy every 100 steps, the stop rule's target (the teacher's retain_val
accuracy − the rule's margin, read from a baseline student's stage summary) and its
compute so far as a fraction of the gold standard's, teacher forwards and unlearning
included as in the baseline (the baseline's measured teacher-forward share of a step).

`--conditions NAME=TEXT` records, per run, wall time and what else ran on the machine
(measured outside: the study's own wall time is in its summary, the load beside it is not).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

# The sibling script (this folder is on sys.path when a script here runs): one reading of
# a run folder for both side-by-side benchmarks.
from norms_side_by_side import side_by_side, treatment
from undo.artifacts import environment, read_json, write_json
from undo.config import RESULT_NEUTRAL_KEYS
from undo.configlib import read_yaml
from undo.report.views import fmt_ci
from undo.study.run_folder import config_differences, loaded_config

HERE = Path(__file__).resolve().parent
FLOOR = {"robustness": 0.95, "total_fraction_of_gold_flops": 0.50}


def named(pairs: list[str], what: str) -> dict[str, str]:
    """`NAME=VALUE` arguments as a dict, in order; one clear error for a malformed one."""
    out: dict[str, str] = {}
    for p in pairs:
        name, sep, value = p.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"{p!r}: expected NAME={what}")
        if name in out:
            raise SystemExit(f"{name!r} given twice")
        out[name] = value
    return out


def floor(t: dict[str, Any]) -> dict[str, Any]:
    rob = {att: (r["robustness"] or {}).get("point") for att, r in t["attacks"].items()}
    flops = t["compute"]["total_fraction_of_gold_flops"]["point"]
    return {
        "robustness_by_attack": rob,
        "total_fraction_of_gold_flops": flops,
        "met": (all(v is not None and v >= FLOOR["robustness"] for v in rob.values())
                and flops <= FLOOR["total_fraction_of_gold_flops"] and t["all_recovered"]),
    }


def unfinished(stage: Path, baseline: dict[str, Any]) -> dict[str, Any]:
    """An unfinished student's progress and compute so far, priced like the baseline's."""
    summary = read_json(Path(baseline["run"]) / "summary.json")
    by_kind = {m["kind"]: m for m in summary["models"]}
    first = next(m for m in summary["models"] if m["name"] in baseline["recovered"])
    ref = read_json(Path(first["stage_dir"]) / "summary.json")
    rule = ref["stop"]
    teacher = ref["teacher_metrics"]["retain_val/acc"]
    evals = [r for r in map(json.loads, (stage / "metrics.jsonl").read_text().splitlines())
             if "eval" in r]
    if not evals:
        raise SystemExit(f"--unfinished {stage}: no evaluation in its metrics.jsonl yet")
    last = evals[-1]
    total = (last["flops"] * ref["flops_incl_teacher"] / ref["flops"]
             + by_kind["unlearn_only"]["compute"]["flops"])
    return {
        "stage": str(stage),
        "stop_rule": rule, "retain_val_target": teacher - rule["within"],
        "retain_val_acc_every_100": {r["step"]: r["eval"]["retain_val/acc"]
                                     for r in evals if r["step"] % 100 == 0},
        "last_step": last["step"], "retain_val_acc_last": last["eval"]["retain_val/acc"],
        "recovered_by_last_step": any(teacher - r["eval"]["retain_val/acc"] <= rule["within"]
                                      for r in evals),
        "total_fraction_of_gold_flops_so_far": total / by_kind["gold"]["compute"]["flops"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                    help="a recipe and its finished run folder (repeat; the first is the "
                         "baseline the others are compared with)")
    ap.add_argument("--unfinished", action="append", default=[], metavar="NAME=STAGE_DIR",
                    help="a candidate's student stopped before it finished (see above)")
    ap.add_argument("--arm", action="append", default=[], metavar="NAME=ARM",
                    help="the arm to read from run NAME when it holds several, as the "
                         "report names it ('UNDO α=0.9', 'Unlearn-and-Distill')")
    ap.add_argument("--compare", action="append", default=[], metavar="A:B",
                    help="compare row A with row B (repeat; default: the first row with "
                         "each other one)")
    ap.add_argument("--conditions", action="append", default=[], metavar="NAME=TEXT",
                    help="wall time and what else ran, per run, measured outside")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="only these student seeds, from the finished folders "
                         "(norms_side_by_side.py)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "recipe_side_by_side.json")
    a = ap.parse_args()
    need = "config.yaml" if a.seeds else "summary.json"
    runs = {}
    for name, path in named(a.run, "RUN_DIR").items():
        if not (Path(path) / need).exists():
            raise SystemExit(f"--run {name}={path}: not a finished study run (no {need})")
        runs[name] = Path(path).resolve()
    conditions = named(a.conditions, "TEXT")
    names = [*runs, *named(a.unfinished, "STAGE_DIR")]
    if unknown := sorted(set(conditions) - set(names)):
        raise SystemExit(f"--conditions for {unknown}: no such --run or --unfinished "
                         f"({names})")
    pairs = [tuple(p.split(":", 1)) for p in a.compare]
    if bad := [p for p, q in zip(a.compare, pairs, strict=True) if len(q) != 2 or not set(q) <= set(runs)]:
        raise SystemExit(f"--compare {bad}: expected A:B, two --run names ({list(runs)})")
    arms = named(a.arm, "ARM")
    if unknown := sorted(set(arms) - set(runs)):
        raise SystemExit(f"--arm for {unknown}: no such --run ({list(runs)})")
    t = {name: treatment(run, a.seeds, arms.get(name)) for name, run in runs.items()}
    configs = {name: loaded_config(read_yaml(run / "config.yaml")) for name, run in runs.items()}
    first = next(iter(runs))
    for name, x in t.items():
        # Which arm a row reads is chosen above; the run's name and folder tell runs
        # apart without being a change of recipe.
        x["changed_from_baseline"] = config_differences(
            configs[first], configs[name],
            ignore=RESULT_NEUTRAL_KEYS | {"study.alphas"})
        # The floor asks for an UNDO arm; a random-init row is measured beside it, not
        # judged by it.
        x["floor"] = floor(x) if x["arm"].startswith("UNDO") else None
        x["conditions"] = conditions.get(name)
    stopped = {name: unfinished(Path(d).resolve(), t[first])
                for name, d in named(a.unfinished, "STAGE_DIR").items()}
    for name, u in stopped.items():
        u["conditions"] = conditions.get(name)
    result = {"baseline": first, "floor": FLOOR, "recipes": t, "unfinished": stopped,
              "comparison": side_by_side(t, pairs or None),
              "student_seeds": a.seeds or "all of each study's",
              "load_average_at_write": os.getloadavg(), "environment": environment()}
    write_json(a.out, result)
    for name, x in t.items():
        print(f"{name}: {x['arm']}  changed {x['changed_from_baseline']}")
        for att, r in x["attacks"].items():
            print(f"  {att:12s} R@{x['budget']} {fmt_ci(r['robustness'], 3)}")
        c = x["compute"]["total_fraction_of_gold_flops"]
        print(f"  steps {list(x['compute']['distill_steps'].values())}  recovered "
              f"{x['all_recovered']}  total FLOPs/gold {fmt_ci(c, 3)}  "
              f"floor met {(x['floor'] or {}).get('met', '-')}")
    for name, u in stopped.items():
        print(f"{name}: unfinished at step {u['last_step']}, retain_val acc "
              f"{u['retain_val_acc_last']:.3f} (target {u['retain_val_target']:.3f}), "
              f"{u['total_fraction_of_gold_flops_so_far']:.3f} of gold's FLOPs so far")
    for pair, cmp in result["comparison"].items():
        print(pair, cmp)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
