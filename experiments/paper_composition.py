"""The arithmetic study with the authors' composition beside the default study (issue 34).

    undo run configs/arithmetic/paper.yaml out_dir=OUT          # from a fresh clone
    python experiments/paper_composition.py OUT/arithmetic-paper [--meta META.txt]
        [--pooled OUT/arithmetic-paper-pooled.json] [--beside NAME=RUN_DIR[,META] ...]
        -> experiments/results/paper_composition.json

Reads the paper-composition run's summary.json (and, with --pooled, its pooled figure over
run seeds from `undo pool`), the committed default study (study_faithful_summary.json,
run seed 0) and its pooled figure over run seeds 0-2 (run_seeds.json), and writes them
side by side: every arm's worst case and robustness with intervals under both attacks at
every budget, compute as fractions of the gold standard's FLOPs, every student's
recovery, and the conditions the run ran under (CPU model, bfloat16 flags, load before and
after, wall time, commit, command: `--meta` is the key=value file the run's wrapper wrote).
docs/claims.md reads claims (a)-(e) off this file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
OUT = RESULTS / "paper_composition.json"


def cpu() -> dict[str, Any]:
    """CPU model and the bfloat16 instructions `lscpu` reports."""
    text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                  if line.startswith("Model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("Flags")), [])
    return {"model": model, "cores": os.cpu_count(),
            "bf16_flags": sorted(f for f in flags if "bf16" in f)}


def read_meta(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    if "start" in out and "end" in out:
        out["wall_s"] = str(int(out["end"].split()[-1]) - int(out["start"].split()[-1]))
    return out


def students(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Every model but the base: kind, alpha, seed, recovery, compute, final metrics,
    worst case per attack and budget."""
    rows = []
    for m in summary["models"]:
        c = m.get("compute") or {}
        rows.append({
            "name": m["name"], "kind": m["kind"], "alpha": m.get("alpha"), "seed": m.get("seed"),
            "recovered": m.get("recovered"),
            "steps": c.get("steps"),
            "fraction_of_gold_flops": c.get("fraction_of_gold_flops"),
            "total_fraction_of_gold_flops": c.get("total_fraction_of_gold_flops"),
            "retain_acc": m["metrics"].get("retain/acc"),
            "forget_acc": m["metrics"].get("forget/acc"),
            "worst_case": {a: {b: w["value"] for b, w in v.get("worst_case", {}).items()}
                           for a, v in (m.get("attacks") or {}).items()},
            "retain_after_attack": {a: {b: w.get("retain") for b, w in
                                        v.get("worst_case", {}).items()}
                                    for a, v in (m.get("attacks") or {}).items()},
            "robustness": m.get("robustness_by_attack"),
        })
    return rows


def study(summary: dict[str, Any]) -> dict[str, Any]:
    return {"name": summary["study"] if isinstance(summary["study"], str)
            else summary["config"]["name"],
            "wall_time_s": summary.get("wall_time_s"),
            "gold_standard": summary.get("gold_standard"),
            "budgets": summary.get("budgets"),
            "intervals": summary["intervals"],
            "models": students(summary)}


def fmt(v: dict[str, Any] | None) -> str:
    if not v or v.get("point") is None:
        return "n/a"
    return f"{v['point']:.2f} [{v['lo']:.2f}, {v['hi']:.2f}]"


def claims_text(name: str, intervals: dict[str, Any]) -> str:
    """The figures docs/claims.md quotes: worst cases and robustness per attack and
    budget, total compute as fractions of the gold standard's FLOPs."""
    lines = [f"== {name}"]
    for attack, by_budget in intervals["attacks"].items():
        for budget, x in by_budget.items():
            wc = ", ".join(f"{k} {fmt(v)}" for k, v in x.get("worst_case", {}).items())
            rb = ", ".join(f"{k} {fmt(v)}" for k, v in x.get("robustness", {}).items())
            lines += [f"{attack} @{budget} worst case: {wc}", f"{attack} @{budget} robustness: {rb}"]
    comp = intervals.get("compute", {})
    lines.append("total FLOPs / gold: " + ", ".join(
        f"{k} {fmt(v.get('total_fraction_of_gold_flops'))}" for k, v in comp.items()))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="the paper-composition run folder")
    ap.add_argument("--meta", type=Path, default=None)
    ap.add_argument("--pooled", type=Path, default=None)
    # Extra runs beside it that reuse its base, gold and teacher (hard-linked stages):
    # NAME=RUN_DIR[,META] each, e.g. the fixed-budget Unlearn-and-Distill and oracles.
    ap.add_argument("--beside", action="append", default=[])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--note", default="", help="what else ran beside it")
    args = ap.parse_args()
    paper = json.loads((args.run / "summary.json").read_text())
    default = json.loads((RESULTS / "study_faithful_summary.json").read_text())
    default_pooled = json.loads((RESULTS / "run_seeds.json").read_text())
    result: dict[str, Any] = {
        "conditions": {"cpu": cpu(), **read_meta(args.meta), "note": args.note,
                       "load_average_at_write": list(os.getloadavg())},
        "paper_composition": study(paper),
        "paper_composition_config": paper["config"],
        "default": study(default),
        "default_pooled_run_seeds_0_2": {k: default_pooled[k]
                                         for k in ("attacks", "compute", "run_seeds")},
    }
    if args.pooled is not None:
        result["paper_composition_pooled"] = json.loads(args.pooled.read_text())
    for spec in args.beside:
        name, rest = spec.split("=", 1)
        run, _, meta = rest.partition(",")
        other = json.loads((Path(run) / "summary.json").read_text())
        result[name] = {"conditions": read_meta(Path(meta) if meta else None),
                        **study(other), "config": other["config"]}
        print(claims_text(name, other["intervals"]))
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(claims_text("paper composition", paper["intervals"]))
    print(claims_text("default (run seed 0)", default["intervals"]))
    for m in result["paper_composition"]["models"]:
        print(m["name"], "recovered" if m["recovered"] else "NOT recovered", m["steps"],
              None if m["fraction_of_gold_flops"] is None else round(m["fraction_of_gold_flops"], 3))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
