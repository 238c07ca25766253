"""Robustness and compute of UNDO students under two norm-gain treatments, side by side
(issue 21: "measured side by side on the same models").

    python benchmarks/norms_side_by_side.py [--run toward_init=runs/norms-toward_init]
        [--run keep=runs/norms-keep] [--out benchmarks/results/norms_side_by_side.json]
        [--conditions TEXT]

Each RUN is a finished `undo run` of the embedded default study at one α
(`study.alphas=[0.8] study.unlearn_distill=false study.oracles=false`) that differs from
the other only by `noise.norms`. Both share the base, the gold standard, the unlearned
teacher and the attacks of the two references (same stage keys: the second run reuses the
first's folders), so the students differ only by how the noise treated the norm gains.

Per treatment and per attack of the study, at the largest attack budget, read from each
run's summary.json (nothing is recomputed):

- robustness of the arm with its 95% interval (`intervals.attacks[attack][budget]
  .robustness[arm]`: percentile bootstrap over eval items, attack seeds and model seeds,
  references included, worst LR chosen on one half of the items and reported on the other;
  undo.attacks.intervals);
- the arm's and the references' worst-case forget metric, same interval;
- each student's retain metric after its worst case (and before the attack) and whether
  that attack kept the utility floor (`models[].attacks[attack].worst_case`);
- whether every student recovered the teacher's retain ability (`models[].recovered`);
- compute: distillation steps per seed and the four fractions of the gold standard's
  pretraining with intervals over seeds (`intervals.compute[arm]`).

Then, per attack and for total FLOPs, the treatments are compared with the report's own
rule (undo.report.errorbars.compare): a difference only when the intervals separate,
"within noise" otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from undo.artifacts import environment, read_json, write_json
from undo.attacks.robustness import budget_key
from undo.report.errorbars import compare
from undo.report.views import arm_of, largest_budget

COMPUTE_KEYS = ("fraction_of_gold_steps", "fraction_of_gold_flops",
                "total_fraction_of_gold_steps", "total_fraction_of_gold_flops")


def students(summary: dict, arm: str) -> list[dict]:
    return [m for m in summary["models"] if arm_of(m) == arm]


def the_arm(summary: dict) -> str:
    """The run's one distilled arm (the side-by-side runs study a single α)."""
    arms = sorted({a for m in summary["models"] if (a := arm_of(m))})
    if len(arms) != 1:
        raise SystemExit(f"expected one distilled arm per run, found {arms}")
    return arms[0]


def per_attack(summary: dict, arm: str, attack: str, budget: int) -> dict[str, Any]:
    key = budget_key(budget)
    iv = summary["intervals"]["attacks"][attack][key]
    after = []
    for m in students(summary, arm):
        sec = m["attacks"][attack]
        w = sec["worst_case"][key]
        after.append({"model": m["name"], "worst_forget": w["value"], "lr": w["lr"],
                      "retain_after": w.get("retain"), "retain_before": sec.get("retain_before"),
                      "utility_ok": w.get("utility_ok")})
    retained = [a["retain_after"] for a in after if a["retain_after"] is not None]
    return {
        "robustness": iv["robustness"].get(arm),
        "worst_case": {row: iv["worst_case"][row] for row in ("gold", "unlearn-only", arm)
                       if row in iv["worst_case"]},
        "unlearn_only_over_gold": iv.get("unlearn_only_over_gold"),
        "retain_after_mean": sum(retained) / len(retained) if retained else None,
        "students": after,
    }


def treatment(run: Path) -> dict[str, Any]:
    summary = read_json(run / "summary.json")
    if not (summary.get("intervals") or {}).get("attacks"):
        raise SystemExit(f"{run}/summary.json has no intervals (a study before issue 21)")
    arm = the_arm(summary)
    budget = largest_budget(summary)
    studs = students(summary, arm)
    refs = {m["kind"]: Path(m["stage_dir"]).name for m in summary["models"]
            if m["kind"] in ("base", "gold", "unlearn_only")}
    return {
        "run": str(run),
        "noise": summary["config"]["noise"],
        "arm": arm,
        "seeds": [m["seed"] for m in studs],
        "budget": budget,
        "metric": summary["metric"]["name"],
        "retain_metric": summary["retain_metric"]["name"],
        "reference_stages": refs,
        "all_recovered": all(m.get("recovered") is True for m in studs),
        "recovered": {m["name"]: m.get("recovered") for m in studs},
        "attacks": {a: per_attack(summary, arm, a, budget)
                    for a in summary["intervals"]["attacks"]},
        "compute": {
            "distill_steps": {m["name"]: m["compute"]["steps"] for m in studs},
            "total_steps_incl_unlearn": {m["name"]: m["compute"].get("total_steps")
                                         for m in studs},
            **{k: summary["intervals"]["compute"][arm][k] for k in COMPUTE_KEYS},
        },
        "stage_wall_time_s": {m["name"]: m.get("wall_time_s") for m in studs},
    }


def side_by_side(t: dict[str, dict]) -> dict[str, Any]:
    """First treatment against each other one: 'higher' / 'lower' / 'within noise'."""
    names = list(t)
    first, out = names[0], {}
    for other in names[1:]:
        a, b = t[first], t[other]
        same_refs = a["reference_stages"] == b["reference_stages"]
        rob = {att: compare(a["attacks"][att]["robustness"], b["attacks"][att]["robustness"])
               for att in a["attacks"] if att in b["attacks"]}
        flops = compare(a["compute"]["total_fraction_of_gold_flops"],
                        b["compute"]["total_fraction_of_gold_flops"])
        out[f"{first} vs {other}"] = {
            "same_references": same_refs,
            "robustness": rob,
            "total_flops_fraction": flops,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", metavar="NAME=RUN_DIR",
                    help="a treatment and its finished run folder (repeat; first is the "
                         "one the others are compared with)")
    ap.add_argument("--out", type=Path,
                    default=Path("benchmarks/results/norms_side_by_side.json"))
    ap.add_argument("--conditions", help="wall times and what else ran, measured outside")
    a = ap.parse_args()
    pairs = a.run or ["toward_init=runs/norms-toward_init", "keep=runs/norms-keep"]
    runs = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        if not sep or not (Path(path) / "summary.json").exists():
            raise SystemExit(f"--run {p!r}: expected NAME=RUN_DIR of a finished study "
                             f"(RUN_DIR/summary.json)")
        runs[name] = Path(path).resolve()
    t = {name: treatment(run) for name, run in runs.items()}
    result = {"treatments": t, "comparison": side_by_side(t),
              "conditions": a.conditions, "load_average_at_write": os.getloadavg(),
              "environment": environment()}
    write_json(a.out, result)
    for name, x in t.items():
        for att, r in x["attacks"].items():
            rob = r["robustness"] or {}
            print(f"{name:12s} {att:12s} R@{x['budget']} {rob.get('point')} "
                  f"[{rob.get('lo')}, {rob.get('hi')}]  retain after {r['retain_after_mean']}")
        c = x["compute"]["total_fraction_of_gold_flops"]
        print(f"{name:12s} recovered {x['all_recovered']}  total FLOPs/gold {c}")
    print(result["comparison"])


if __name__ == "__main__":
    main()
