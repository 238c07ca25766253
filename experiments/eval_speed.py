"""Evaluation waste removed (issue 24 item 3), old vs new side by side in one run.

    python experiments/eval_speed.py [--model DIR ...] [--rounds 5]
        [--out experiments/results/eval_speed.json]

1. The forward of an evaluation. Hugging Face decoders build a key/value cache on every
   forward unless told not to (`use_cache` defaults to the model config's True). Nothing
   reads that cache: an evaluation is one teacher-forced forward. Now `score_items`
   passes `use_cache=False`.
2. The teacher's evaluation. Every distillation evaluated its teacher on all eval sets
   (14 times in the default study, on 2 teachers); now once per worker process and
   teacher (`stages.distill.evaluate_teacher`). Measured: a miss and a hit.
3. A control that was tried and dropped: the training forward (CE loss, forward and
   backward) without the cache was no faster (`train_steps`), so training is unchanged.

For each model (stage folders given by `--model`, else the `tiny` preset at seed 0), on
one thread as the study's workers run:
- evaluation: every default eval set of the arithmetic benchmark scored by the current
  `score_items_bucketed` ("new") and by the same function with the model called as
  before, the cache on ("old");
- the teacher's metrics: `evaluate_teacher` on an empty memo (a miss: what every
  distillation paid before) and again (a hit);
- the control: a CE training step, forward and backward, with and without the cache.
Rounds alternate old and new so load on the shared machine hits both alike; each ratio is
old / new of the summed CPU times of this process (wall times recorded beside them). Every per-item score (exact match, CE sum, token count),
every loss and gradient, and the memo's metrics against a fresh evaluation, are compared
bit for bit; `identical` must be true.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from undo.artifacts import environment, write_json
from undo.benchmarks.arithmetic import benchmark as ab
from undo.benchmarks.evaluate import evaluate
from undo.config import ModelConfig, load_config
from undo.models import build_model, load_model, load_tokenizer
from undo.objectives import LOSSES
from undo.stages import distill as distill_stage

HERE = Path(__file__).resolve().parent


class CacheOn(torch.nn.Module):
    """The model as the old code called it: `use_cache` left to the config (True)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner = model

    def forward(self, **kwargs: Any) -> Any:
        kwargs.pop("use_cache", None)
        return self.inner(**kwargs)


def score_all(model: torch.nn.Module, sets: dict[str, list], tok: Any) -> list[torch.Tensor]:
    out = []
    for items in sets.values():
        out += list(ab.score_items_bucketed(model, items, tok))
    return out


def train_step(model: torch.nn.Module, batches: list[dict]) -> list[torch.Tensor]:
    loss_fn = LOSSES.get("ce")()
    out = []
    for b in batches:
        model.zero_grad(set_to_none=True)
        loss, _ = loss_fn.loss(model, b)
        loss.backward()
        out += [loss.detach()] + [p.grad.clone() for p in model.parameters()]
    return out


def side_by_side(old: Callable[[], list[torch.Tensor]], new: Callable[[], list[torch.Tensor]],
                 rounds: int) -> dict[str, Any]:
    """Wall and CPU seconds of `old` and `new`, rounds alternating; CPU time (this process,
    one thread) is what a loaded machine distorts least, so the ratio is read from it."""
    wall: dict[str, list[float]] = {"old": [], "new": []}
    cpu: dict[str, list[float]] = {"old": [], "new": []}
    results: dict[str, list[torch.Tensor]] = {}
    old(), new()  # warm-up
    for _ in range(rounds):
        for name, f in (("old", old), ("new", new)):
            t0, c0 = time.perf_counter(), time.process_time()
            results[name] = f()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    same = len(results["old"]) == len(results["new"]) and all(
        torch.equal(a, b) for a, b in zip(results["old"], results["new"], strict=True))
    return {"wall_s": wall, "cpu_s": cpu, "old_over_new": sum(cpu["old"]) / sum(cpu["new"]),
            "old_over_new_wall": sum(wall["old"]) / sum(wall["new"]), "identical": same}


def teacher_memo(model: torch.nn.Module, bench: Any, tok: Any, rounds: int) -> dict[str, Any]:
    """CPU seconds of `evaluate_teacher` on an empty memo (miss) and on a filled one (hit)."""
    key = {"teacher": "benchmark", "data": {}}
    miss, hit, same = [], [], True
    for _ in range(rounds):
        distill_stage._TEACHER_METRICS.clear()
        c0 = time.process_time()
        first = distill_stage.evaluate_teacher(model, bench, tok, key)
        miss.append(time.process_time() - c0)
        c0 = time.process_time()
        second = distill_stage.evaluate_teacher(model, bench, tok, key)
        hit.append(time.process_time() - c0)
        same = same and first == second == evaluate(model, bench, tok)
    return {"cpu_s": {"miss": miss, "hit": hit}, "identical": same}


def one_model(label: str, model: torch.nn.Module, tok: Any, rounds: int) -> dict[str, Any]:
    cfg = load_config()
    bench = ab.Benchmark(cfg.data)
    sets = {n: bench._eval_items()[n] for n in bench.eval_names}
    model.eval()
    cached = CacheOn(model)

    evaluation = side_by_side(lambda: score_all(cached, sets, tok),
                              lambda: score_all(model, sets, tok), rounds)
    teacher = teacher_memo(model, bench, tok, rounds)
    stream = bench.batches("base", tok, cfg.pretrain.batch_size, seed=0)
    batches = [stream(s, 0) for s in range(4)]
    model.train()
    training = side_by_side(lambda: train_step(cached, batches),
                            lambda: train_step(model, batches), rounds)
    return {"model": label, "eval_items": sum(len(v) for v in sets.values()),
            "evaluation": evaluation, "teacher_metrics": teacher, "train_steps": {"batches": len(batches), **training}}


# What the default study's profile (experiments/results/study_profile.json) spent on
# evaluation: every by-kind field that is evaluation and per-stage setup, an upper bound.
EVAL_FIELDS = ("run_eval_s", "eval_and_setup_s")
# Teacher evaluations in the default study: 12 distillations of the unlearned teacher and
# 2 oracles of the gold one; with 2 workers at most 2 x 2 of them miss the memo.
TEACHER_EVALS, MAX_MISSES = 14, 4


def estimate(profile_path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An estimate (not a measurement) of the worker-seconds saved on the default study."""
    p = json.loads(profile_path.read_text())
    evals = sum(d.get(f, 0.0) for d in p["by_kind"].values() for f in EVAL_FIELDS)
    r = min(x["evaluation"]["old_over_new"] for x in rows)
    miss = max(statistics.median(x["teacher_metrics"]["cpu_s"]["miss"]) for x in rows)
    # The profile ran under load (64 min); alone the study takes 20.4 min on 2 workers.
    alone = 2 * DEFAULT_STUDY_ALONE_S
    scale = alone / p["busy_worker_s"]
    saved_eval = evals * scale * (1 - 1 / r)
    saved_teacher = (TEACHER_EVALS - MAX_MISSES) * miss
    saved = saved_eval + saved_teacher
    return {"profile": str(profile_path), "profile_busy_worker_s": p["busy_worker_s"],
            "profile_eval_and_setup_worker_s": evals, "alone_worker_s": alone,
            "eval_ratio_used": r, "teacher_eval_cpu_s": miss,
            "saved_eval_worker_s": saved_eval, "saved_teacher_worker_s": saved_teacher,
            "saved_fraction_of_work": saved / alone, "saved_wall_s_alone": saved / 2,
            "how": "the profile's evaluation-and-setup worker-seconds, scaled to the study "
                   "alone (2 workers x 20.4 min / the profile's busy worker-seconds), x "
                   "(1 - 1/ratio) with the smallest measured ratio; plus (14 - 4) teacher "
                   "evaluations at the measured CPU seconds of one; halved for wall time "
                   "(2 busy workers)"}


DEFAULT_STUDY_ALONE_S = 20.4 * 60  # README: the default study alone on this machine

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, action="append", default=[],
                    help="a model folder (repeatable); default the tiny preset at seed 0")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--profile", type=Path, default=HERE / "results" / "study_profile.json")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_speed.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    load0 = os.getloadavg()
    rows = []
    if a.model:
        for d in a.model:
            rows.append(one_model(str(d), load_model(d), load_tokenizer(d), a.rounds))
    else:
        from undo.tokenizers import build_char_tokenizer

        tok = build_char_tokenizer()
        rows.append(one_model("tiny preset, seed 0", build_model(ModelConfig(), tok, 0), tok,
                              a.rounds))
    for r in rows:
        print(f"{r['model']}: eval old/new {r['evaluation']['old_over_new']:.3f} "
              f"(identical {r['evaluation']['identical']}), train step old/new "
              f"{r['train_steps']['old_over_new']:.3f} "
              f"(identical {r['train_steps']['identical']}); teacher metrics "
              f"{statistics.median(r['teacher_metrics']['cpu_s']['miss']):.2f} CPU s a miss, "
              f"{statistics.median(r['teacher_metrics']['cpu_s']['hit']) * 1e3:.2f} ms a hit")
    est = estimate(a.profile, rows)
    print(f"estimate: {est['saved_eval_worker_s'] + est['saved_teacher_worker_s']:.0f} "
          f"worker-s of the study's {est['alone_worker_s']:.0f} alone "
          f"({est['saved_fraction_of_work']:.1%}, ~{est['saved_wall_s_alone']:.0f} s of wall)")
    write_json(a.out, {"benchmark": "eval_speed", "threads": 1, "rounds": a.rounds,
                       "models": rows, "estimate": est, "load_average_before": load0,
                       "load_average_after": os.getloadavg(),
                       "conditions": "shared 2-core machine, other engineers' jobs running",
                       "environment": environment()})
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
