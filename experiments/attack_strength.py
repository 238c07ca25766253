"""Attack strength: is the default attack strong enough, and does its grid hold the best LR?

    python experiments/attack_strength.py --base B --gold G --unlearned U [--wide-lrs ...]
        [--out experiments/results/attack_strength.json] [overrides key=value ...]

For the unlearned model (e.g. MaxEnt) and the gold standard:
  1. the default attack (config defaults + overrides), with the attacked weights kept, so
     the worst LR's final model can be scored on the forget items the *base* model
     answers correctly (items the attack never shows): the issue's floor is
     unlearned ≥ 40% of the base model's accuracy there within 100 steps, gold ≤ 10%;
  2. a wide grid (the paper's ten LRs plus 4e-3, 2e-3 and 2e-4) at the same steps, to show
     which LR is strongest at each budget and how far the default grid's worst case is
     from the wide grid's.
Every number comes from `undo.attacks.grid.attack` (cached under a temp run folder).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from undo.artifacts import environment, read_json, write_json
from undo.attacks.grid import attack, model_label
from undo.benchmarks.arithmetic.benchmark import score_items_bucketed
from undo.benchmarks.arithmetic.data import ArithmeticData
from undo.config import load_config
from undo.models import load_model, load_tokenizer

PAPER_LRS = [1e-3, 7e-4, 4e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6]
WIDE_LRS = [4e-3, 2e-3, 1e-3, 7e-4, 4e-4, 2e-4, 1e-4, 7e-5, 5e-5, 1e-5, 7e-6, 4e-6, 1e-6]


def known_mask(model_dir: str, items: list) -> torch.Tensor:
    tok, model = load_tokenizer(model_dir), load_model(model_dir)
    return score_items_bucketed(model, items, tok)[0]


def worst_final_on_known(d: Path, relearn: dict, items: list, known: torch.Tensor) -> dict:
    """Accuracy on base-known items of each seed's final model at the worst final LR."""
    k = str(relearn["budgets"][-1])
    lr = relearn["worst_case"]["forget/acc"][k]["lr"]
    accs = []
    for seed in relearn["seeds"]:
        mdir = d / "runs" / f"lr{lr:g}-seed{seed}" / "model"
        correct = known_mask(str(mdir), items)
        accs.append(correct[known].float().mean().item())
    return {"lr": lr, "budget": int(k), "acc_on_base_known": sum(accs) / len(accs),
            "per_seed": accs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--gold", required=True)
    ap.add_argument("--unlearned", required=True)
    ap.add_argument("--wide-lrs", type=float, nargs="*", default=WIDE_LRS)
    ap.add_argument("--skip-wide", action="store_true")
    ap.add_argument("--out", default="experiments/results/attack_strength.json")
    ap.add_argument("--run-dir", default=None, help="keep attack results here (default: temp)")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. attack.steps=100")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    out_dir = args.run_dir or tmp
    base_over = [f"out_dir={out_dir}", "progress=false", *args.overrides]
    cfg = load_config(None, [*base_over, "attack.save_weights=true"])
    items = ArithmeticData(cfg.data).eval_sets()["forget"]
    known = known_mask(args.base, items)
    result: dict = {"base": {"path": args.base, "forget_acc": known.float().mean().item(),
                             "n_known": int(known.sum()), "n_items": len(items)},
                    "default_grid": {"lrs": cfg.attack.lrs, "steps": cfg.attack.steps,
                                     "batch_size": cfg.attack.batch_size},
                    "overrides": args.overrides, "models": {}}
    t_all = time.time()
    for role, path in (("unlearned", args.unlearned), ("gold", args.gold)):
        t0 = time.time()
        d = attack(cfg, path)
        r = read_json(d / "relearn.json")
        entry = {"path": path, "label": model_label(path),
                 "default_wall_s": r["wall_time_s"], "workers": r["workers"],
                 "start_forget_acc": r["start"]["forget/acc"],
                 "start_retain_acc": r["start"]["retain/acc"],
                 "default_worst_case": r["worst_case"]["forget/acc"],
                 "final_retain_acc_at_worst_lr": None,
                 "on_base_known": worst_final_on_known(d, r, items, known)}
        k = str(r["budgets"][-1])
        wlr = r["worst_case"]["forget/acc"][k]["lr"]
        entry["final_retain_acc_at_worst_lr"] = [x["budgets"][k]["retain/acc"]
                                                 for x in r["runs"] if x["lr"] == wlr]
        entry["ratio_to_base"] = entry["on_base_known"]["acc_on_base_known"]  # base: 1.0
        print(f"{role}: default grid {time.time() - t0:.0f}s, worst-case forget acc "
              f"{ {b: round(w['value'], 3) for b, w in entry['default_worst_case'].items()} }, "
              f"on base-known items {entry['on_base_known']['acc_on_base_known']:.3f}",
              flush=True)
        if not args.skip_wide:
            # "1.00e-03", not "0.001"/"1e-03": YAML 1.1 reads a float without a dot as text
            lrs = ",".join(f"{x:.2e}" for x in args.wide_lrs)
            wcfg = load_config(None, [*base_over, f"attack.lrs=[{lrs}]"])
            wr = read_json(attack(wcfg, path) / "relearn.json")
            entry["wide_worst_case"] = wr["worst_case"]["forget/acc"]
            entry["wide_per_lr_at_budgets"] = {
                repr(x["lr"]): {b: x["budgets"][b]["forget/acc"] for b in x["budgets"]}
                for x in wr["runs"]}
            entry["wide_wall_s"] = wr["wall_time_s"]
            # Budget 0 is left out: before the attack every LR scores the same.
            entry["strongest_lr_in_default_grid"] = {
                b: any(abs(w["lr"] - lr) < 1e-12 for lr in cfg.attack.lrs)
                for b, w in wr["worst_case"]["forget/acc"].items() if b != "0"}
            entry["default_vs_wide_gap"] = {
                b: wr["worst_case"]["forget/acc"][b]["value"] - w["value"]
                for b, w in r["worst_case"]["forget/acc"].items()}
            print(f"  wide grid: worst LR per budget "
                  f"{ {b: w['lr'] for b, w in wr['worst_case']['forget/acc'].items()} }",
                  flush=True)
        result["models"][role] = entry
    result["wall_s"] = time.time() - t_all
    result["loadavg_end"] = os.getloadavg()
    result["env"] = environment()
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
