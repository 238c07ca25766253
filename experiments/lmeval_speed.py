"""How long does lm-evaluation-harness take to score a tiny model on a local task?

    python experiments/lmeval_speed.py [--questions 200] [--repeats 3] [--threads 1]
        [--out experiments/results/lmeval_speed.json]

The floor (issue 13): a tiny model on a 200-question local 4-way multiple-choice task
through lm-eval in <= 10 s on this CPU, so that attack curves scored at a few budgets
stay cheap. The model is the `tiny` Llama preset built from config with a byte-level BPE
trained on Python's reference topics; the task is a local JSONL in WMDP's record format.
Timed: loading the task (TaskManager over the include_path only), scoring all questions
(`LmEvalSet.score`: HFLM on the in-memory model + simple_evaluate), a 25-question subset
(an attack-curve point), and the part of each call that is simple_evaluate's environment
report (torch's collect_env, run on every call).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from undo.artifacts import write_json
from undo.benchmarks.lmeval import LmEvalConfig, LmEvalSet, LmEvalTask, lm_eval_version
from undo.benchmarks.text.shipped import python_docs
from undo.config import ModelConfig
from undo.models import build_model
from undo.tokenizers import train_bpe_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lmeval_tasks import write_task  # noqa: E402  (the tests' question writer)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="experiments/results/lmeval_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    tok = train_bpe_tokenizer(python_docs(), 4096)
    model = build_model(ModelConfig(preset="tiny"), tok, seed=0)
    with tempfile.TemporaryDirectory() as d:
        folder = write_task(Path(d), "local_mc", args.questions)
        cfg = LmEvalConfig(include_path=str(folder), batch_size=32)
        spec = LmEvalTask("local_mc")
        t0 = time.perf_counter()
        es = LmEvalSet("forget", [spec], cfg, tok)
        setup_s = time.perf_counter() - t0
        first = timed(lambda: es.score(model), 1)[0]
        full = timed(lambda: es.score(model), args.repeats)
        subset = es.subset(25)
        curve = timed(lambda: es.score(model, subset), args.repeats)
        acc = es.metrics(es.score(model))["acc"]

    from lm_eval.loggers.utils import add_env_info

    env_info = timed(lambda: add_env_info({}), args.repeats)
    result = {
        "questions": args.questions, "model": "tiny preset (llama, hidden 128, 2 layers)",
        "params": sum(p.numel() for p in model.parameters()), "vocab": len(tok),
        "lm_eval_version": lm_eval_version(), "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine_shared": "yes: 2 cores shared with other agents' jobs; load averages "
                          f"before {load_before}, after {os.getloadavg()}",
        "task_setup_s": setup_s,
        "score_all_first_s": first, "score_all_s": full,
        "score_all_median_s": statistics.median(full),
        "score_curve_subset_25_s": curve, "score_curve_subset_25_median_s":
            statistics.median(curve),
        "simple_evaluate_env_info_s": statistics.median(env_info),
        "accuracy_untrained": acc,
        "floor_s": 10.0, "floor_met": statistics.median(full) <= 10.0,
    }
    write_json(Path(args.out), result)
    print({k: v for k, v in result.items() if not isinstance(v, list)})


if __name__ == "__main__":
    main()
