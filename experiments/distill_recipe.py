"""Distillation recipes side by side: which students recover their teacher, and how fast?

    python experiments/distill_recipe.py RUN_DIR [--seeds 0 1 2] [--steps 1200]
        [--workers 2] [--out experiments/results/distill_recipe.json]

RUN_DIR is a finished arithmetic study folder (config.yaml, summary.json, the unlearned
teacher and the gold-standard stage). Every candidate distils the study's teacher with
the study's config plus the candidate's overrides, for `--steps` steps at most (stop
rule: the benchmark's, 95% of the teacher's retain accuracy, checked every 20 steps; the
cosine schedule spans the budget), once per seed (noise draw / init and data order
differ). Stages land in RUN_DIR/stages beside the study's and share its teacher cache.

Per candidate and seed it records whether the student recovered, at which step, its
final retain accuracy, its retain-accuracy curve and its compute as a fraction of the
gold standard's (steps at equal tokens per step, and FLOPs including the teacher).
docs/distillation.md reads its conclusions from this file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from undo.artifacts import environment, read_json, write_json
from undo.config import load_config

# name -> (init, alpha, overrides). "paper" is the published recipe (norm gains shrunk by
# 1 − α, lr 2e-3); the others change one thing each.
CANDIDATES: dict[str, tuple[str, float | None, list[str]]] = {
    "a0.8 paper (norms shrink)": ("noised", 0.8, ["noise.norms=shrink"]),
    "a0.8 norms toward_init": ("noised", 0.8, ["noise.norms=toward_init"]),
    "a0.8 norms untouched": ("noised", 0.8,
                             ["noise.norms=shrink",
                              "noise.targets=[attention,mlp,embeddings,other]"]),
    "a0.8 norms keep, lr 1e-3": ("noised", 0.8, ["noise.norms=keep", "distill.lr=0.001"]),
    "a0.8 norms keep, lr 4e-3": ("noised", 0.8, ["noise.norms=keep", "distill.lr=0.004"]),
    "a0.8 norms keep, batch 64": ("noised", 0.8, ["noise.norms=keep",
                                                  "distill.batch_size=64"]),
    "a0.8 norms keep, warmup 200": ("noised", 0.8, ["noise.norms=keep",
                                                    "distill.warmup_steps=200"]),
    "random init (U&D)": ("random", None, []),
    "random init, lr 1e-3": ("random", None, ["distill.lr=0.001"]),
    "random init, lr 4e-3": ("random", None, ["distill.lr=0.004"]),
    "random init, temperature 2": ("random", None, ["distill.temperature=2.0"]),
    # Half the batch for twice the steps: the same tokens as the 128-item default.
    "a0.8 norms keep, batch 64 (2x steps)": ("noised", 0.8, ["noise.norms=keep",
                                                             "distill.batch_size=64",
                                                             "distill.steps=2400"]),
    "random init, batch 64 (2x steps)": ("random", None, ["distill.batch_size=64",
                                                          "distill.steps=2400"]),
}


def _run(job: tuple[str, list[str], str, float | None, int, str, str]) -> dict[str, Any]:
    from undo.stages.distill import distill
    from undo.study.summary import compute_of

    torch.set_num_threads(1)
    config, overrides, init, alpha, seed, teacher, gold = job
    cfg = load_config(config, overrides)
    d = distill(cfg if alpha is None else cfg.at_alpha(alpha), teacher, init=init, seed=seed)
    s = read_json(d / "summary.json")
    compute = compute_of(s, read_json(Path(gold) / "summary.json"))
    curve = [(r["step"], r["eval"]["retain/acc"])
             for r in map(eval_row, (d / "metrics.jsonl").read_text().splitlines())
             if r is not None]
    return {"seed": seed, "stage": d.name, "recovered": s["recovered"], "steps": s["steps"],
            "stopped_early": s["stopped_early"], "retain_acc": s["metrics"]["retain/acc"],
            "teacher_retain_acc": s["teacher_metrics"]["retain/acc"],
            "steps_fraction": compute["fraction_of_gold_steps"],
            "flops_fraction": compute["fraction_of_gold_flops"], "curve": curve}


def eval_row(line: str) -> dict | None:
    r = json.loads(line)
    return r if "eval" in r and "retain/acc" in r["eval"] else None


def _stage(run: Path, summary: dict, kind: str) -> str:
    m = next(m for m in summary["models"] if m["kind"] == kind)
    return str(run / "stages" / Path(m["stage_dir"]).name / "model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    ap.add_argument("--out", default="experiments/results/distill_recipe.json")
    a = ap.parse_args()
    run = Path(a.run_dir).resolve()
    summary = read_json(run / "summary.json")
    teacher, gold = _stage(run, summary, "unlearn_only"), str(Path(_stage(run, summary,
                                                                          "gold")).parent)
    config = str(run / "config.yaml")
    # The study's own folder: stages land beside its own and share its teacher cache.
    base = [f"out_dir={run.parent}", "threads=1", "progress=false",
            f"distill.steps={a.steps}"]
    names = a.only or list(CANDIDATES)
    jobs, keys = [], []
    for name in names:
        init, alpha, ov = CANDIDATES[name]
        for seed in a.seeds:
            jobs.append((config, base + ov, init, alpha, seed, teacher, gold))
            keys.append(name)
    t0 = time.time()
    with ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn")) as pool:
        results = list(pool.map(_run, jobs))
    out: dict[str, Any] = {"run_dir": str(run), "steps_budget": a.steps, "seeds": a.seeds,
                           "candidates": {}}
    for name in names:
        rows = [r for k, r in zip(keys, results, strict=True) if k == name]
        rec = [r for r in rows if r["recovered"]]
        out["candidates"][name] = {
            "overrides": CANDIDATES[name][2], "init": CANDIDATES[name][0],
            "alpha": CANDIDATES[name][1],
            "recovered": f"{len(rec)}/{len(rows)}",
            "mean_steps_recovered": statistics.mean(r["steps"] for r in rec) if rec else None,
            "mean_retain_acc": statistics.mean(r["retain_acc"] for r in rows),
            "mean_flops_fraction_recovered":
                statistics.mean(r["flops_fraction"] for r in rec) if rec else None,
            "runs": rows}
        c = out["candidates"][name]
        print(f"{name:28s} recovered {c['recovered']}  mean steps (recovered) "
              f"{c['mean_steps_recovered']}  mean retain {c['mean_retain_acc']:.3f}")
    out["wall_time_s"] = time.time() - t0
    out["environment"] = environment()
    write_json(a.out, out)


if __name__ == "__main__":
    main()
