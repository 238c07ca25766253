"""Robustness and compute of UNDO students under two norm-gain treatments, side by side
(issue 21: "measured side by side on the same models").

    python experiments/norms_side_by_side.py [--run toward_init=runs/norms-toward_init]
        [--run keep=runs/norms-keep] [--out experiments/results/norms_side_by_side.json]
        [--conditions TEXT] [--seeds 0 1]

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
  undo.analysis.intervals);
- the arm's and the references' worst-case forget metric, same interval;
- each student's retain metric after its worst case (and before the attack) and whether
  that attack kept the utility floor (`models[].attacks[attack].worst_case`);
- whether every student recovered the teacher's retain ability (`models[].recovered`);
- compute: distillation steps per seed and the four fractions of the gold standard's
  pretraining with intervals over seeds (`intervals.compute[arm]`).

`--seeds S ...` builds each treatment's summary over those student seeds only, with the
study's own summary code (undo.study.summary.build_summary) on the run's finished stage and
attack folders, for a run whose `undo run` has not finished every seed (its summary.json is
then not needed). The references keep every attack seed they were attacked with (each
student's attack seeds among them), as in the full study.

Then, per attack and for total FLOPs, the treatments are compared with the report's own
rule (undo.report.errorbars.compare): a difference only when the intervals separate,
"within noise" otherwise.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from undo.analysis.arms import ModelKind, label_of
from undo.analysis.robustness import budget_key
from undo.artifacts import environment, read_json, write_json
from undo.config import load_config
from undo.report.errorbars import compare
from undo.report.views import largest_budget
from undo.study.specs import Model
from undo.study.summary import build_summary

COMPUTE_KEYS = ("fraction_of_gold_steps", "fraction_of_gold_flops",
                "total_fraction_of_gold_steps", "total_fraction_of_gold_flops")


def students(summary: dict, arm: str) -> list[dict]:
    return [m for m in summary["models"] if label_of(m) == arm]


def the_arm(summary: dict, arm: str | None = None) -> str:
    """The run's one distilled arm (the side-by-side runs study a single α), or `arm`
    picked from a run that holds several."""
    arms = sorted({a for m in summary["models"] if (a := label_of(m))})
    if arm is not None:
        if arm not in arms:
            raise SystemExit(f"no arm {arm!r} in this run; its arms: {arms}")
        return arm
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


def _attack_dirs(run: Path, stage: Path) -> dict[str, Path]:
    """A model's attack folders by attack: the forget-only one trains on no retain data."""
    out = {}
    for d in sorted((run / "attacks").glob(f"{stage.name}-*")):
        if (d / "relearn.json").exists():
            rf = read_json(d / "relearn.json")["attack"].get("retain_fraction")
            out["forget_only" if rf == 0 else "paper"] = d
    return out


def summary_over(run: Path, seeds: list[int]) -> dict[str, Any]:
    """The run's summary over students of `seeds` only, from its finished folders."""
    cfg = load_config(run / "config.yaml", [f"out_dir={run.parent}", "progress=false"])
    stages = run / "stages"

    def model(name: str, kind: str, pattern: str, **kw: Any) -> Model:
        found = [d for d in stages.glob(pattern) if (d / "summary.json").exists()]
        if len(found) != 1:
            raise SystemExit(f"{run}: expected one finished {pattern}, found {found}")
        m = Model(name, ModelKind(kind), found[0], **kw)
        m.attack_dirs = _attack_dirs(run, found[0])
        if set(m.attack_dirs) != set(cfg.study.attacks):
            raise SystemExit(f"{found[0].name}: attacks {sorted(m.attack_dirs)} finished, "
                             f"the study runs {cfg.study.attacks}")
        m.attack_dir = m.attack_dirs[cfg.study.attacks[0]]
        return m

    (alpha,) = cfg.study.alphas
    models = [model("gold", "gold", "pretrain-gold-*"),
              model("unlearn-only", "unlearn_only", f"unlearn-{cfg.unlearn.method}-*"),
              *(model(f"undo-a{alpha:g}-s{s}", "undo", f"distill-noised-a{alpha:g}-s{s}-*",
                      alpha=alpha, seed=s) for s in seeds)]
    return build_summary(cfg, models, wall_time_s=0.0)


def treatment(run: Path, seeds: list[int] | None, arm: str | None = None) -> dict[str, Any]:
    summary = read_json(run / "summary.json") if seeds is None else summary_over(run, seeds)
    if not (summary.get("intervals") or {}).get("attacks"):
        raise SystemExit(f"{run}/summary.json has no intervals (a study before issue 21)")
    arm = the_arm(summary, arm)
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


def _compare(a: dict | None, b: dict | None) -> str:
    """The report's rule where both figures have an interval; 'not measured' where either
    has none (an arm whose students never recovered has no robustness to compare)."""
    if not a or not b or None in (a.get("lo"), a.get("hi"), b.get("lo"), b.get("hi")):
        return "not measured"
    return compare(a, b)


def side_by_side(t: dict[str, dict],
                 pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Each pair (default: the first treatment against each other one), the first's
    figure against the second's: 'higher' / 'lower' / 'within noise', or 'not measured'."""
    names = list(t)
    out = {}
    for first, other in pairs or [(names[0], n) for n in names[1:]]:
        a, b = t[first], t[other]
        same_refs = a["reference_stages"] == b["reference_stages"]
        rob = {att: _compare(a["attacks"][att]["robustness"], b["attacks"][att]["robustness"])
               for att in a["attacks"] if att in b["attacks"]}
        flops = _compare(a["compute"]["total_fraction_of_gold_flops"],
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
                    default=Path("experiments/results/norms_side_by_side.json"))
    ap.add_argument("--conditions", help="wall times and what else ran, measured outside")
    ap.add_argument("--seeds", type=int, nargs="+",
                    help="only these student seeds, from the finished folders (see above)")
    a = ap.parse_args()
    pairs = a.run or ["toward_init=runs/norms-toward_init", "keep=runs/norms-keep"]
    runs = {}
    for p in pairs:
        name, sep, path = p.partition("=")
        need = "config.yaml" if a.seeds else "summary.json"
        if not sep or not (Path(path) / need).exists():
            raise SystemExit(f"--run {p!r}: expected NAME=RUN_DIR of a study run "
                             f"(RUN_DIR/{need})")
        runs[name] = Path(path).resolve()
    t = {name: treatment(run, a.seeds) for name, run in runs.items()}
    result = {"treatments": t, "comparison": side_by_side(t),
              "student_seeds": a.seeds or "all of each study's",
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
