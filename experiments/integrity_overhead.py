"""What integrity work costs a whole study (issue 25's floor: with vs without verification
at most 3% apart), measured two ways:

    python experiments/integrity_overhead.py [--config configs/arithmetic/smoke.yaml]
        [--set KEY=VALUE ...] [--pairs 3] [--folder RUN_DIR ...] [--replay RUN_DIR ...]
        [--out experiments/results/integrity_overhead.json]

- `side_by_side`: the study of `--config` run `--pairs` times with integrity on and off
  (`UNDO_INTEGRITY=off`, for this benchmark only), alternated on/off/off/on/... in one
  session, each `undo run` a fresh process in a fresh run folder; wall times, CPU times
  of the run's process tree, and the ratios of the medians. On a shared machine one run's wall time varies by more than 3%,
  so this resolves large overheads only.
- `replayed` (`--replay`, for a folder written before the count, e.g. a default study):
  its integrity work done again on its own files, counted from its summaries (`replayed`).
- `instrumented`: in each finished run folder (the "on" runs, and every `--folder`), the
  seconds every stage spent on manifests and checks (meta.json's `integrity_seconds`,
  counted by undo.integrity) plus each stage's final manifest (timed here on the finished
  folder: it cannot be in the files it covers), over the stages' wall times. A folder
  written before the count existed has no `integrity_seconds` and is refused.

Load averages are recorded around every run: other jobs on the machine slow both arms.
Each invocation replaces in `--out` only the parts it measured (`--pairs 0`: none of the
side-by-side runs).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from undo import integrity
from undo.artifacts import environment, write_json

ROOT = Path(__file__).resolve().parents[1]


def stage_folders(run: Path) -> list[Path]:
    return sorted(p.parent for p in [*run.glob("stages/*/summary.json"),
                                     *run.glob("attacks/*/summary.json")])


def instrumented(run: Path) -> dict[str, Any]:
    """Integrity seconds over stage wall seconds in a finished run folder."""
    counted = final = wall = 0.0
    stages = stage_folders(run)
    if not stages:
        raise SystemExit(f"{run}: no finished stage folders")
    for d in stages:
        meta = json.loads((d / "meta.json").read_text())
        if "integrity_seconds" not in meta:
            raise SystemExit(f"{d}: meta.json has no integrity_seconds (written by an "
                             "undo without the count); run the study again to measure it")
        counted += meta["integrity_seconds"]
        wall += json.loads((d / "summary.json").read_text())["wall_time_s"]
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            integrity.write_manifest(d, path=Path(tmp) / integrity.MANIFEST)
            final += time.perf_counter() - t0
    total = counted + final
    return {"run_dir": str(run), "stages": len(stages), "stage_wall_s": wall,
            "integrity_s_counted": counted, "final_manifests_s": final,
            "integrity_s": total, "fraction_of_stage_wall": total / wall}


def _seconds(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def replayed(run: Path, verifies_per_stage: int = 3) -> dict[str, Any]:
    """For a finished run folder written before the count (no `integrity_seconds`): the
    integrity work its study did, done again on its own files and counted from its
    summaries: every stage folder's manifest written once and verified
    `verifies_per_stage` times (an assumption: its reuse check and the stages and attack
    that load its model); every cache chunk hashed when written and at every read
    (distillation steps / steps per chunk); every checkpoint (steps / checkpoint_every
    of the run's config) hashed at save, at 3x the model's bytes (weights + AdamW's two
    moments); every attack run file's sidecar written. Stage folders are hashed from
    the page cache as a reuse check reads them; chunks in memory, as they are used."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    stages = stage_folders(run)
    cost: dict[str, float] = {"stage_manifests": 0.0, "chunks": 0.0, "checkpoints": 0.0,
                              "run_files": 0.0}
    wall = 0.0
    distill_steps, built = 0, []
    model_bytes = 0
    n_ckpt = 0
    with tempfile.TemporaryDirectory() as tmp:
        m = Path(tmp) / integrity.MANIFEST
        for d in stages:
            s = json.loads((d / "summary.json").read_text())
            wall += s["wall_time_s"]
            cost["stage_manifests"] += _seconds(integrity.write_manifest, d, path=m)
            cost["stage_manifests"] += verifies_per_stage * _seconds(integrity.verify, m)
            for f in sorted(d.glob("runs/*.json")):  # attack folders: the sidecar only
                cost["run_files"] += _seconds(
                    integrity.write_manifest, Path(tmp), [], pending={f.name: f.read_bytes()},
                    path=integrity.sidecar(Path(tmp) / f.name))
            kind = d.name.split("-", 1)[0]
            if d.parent.name != "stages" or kind not in ("pretrain", "unlearn", "distill"):
                continue
            every = cfg[kind].get("checkpoint_every") or 0
            n_ckpt += s["steps"] // every if every else 0
            model_bytes = (d / "model" / "model.safetensors").stat().st_size
            if kind == "distill":
                distill_steps += s["steps"]
                if s["teacher_outputs"].get("built_chunks"):
                    built.append((s["steps"], s["teacher_outputs"]["built_chunks"]))
        chunks = sorted(run.glob("cache/*/chunk-*.safetensors"))
        # The bytes are in memory when a chunk is written or loaded: hashing is the cost.
        per_chunk = [_seconds(integrity.hash_bytes, c.read_bytes()) for c in chunks]
        steps_per_chunk = max(st / n for st, n in built) if built else 1.0
        reads = distill_steps / steps_per_chunk
        mean_chunk = statistics.mean(per_chunk) if per_chunk else 0.0
        cost["chunks"] = sum(per_chunk) + reads * mean_chunk
        state = Path(tmp) / "state.bin"
        state.write_bytes(os.urandom(3 * model_bytes))
        cost["checkpoints"] = n_ckpt * _seconds(integrity.hash_file, state)
    total = sum(cost.values())
    return {"run_dir": str(run), "stages": len(stages), "stage_wall_s": wall,
            "verifies_per_stage_assumed": verifies_per_stage, "chunks": len(chunks),
            "chunk_reads": reads, "checkpoints": n_ckpt, "seconds": cost,
            "integrity_s": total, "fraction_of_stage_wall": total / wall}


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one_run(config: str, overrides: list[str], out: Path, on: bool) -> dict[str, Any]:
    """One `undo run`; wall seconds and the CPU seconds of its process tree (less
    sensitive than wall time to other jobs taking the cores)."""
    env = {**os.environ, integrity.SWITCH: "on" if on else "off"}
    load0 = os.getloadavg()
    cpu0, t0 = _cpu_children(), time.perf_counter()
    subprocess.run([sys.executable, "-m", "undo.cli", "run", config, *overrides,
                    f"out_dir={out}", "progress=false"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return {"integrity": "on" if on else "off", "wall_s": time.perf_counter() - t0,
            "cpu_s": _cpu_children() - cpu0, "load_before": load0,
            "load_after": os.getloadavg()}


def side_by_side(config: str, overrides: list[str], pairs: int,
                 keep: Path) -> tuple[dict[str, Any], list[Path]]:
    runs, folders = [], []
    for i in range(pairs):
        for on in ((True, False) if i % 2 == 0 else (False, True)):  # ABBA: no arm always first
            out = keep / f"{i}-{'on' if on else 'off'}"
            runs.append(one_run(config, overrides, out, on))
            print(json.dumps(runs[-1]), flush=True)
            if on:
                (folder,) = [p.parent for p in out.glob("*/summary.json")]
                folders.append(folder)
    med = {k: {arm: statistics.median(r[k] for r in runs if r["integrity"] == arm)
               for arm in ("on", "off")} for k in ("wall_s", "cpu_s")}
    return {"config": config, "overrides": overrides, "pairs": pairs, "runs": runs,
            "median": med, "on_over_off": {k: m["on"] / m["off"] for k, m in med.items()}
            }, folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/arithmetic/smoke.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for every run (e.g. a smaller study)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--folder", action="append", default=[], type=Path,
                    help="a finished run folder to measure the instrumented fraction of")
    ap.add_argument("--replay", action="append", default=[], type=Path,
                    help="a finished run folder written before the count: its integrity "
                         "work done again on its files (see `replayed`)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "experiments" / "results" / "integrity_overhead.json")
    args = ap.parse_args()
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="undo-integrity-") as tmp:
        folders = list(args.folder)
        if args.pairs > 0:
            result["side_by_side"], on_runs = side_by_side(args.config, args.set, args.pairs,
                                                           Path(tmp))
            folders = on_runs + folders
        if folders:
            result["instrumented"] = [instrumented(f) for f in folders]
        if args.replay:
            result["replayed"] = [replayed(f) for f in args.replay]
    print(json.dumps(result, indent=1))
    # Each invocation replaces the parts it measured and keeps the others in --out.
    old = json.loads(args.out.read_text()) if args.out.is_file() else {}
    stamp = {"load_average_end": os.getloadavg(), "environment": environment()}
    for part, value in result.items():
        old[part] = value
        old.setdefault("measured", {})[part] = stamp
    old["note"] = ("measured on the shared 2-core machine with other engineers' jobs "
                   "running; see the load averages")
    write_json(args.out, old)


if __name__ == "__main__":
    main()
