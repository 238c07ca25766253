"""Where a finished study's minutes go: per stage, per kind, the critical path and the
idle time of its worker schedule (issue 24 item 3).

    python experiments/study_profile.py RUN_DIR [--out experiments/results/study_profile.json]
        [--run N] [--load-log FILE] [--conditions TEXT]

Reads only files: the study's schedule from `RUN_DIR/runs.jsonl` (each task's start and
end as the scheduler saw them, and the load average when it ended; the run that did the
most work, or record `--run N`), every stage folder's summary.json (its own wall time,
training time, teacher-cache build time; an attack's runs from relearn.json), and the
task graph rebuilt from the run's config (dependencies). A run folder written before the
schedule was recorded is profiled from its stage folders alone: each stage's end from
its meta.json (to the second) and its start as end - its own wall time, so dispatch and
saving are not counted ("schedule": "reconstructed").

It reports:
- per task: start, end, duration; inside it, the stage's own wall time and its parts
  (training steps, teacher-cache building, evaluation and setup = wall - training; for an
  attack, its runs' training and evaluation); `outside_stage_s` = duration - the stage's
  wall (dispatch to the worker, first imports, key hashing, saving the model, manifests);
- per kind: the sums of the same;
- the schedule: wall time of the graph, busy worker time, idle worker time
  (workers x wall - busy) and the intervals where fewer than `workers` tasks ran;
- the critical path: the longest chain of dependent tasks by duration (what no number of
  workers can beat), and the work bound (busy / workers);
- after the graph: summary and report (runs.jsonl wall - graph).
Stage folders are found from the schedule (recorded runs) or, for an older run, by their
names and files (`task_of`), never by recomputing cache keys: a profile reads a run made
by an older undo too.
`--load-log`: lines `<epoch> <load1> <load5> <load15>` sampled during the run (summarised).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

import yaml

from undo.artifacts import read_json, write_json
from undo.config import run_config
from undo.study.gold import with_gold
from undo.study.graph import study_graph

HERE = Path(__file__).resolve().parent


def load_cfg(run_dir: Path, record: dict | None):
    """The run's config, located in RUN_DIR (wherever the run was made)."""
    raw = record["config"] if record else yaml.safe_load((run_dir / "config.yaml").read_text())
    raw = {**raw, "out_dir": str(run_dir.parent), "name": run_dir.name}
    return run_config(raw)


def pick_record(run_dir: Path, index: int | None) -> dict | None:
    path = run_dir / "runs.jsonl"
    if not path.is_file():
        return None
    records = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    timed = [r for r in records if "timing" in r]
    if index is not None:
        return records[index]
    return max(timed, key=lambda r: r["timing"]["graph_s"]) if timed else None


def model_names(seeds: list[int]) -> dict[str, str]:
    """Stage task name -> the model's name in attack task names (the study graph's naming)."""
    sfx = (lambda s: f"-s{s}") if len(seeds) > 1 else (lambda s: "")
    out = {"pretrain gold": "gold", "oracle gold->random": "oracle-random",
           "oracle gold->base": "oracle-base"}
    for s in seeds:
        out[f"Unlearn-and-Distill s{s}"] = "unlearn-distill" + sfx(s)
    return out


def task_of(folder: Path, seeds: list[int]) -> str | None:
    """The study task that wrote a stage folder, from the folder's name and files (for a
    run whose schedule did not record folders)."""
    name = folder.name.rsplit("-", 1)[0]
    if folder.parent.name == "attacks":
        stage = task_of(folder.parent.parent / "stages" / name, seeds)
        if stage is None:
            return None
        if stage.startswith("unlearn "):
            model = "unlearn-only"
        elif stage.startswith("UNDO "):
            a, s = re.match(r"UNDO a=(\S+) s(\d+)", stage).groups()
            model = f"undo-a{a}-s{s}"
        else:
            model = model_names(seeds).get(stage, stage)
        forget_only = read_json(folder / "relearn.json")["attack"]["retain_fraction"] == 0.0
        return f"attack {model}" + (" (forget_only)" if forget_only else "")
    if m := re.fullmatch(r"pretrain-(base|gold)", name):
        return f"pretrain {m[1]}"
    if m := re.fullmatch(r"unlearn-(\w+)", name):
        return f"unlearn {m[1]}"
    if m := re.fullmatch(r"distill-noised-a(\S+)-s(\d+)", name):
        return f"UNDO a={m[1]} s{m[2]}"
    if m := re.fullmatch(r"distill-random-s(\d+)", name):
        teacher = read_json(folder / "summary.json")["teacher"]
        return "oracle gold->random" if "pretrain-gold" in teacher else \
            f"Unlearn-and-Distill s{m[1]}"
    if name.startswith("distill-from-"):
        return "oracle gold->base"
    return None


def located(run_dir: Path, seeds: list[int]) -> dict[str, Path]:
    """Task name -> folder, for every finished stage and attack folder of the run."""
    out: dict[str, Path] = {}
    for f in sorted(run_dir.glob("*/*/summary.json")):
        if f.parent.parent.name in ("stages", "attacks"):
            name = task_of(f.parent, seeds)
            if name is not None:
                out[name] = f.parent
    return out


def stage_parts(folder: Path | None) -> dict[str, Any]:
    """What a stage's own files say about its time."""
    if folder is None or not (folder / "summary.json").is_file():
        return {}
    s = read_json(folder / "summary.json")
    out: dict[str, Any] = {"folder": f"{folder.parent.name}/{folder.name}",
                           "stage_wall_s": s.get("wall_time_s")}
    if "train_time_s" in s:
        out["train_s"] = s["train_time_s"]
        out["steps"] = s.get("steps")
        cache = (s.get("teacher_outputs") or {}).get("build_time_s") or 0.0
        out["cache_build_s"] = cache
        out["train_steps_s"] = s["train_time_s"] - cache  # cache builds run inside steps
        out["eval_and_setup_s"] = (s.get("wall_time_s") or 0.0) - s["train_time_s"]
    if (folder / "relearn.json").is_file():
        runs = read_json(folder / "relearn.json")["runs"]
        run_wall = sum(r["wall_time_s"] for r in runs)
        run_train = sum(r["train_time_s"] for r in runs)
        out.update({"runs": len(runs), "train_s": run_train, "run_eval_s": run_wall - run_train,
                    "attack_setup_s": (s.get("wall_time_s") or 0.0) - run_wall})
    if folder.is_dir() and (folder / "meta.json").is_file():
        out["ended"] = read_json(folder / "meta.json").get("time")
    return out


def reconstructed(parts: dict[str, dict]) -> tuple[list[dict], float]:
    """A schedule from stage folders alone: end = meta.json time, start = end - wall."""
    ends = {}
    for name, p in parts.items():
        if p.get("ended") and p.get("stage_wall_s") is not None:
            end = time.mktime(time.strptime(p["ended"], "%Y-%m-%dT%H:%M:%S%z"))
            ends[name] = (end - p["stage_wall_s"], end)
    t0 = min(s for s, _ in ends.values())
    sched = [{"task": n, "start_s": s - t0, "end_s": e - t0} for n, (s, e) in ends.items()]
    return sched, max(e["end_s"] for e in sched)


def idle_intervals(sched: list[dict], workers: int, wall: float) -> list[dict]:
    """Intervals (> 1 s) where fewer than `workers` tasks ran, with what was running."""
    cuts = sorted({0.0, wall, *(e["start_s"] for e in sched), *(e["end_s"] for e in sched)})
    out: list[dict] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        mid = (a + b) / 2
        running = [e["task"] for e in sched if e["start_s"] <= mid < e["end_s"]]
        if len(running) < workers:
            if out and out[-1]["end_s"] == a and out[-1]["running"] == running:
                out[-1]["end_s"] = b
            else:
                out.append({"start_s": a, "end_s": b, "running": running})
    for o in out:
        o["idle_workers_s"] = (o["end_s"] - o["start_s"]) * (workers - len(o["running"]))
    return [o for o in out if o["end_s"] - o["start_s"] > 1.0]


def critical_path(sched: list[dict], deps: dict[str, tuple[str, ...]]) -> tuple[float, list[str]]:
    """The longest chain of dependent tasks by duration."""
    dur = {e["task"]: e["end_s"] - e["start_s"] for e in sched}
    best: dict[str, tuple[float, list[str]]] = {}
    for e in sorted(sched, key=lambda e: e["end_s"]):  # dependencies end first
        n = e["task"]
        before = max((best[d] for d in deps.get(n, ()) if d in best), default=(0.0, []),
                     key=lambda x: x[0])
        best[n] = (before[0] + dur[n], [*before[1], n])
    return max(best.values(), key=lambda x: x[0])


def profile(run_dir: Path, index: int | None) -> dict[str, Any]:
    record = pick_record(run_dir, index)
    cfg = load_cfg(run_dir, record)
    tasks = study_graph(with_gold(cfg)).stages
    kinds = {t.name: t.kind for t in tasks}
    deps = {t.name: t.deps for t in tasks}
    timing = (record or {}).get("timing")
    folders = located(run_dir, cfg.study.seeds)
    for e in (timing or {}).get("schedule", []):
        if e.get("folder"):  # recorded: exact
            folders[e["task"]] = run_dir / e["folder"]
    parts = {t.name: stage_parts(folders.get(t.name)) for t in tasks}
    if timing:
        sched, wall = timing["schedule"], timing["graph_s"]
        workers, how = timing["workers"], "recorded"
    else:
        sched, wall = reconstructed(parts)
        workers, how = cfg.study.workers, "reconstructed"
    rows = []
    for e in sorted(sched, key=lambda e: e["start_s"]):
        dur = e["end_s"] - e["start_s"]
        p = parts.get(e["task"], {})
        row = {"task": e["task"], "kind": kinds.get(e["task"], e.get("kind")),
               "start_s": round(e["start_s"], 1), "end_s": round(e["end_s"], 1),
               "duration_s": round(dur, 1), **{k: v for k, v in p.items() if k != "ended"}}
        if p.get("stage_wall_s") is not None:
            row["outside_stage_s"] = round(dur - p["stage_wall_s"], 1)
        if "load_1min" in e:
            row["load_1min"] = e["load_1min"]
        rows.append(row)
    by_kind: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        k = by_kind[r["kind"]]
        k["tasks"] += 1
        for f in ("duration_s", "stage_wall_s", "train_s", "train_steps_s", "cache_build_s",
                  "eval_and_setup_s", "run_eval_s", "attack_setup_s", "outside_stage_s"):
            k[f] += r.get(f) or 0.0
    busy = sum(r["duration_s"] for r in rows)
    cp_s, cp = critical_path(sched, deps)
    idle = idle_intervals(sched, workers, wall)
    loads = [e["load_1min"] for e in sched if "load_1min" in e]
    return {
        "run_dir": str(run_dir), "schedule": how, "workers": workers,
        "study_wall_s": timing["wall_time_s"] if timing else None,
        "graph_wall_s": round(wall, 1),
        "after_graph_s": round(timing["wall_time_s"] - wall, 1) if timing else None,
        "busy_worker_s": round(busy, 1),
        "idle_worker_s": round(workers * wall - busy, 1),
        "idle_fraction": round(1 - busy / (workers * wall), 3),
        "work_bound_s": round(busy / workers, 1),
        "critical_path_s": round(cp_s, 1), "critical_path": cp,
        "by_kind": {k: {f: round(v, 1) for f, v in d.items()} for k, d in by_kind.items()},
        "idle_intervals": [{k: (round(v, 1) if isinstance(v, float) else v) for k, v in o.items()}
                           for o in idle],
        "load_1min_at_task_ends": ({"min": min(loads), "mean": round(mean(loads), 2),
                                    "max": max(loads)} if loads else None),
        "tasks": rows,
    }


def load_log(path: Path) -> dict[str, Any]:
    rows = [list(map(float, x.split())) for x in path.read_text().splitlines() if x.strip()]
    one = [r[1] for r in rows]
    return {"samples": len(rows), "load_1min": {"min": min(one), "mean": round(mean(one), 2),
                                                "max": max(one)}}


def show(p: dict[str, Any]) -> None:
    m = 60.0
    print(f"{p['run_dir']}: graph {p['graph_wall_s'] / m:.1f} min on {p['workers']} workers "
          f"(schedule {p['schedule']}); busy {p['busy_worker_s'] / m:.1f} worker-min, idle "
          f"{p['idle_worker_s'] / m:.1f} ({p['idle_fraction']:.0%})")
    print(f"critical path {p['critical_path_s'] / m:.1f} min: {' -> '.join(p['critical_path'])}")
    print(f"work bound (busy / workers) {p['work_bound_s'] / m:.1f} min")
    print(f"{'kind':<10}{'tasks':>6}{'sum min':>9}{'train':>8}{'cache':>8}{'eval+setup':>11}"
          f"{'outside':>9}")
    for k, d in sorted(p["by_kind"].items(), key=lambda kv: -kv[1]["duration_s"]):
        evals = d.get("eval_and_setup_s", 0) + d.get("run_eval_s", 0) + d.get("attack_setup_s", 0)
        print(f"{k:<10}{int(d['tasks']):>6}{d['duration_s'] / m:>9.1f}"
              f"{d.get('train_steps_s', 0) / m + (d.get('train_s', 0) - d.get('train_steps_s', 0)) / m * (k == 'attack'):>8.1f}"
              f"{d.get('cache_build_s', 0) / m:>8.1f}{evals / m:>11.1f}"
              f"{d.get('outside_stage_s', 0) / m:>9.1f}")
    for o in p["idle_intervals"]:
        print(f"  idle {o['start_s'] / m:5.1f}-{o['end_s'] / m:5.1f} min "
              f"({o['idle_workers_s'] / m:.1f} worker-min): running {o['running'] or 'nothing'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--run", type=int, default=None, help="runs.jsonl record index")
    ap.add_argument("--load-log", type=Path, default=None)
    ap.add_argument("--conditions", default=None, help="what else ran on the machine")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "study_profile.json")
    a = ap.parse_args()
    p = profile(a.run_dir.resolve(), a.run)
    if a.load_log:
        p["load_log"] = load_log(a.load_log)
    p["conditions"] = a.conditions
    show(p)
    write_json(a.out, p)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
