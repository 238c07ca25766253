"""Local 4-way multiple-choice questions for lm-eval tests and benchmarks (no download)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from undo.benchmarks.lmeval import write_local_task

WORDS = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "lamp", "seed", "wire",
         "glass", "paper", "salt", "iron", "moss", "flint", "coal", "wool", "bark", "reed"]


def write_questions(path: Path, n: int, seed: int = 0) -> Path:
    """`n` questions in the WMDP record format (question, choices, answer) as JSONL."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            choices = rng.sample(WORDS, 4)
            f.write(json.dumps({"question": f"Question {i}: which word is {choices[0]}?",
                                "choices": choices, "answer": rng.randrange(4)}) + "\n")
    return path


def write_task(folder: Path, name: str, n: int, seed: int = 0) -> Path:
    """A local task `name` over `n` questions; returns `folder` (its include_path)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_local_task(folder, name, write_questions(folder / f"{name}.jsonl", n, seed))
    return folder
