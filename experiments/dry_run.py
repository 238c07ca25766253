"""How long `undo run --dry-run` takes on real-model configs, from configs alone.

    python experiments/dry_run.py   -> experiments/results/dry_run.json

Stand-ins: config.json folders (no weights) of the Gemma-2-2B shape (transformers'
Gemma2Config defaults) for configs/wmdp/gemma2-2b-rmu.yaml, and of the Llama-3.2-1B shape
(hidden 2048, 16 layers, 32/8 heads, MLP 8192, vocab 128256, tied) for the text study
and for `undo robustify --dry-run`.
Each command is a new process, as a user runs it (wall and CPU seconds, best and median
of 3), beside `python -c "import torch, transformers, accelerate"` in the same run: the
imports every undo command pays, for scale.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "dry_run.json"


def timed(cmd: list[str], n: int = 3) -> dict[str, float]:
    walls, cpus = [], []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {"wall_best_s": min(walls), "wall_median_s": statistics.median(walls),
            "cpu_median_s": statistics.median(cpus)}


def main() -> None:
    from transformers import Gemma2Config, LlamaConfig

    tmp = Path(tempfile.mkdtemp())
    Gemma2Config().save_pretrained(tmp / "gemma2-2b")
    LlamaConfig(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                tie_word_embeddings=True).save_pretrained(tmp / "llama-3.2-1b")
    forget, retain = tmp / "forget.jsonl", tmp / "retain.jsonl"
    # Enough documents for the benchmark's train / eval / attack splits (checked).
    forget.write_text("".join(f'{{"text": "document {i} to forget"}}\n' for i in range(200)))
    retain.write_text("".join(f'{{"text": "document {i} to keep"}}\n' for i in range(200)))
    undo = [sys.executable, "-m", "undo.cli", "run", "--dry-run", f"out_dir={tmp / 'runs'}"]
    load_before = os.getloadavg()
    result = {
        "imports_only": timed([sys.executable, "-c", "import torch, transformers, accelerate"]),
        "wmdp_gemma2_2b": timed([*undo, "configs/wmdp/gemma2-2b-rmu.yaml",
                                 f"model.name_or_path={tmp / 'gemma2-2b'}"]),
        "text_llama_1b": timed([*undo, "configs/text/tiny.yaml", "data.tokenizer=model",
                                f"model.name_or_path={tmp / 'llama-3.2-1b'}",
                                "study.gold=none"]),
        # `undo robustify --dry-run` on the same stand-in, with local JSONL data.
        "robustify_llama_1b": timed([sys.executable, "-m", "undo.cli", "robustify",
                                     "--dry-run", f"out_dir={tmp / 'runs'}",
                                     "--model", str(tmp / "llama-3.2-1b"),
                                     "--forget", str(forget), "--retain", str(retain),
                                     "--out", str(tmp / "release")]),
        # What else ran shows in the load: wall time includes waiting for a core, CPU
        # time does not. A new process per run, on the 2-core machine.
        "load_average_1_5_15_min_before": load_before,
        "load_average_1_5_15_min_after": os.getloadavg(),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
