"""The finding on real text (issue 21, item 7): text tiny and language tiny on the corpora
that scripts/corpora.sh builds from Debian's documentation packages.

    scripts/corpora.sh                                   # once: the corpora
    python experiments/text_real.py text [--seeds 0 1 2]  # -> experiments/results/text_real.json
    python experiments/text_real.py language              # -> .../language_real.json
    python experiments/text_real.py text --run-dir DIR --wall-s S [--load-file F]
        [--conditions TEXT] [--why NAME=RUN_DIR ...]

Without --run-dir it runs `nice -n 5 undo run configs/<setting>/tiny.yaml` with those
seeds into a scratch folder (scratch/<setting>-real, ignored by git), timing it end to end
and sampling the load average every 30 s; with --run-dir it reads a run made that way
(`--load-file`: lines `unix_time load1 load5 load15`). Either way it writes:

- corpora: per role (forget / retain) and split, documents, tokens and windows under the
  run's own BPE, and the same for the corpora the config used before (`BEFORE`), so the
  growth factor is measured, not quoted;
- gold_sound: the gold standard's retain CE against the base model's and each oracle
  student's (the gold standard must not be worse than either: an overfit reference);
- per attack budget, the worst-case forget CE of every row with its 95% interval (the
  summary's bootstrap over eval items, attack seeds and model seeds) and robustness per arm;
- finding: unlearn-only relearns below the gold standard (intervals separate) and the
  largest α's robustness interval (does it reach 0.9? does it include 1?).
Every figure is read from the run's summary.json or measured here; nothing is typed in.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import threading
import time
from pathlib import Path

from undo.artifacts import environment, read_json, write_json
from undo.benchmarks import build_benchmark
from undo.benchmarks.text.corpus import SPLITS, pack
from undo.config import load_config
from undo.study.run_folder import config_differences, loaded_config

ROOT = Path(__file__).resolve().parents[1]
# The corpora each config read before scripts/corpora.sh existed.
BEFORE = {"text": ["data.retain=[{shipped: python-docs}]"],
          "language": ["data.retain=[{shipped: python-docs}]",
                       "data.forget=[{shipped: korean-law}, {shipped: korean-bills}]"]}


def corpus_sizes(config: str, overrides: list[str]) -> dict:
    """Documents, tokens and windows per role and split under the config's own BPE."""
    cfg = load_config(config, overrides)
    bench = build_benchmark(cfg.data)
    tok = bench.own_tokenizer()
    out: dict = {}
    for role in ("forget", "retain"):
        corpus = bench.corpora[role]
        out[role] = {"sources": corpus.labels}
        for split in SPLITS:
            packed = [pack(per[split], tok, cfg.data.seq_len) for per in corpus.docs]
            out[role][split] = {"documents": sum(len(per[split]) for per in corpus.docs),
                                "tokens": sum(t for _, t in packed),
                                "windows": sum(len(w) for w, _ in packed)}
    pre = cfg.pretrain
    seen = pre.steps * pre.batch_size * getattr(pre, "grad_accum", 1)
    out["gold_epochs_over_retain_train"] = round(seen / out["retain"]["train"]["windows"], 2)
    return out


def _sample_load(path: Path, stop: threading.Event) -> None:
    with path.open("a") as f:
        while not stop.is_set():
            f.write(f"{time.time():.0f} {' '.join(map(str, os.getloadavg()))}\n")
            f.flush()
            stop.wait(30)


def run_study(config: str, run_dir: Path, seeds: list[int], load_file: Path) -> float:
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_load, args=(load_file, stop), daemon=True)
    sampler.start()
    start = time.time()
    try:
        subprocess.run(["nice", "-n", "5", "undo", "run", config, f"out_dir={run_dir}",
                        f"study.seeds=[{','.join(map(str, seeds))}]", "progress=false"],
                       check=True)
    finally:
        stop.set()
    return time.time() - start


def load_stats(load_file: Path | None) -> dict | None:
    if load_file is None or not load_file.exists():
        return None
    one = [float(line.split()[1]) for line in load_file.read_text().splitlines() if line]
    return {"samples": len(one), "load1_mean": round(sum(one) / len(one), 2),
            "load1_min": min(one), "load1_max": max(one)} if one else None


def _model(summary: dict, kind: str) -> list[dict]:
    return [m for m in summary["models"] if m["kind"] == kind]


def gold_soundness(summary: dict) -> dict:
    name = summary["retain_metric"]["name"]
    gold = _model(summary, "gold")[0]["metrics"][name]
    base = _model(summary, "base")[0]["metrics"][name]
    oracles = {m["name"]: m["metrics"][name] for m in summary["models"]
               if m["kind"].startswith("oracle")}
    return {"gold_retain_ce": gold, "base_retain_ce": base, "oracle_retain_ce": oracles,
            "gold_not_worse_than_base": gold <= base,
            # None when the study trained no oracle (language tiny: `study.oracles: false`)
            "gold_not_worse_than_oracles": (all(gold <= v for v in oracles.values())
                                            if oracles else None)}


def finding(summary: dict) -> dict:
    """Per attack and budget: worst cases and robustness with intervals, and the checks."""
    out: dict = {}
    alphas = sorted({m["alpha"] for m in _model(summary, "undo")})
    for attack, per_budget in summary.get("intervals", {}).get("attacks", {}).items():
        out[attack] = {}
        for budget, iv in per_budget.items():
            wc, rob = iv.get("worst_case", {}), iv.get("robustness", {})
            gold, uo = wc.get("gold"), wc.get("unlearn-only")
            top = rob.get(f"UNDO α={alphas[-1]}") if alphas else None
            out[attack][budget] = {
                "worst_forget_ce": wc, "robustness": rob,
                "unlearn_only_over_gold": iv.get("unlearn_only_over_gold"),
                # CE: lower = relearned; "below the gold standard" = intervals separate.
                "unlearn_only_below_gold": (None if not (gold and uo)
                                            else uo["hi"] < gold["lo"]),
                "largest_alpha": alphas[-1] if alphas else None,
                "largest_alpha_interval_includes_1": (None if not top or top["lo"] is None
                                                      else top["lo"] <= 1 <= top["hi"]),
                "largest_alpha_reaches_0.9": (None if not top or top["point"] is None
                                              else top["point"] >= 0.9),
            }
    return out


def students(summary: dict) -> list[dict]:
    """Every distilled student (UNDO and Unlearn-and-Distill): its budget use, whether it
    recovered the teacher's retain ability, and its total compute against the gold's."""
    cfg = summary["config"]["distill"]
    return [{"name": m["name"], "alpha": m["alpha"], "seed": m["seed"],
             "steps": m["compute"]["steps"], "max_steps": cfg["steps"],
             "recovered": m["recovered"],
             "total_fraction_of_gold_flops": m["compute"]["total_fraction_of_gold_flops"]}
            for m in summary["models"] if m["kind"] in ("undo", "unlearn_distill")]


def why(runs: list[str], study: dict) -> dict:
    """The side-by-side runs that ask why UNDO does or does not stay near the gold
    standard (NAME=RUN_DIR each, sharing the study's base, gold, teacher and reference
    attacks): per run, every setting it changed against `study`'s config (stop rule,
    budget, α, distillation data, ...) and its students' robustness with intervals, budget
    use and compute. Students that did not recover are listed but the summary does not
    count their robustness (intervals.not_counted)."""
    out: dict = {}
    for item in runs:
        name, _, run_dir = item.partition("=")
        summary = read_json(Path(run_dir) / "summary.json")
        out[name] = {"run_dir": run_dir,
                     "changed": config_differences(loaded_config(study["config"]),
                                                   loaded_config(summary["config"])),
                     "students": students(summary),
                     "gold_sound": gold_soundness(summary),  # with its oracles, if it ran them
                     "robustness": {a: {b: iv.get("robustness", {}) for b, iv in per.items()}
                                    for a, per in summary["intervals"]["attacks"].items()},
                     "not_counted": summary["intervals"].get("not_counted")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("setting", choices=["text", "language"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--run-dir", type=Path)
    ap.add_argument("--wall-s", type=float)
    ap.add_argument("--load-file", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--conditions", default="nice -n 5 on the 2-core machine shared with "
                    "other engineers' jobs", help="how the run was made and what else ran")
    ap.add_argument("--why", nargs="+", default=[], metavar="NAME=RUN_DIR",
                    help="side-by-side runs of the same study with one change each")
    a = ap.parse_args()
    config = str(ROOT / "configs" / a.setting / "tiny.yaml")
    out = a.out or ROOT / "experiments" / "results" / f"{a.setting}_real.json"
    wall, load_file = a.wall_s, a.load_file
    if a.run_dir is None:
        run_root = ROOT / "scratch" / f"{a.setting}-real"
        load_file = run_root / "load.txt"
        run_root.mkdir(parents=True, exist_ok=True)
        wall = run_study(config, run_root, a.seeds, load_file)
        a.run_dir = run_root / load_config(config).name
    summary = read_json(a.run_dir / "summary.json")
    write_json(out, {
        "command": f"python experiments/text_real.py {a.setting}",
        "config": f"configs/{a.setting}/tiny.yaml",
        "seeds": sorted({m["seed"] for m in summary["models"] if m["seed"] is not None}),
        "wall_time_s": wall, "load_average": load_stats(load_file),
        "conditions": a.conditions,
        "corpora": corpus_sizes(config, []),
        "corpora_before": corpus_sizes(config, BEFORE[a.setting]),
        "gold_sound": gold_soundness(summary),
        "finding": finding(summary),
        "students": students(summary),
        "why": why(a.why, summary),
        "environment": environment(),
    })
    print(out)


if __name__ == "__main__":
    main()
