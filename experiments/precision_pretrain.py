"""Does bf16-mixed cost the tiny base model accuracy? The default study's base-model
pretraining at fp32, at bf16-mixed as the study runs it, and at bf16-mixed with the output
layer (the tied embedding's projection to the vocabulary) kept in float32, over seeds.

    python experiments/precision_pretrain.py [--variants V ...] [--seeds 0 1 2]
        [--workers 2] [--out experiments/results/precision_pretrain.json]

Each (variant, seed) is `undo.stages.pretrain.pretrain(cfg, "base")` on the embedded
default config with `precision=fp32` or `bf16-mixed` and `seed=S`, in its own folder, in
a pool of `--workers` processes of one torch thread each (a study worker's setting: the thread count
changes float rounding, and bf16 training amplifies it). The `fp32_head` variant is an
experiment only (not an undo setting): the model's output layer runs outside autocast on
float32 inputs. Records each model's accuracy on the eval sets and its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from typing import Any

import torch

from undo.artifacts import environment, write_json
from undo.config import load_config
from undo.runtime import process_pool

VARIANTS = ("fp32", "bf16-mixed", "bf16-mixed, fp32_head")


def _fp32_head(model: torch.nn.Module) -> torch.nn.Module:
    head = model.get_output_embeddings()
    forward = head.forward

    def fp32_forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return forward(x.float())

    head.forward = fp32_forward
    return model


def run(job: tuple[str, int, str]) -> dict[str, Any]:
    variant, seed, root = job
    import undo.stages.pretrain as stage

    if variant.endswith("fp32_head"):
        new_model = stage.new_model
        stage.new_model = lambda *a, **k: _fp32_head(new_model(*a, **k))
    cfg = load_config(None, [f"out_dir={root}/{variant.replace(', ', '-')}-{seed}",
                             f"seed={seed}", f"precision={variant.split(',')[0]}",
                             "progress=false"])
    t0 = time.perf_counter()
    d = stage.pretrain(cfg, "base")
    s = json.loads((d / "summary.json").read_text())
    return {"variant": variant, "seed": seed, "wall_s": time.perf_counter() - t0,
            "threads": torch.get_num_threads(),
            "metrics": {k: v for k, v in s["metrics"].items() if k.endswith("/acc")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="experiments/results/precision_pretrain.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as root, process_pool(a.workers, 1, fresh=True) as pool:
        jobs = [(v, s, root) for v in a.variants for s in a.seeds]
        results = list(pool.map(run, jobs))
    summary = {v: {k: [r["metrics"][k] for r in results if r["variant"] == v]
                   for k in ("retain/acc", "forget/acc")} for v in a.variants}
    write_json(a.out, {"benchmark": "precision_pretrain", "runs": results,
                       "by_variant": summary, "load_average_at_write": os.getloadavg(),
                       "environment": environment()})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
