"""The scale ladder's GPU rung: its plan with an H100 time ESTIMATE, and the one script
that runs it on a CUDA GPU and records the numbers.

    python experiments/gpu_scale.py --dry-run [--config CONFIG] [--mfu KIND=X ...]
        [--peak-tflops X] [key=value ...]
    python experiments/gpu_scale.py [--config CONFIG] [--out-dir runs/scale]
        [--out experiments/results/gpu_scale.json] [--timeout S] [key=value ...]

CONFIG defaults to configs/scale/arithmetic-gemma2-0.1b.yaml (the paper's 0.1B Gemma-2
shape with the authors' arithmetic recipe). `--dry-run` works anywhere (no GPU needed):
it prints `undo run CONFIG --dry-run`'s plan and an ESTIMATE of the time on one H100:
for each stage kind, its planned FLOPs (full budgets: early stops spend less) divided by
the GPU's dense bf16 peak (gpu_distill.PEAK_BF16, H100 SXM 989.4 TFLOP/s, or
`--peak-tflops`) times an assumed model-FLOPs utilisation (MFU). The MFUs are
assumptions, not measurements: the items are ~17 tokens long, so a step is many small
kernels (hidden 320), and an attack step (batch 32, ~540 tokens) is launch-bound; greedy
decoding for the evaluations is not counted in the FLOPs and is left out. The estimate
is printed at half and twice the MFUs too.

Without `--dry-run` it needs CUDA and refuses cleanly (exit 2, nothing run) without it;
the project never depends on a GPU. On a GPU it runs `undo run CONFIG out_dir=OUT
device=cuda [key=value ...]` (a cut run resumes from its stage folders when run again;
`--timeout S` stops it after S seconds), then writes OUT's numbers to `--out`: the GPU
(name, memory, bf16), versions, the command, wall time, each stage's duration from the
recorded schedule (runs.jsonl), the FLOPs each trained stage logged, the achieved
FLOP/s and MFU by kind beside the estimate's assumption, and the study's intervals.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from gpu_distill import peak_flops  # noqa: E402  (experiments/ sibling)
from scale_ladder import git_commit, planned  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "scale" / "arithmetic-gemma2-0.1b.yaml"
H100_PEAK = 989.4e12  # dense bf16, SXM (gpu_distill.PEAK_BF16)
# Assumed MFU per stage kind (see the docstring): not measured on this shape.
MFU = {"pretrain": 0.10, "unlearn": 0.05, "distill": 0.10, "oracle": 0.10, "attack": 0.01}


def gpu_estimate(p: dict[str, Any], peak: float, mfu: dict[str, float]) -> dict[str, Any]:
    by_kind = {k: f / (peak * mfu.get(k, mfu["attack"])) for k, f in p["planned_flops"].items()}
    total = sum(by_kind.values())
    return {"what": "ESTIMATE (not measured): planned FLOPs / (peak x assumed MFU), "
                    "stages one after another, evaluation decoding not counted",
            "peak_flops": peak, "mfu": mfu, "seconds_by_kind": by_kind,
            "seconds": total, "range_seconds": [total / 2, total * 2]}


def print_estimate(e: dict[str, Any]) -> None:
    print(f"ESTIMATE of the time on one H100 (bf16 dense peak {e['peak_flops'] / 1e12:.1f} "
          f"TFLOP/s x assumed MFU; not a measurement):")
    for k, s in e["seconds_by_kind"].items():
        print(f"  {k:<10} MFU {e['mfu'].get(k, e['mfu']['attack']):.2f}  {s / 60:7.1f} min")
    lo, hi = e["range_seconds"]
    print(f"  total      {e['seconds'] / 3600:.2f} h (at twice / half the MFUs: "
          f"{lo / 3600:.2f}-{hi / 3600:.2f} h), plus evaluation decoding")


def gpu_info() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "bf16": torch.cuda.is_bf16_supported(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "count": torch.cuda.device_count()}
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = None
    return info


def measured(run_dir: Path, peak: float) -> dict[str, Any]:
    """Per stage kind from the recorded schedule: tasks, seconds, the FLOPs the trained
    stages logged (their metrics.jsonl), achieved FLOP/s and MFU."""
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    runs = run_dir / "runs.jsonl"
    if not runs.is_file():
        return {**out, "why": "no runs.jsonl (the study did not reach its schedule)"}
    records = [json.loads(x) for x in runs.read_text().splitlines() if x.strip()]
    timed = [r["timing"] for r in records if r.get("timing")]
    if not timed:
        return {**out, "why": "no recorded schedule"}
    kinds: dict[str, dict[str, float]] = defaultdict(lambda: {"tasks": 0, "seconds": 0.0,
                                                             "flops": 0.0})
    for t in timed[-1]["schedule"]:
        k = kinds[t["kind"]]
        k["tasks"] += 1
        k["seconds"] += t["end_s"] - t["start_s"]
        metrics = run_dir / t.get("folder", "") / "metrics.jsonl"
        if t.get("folder") and metrics.is_file():
            last = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
            k["flops"] += max((r.get("flops", 0.0) for r in last), default=0.0)
    for k in kinds.values():
        if k["flops"] and k["seconds"]:
            k["flop_per_s"] = k["flops"] / k["seconds"]
            k["mfu"] = k["flop_per_s"] / peak
    return {**out, "graph_s": timed[-1].get("graph_s"), "by_kind": dict(kinds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--dry-run", action="store_true",
                    help="the plan and the H100 estimate only (any machine)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak (default: the GPU's, or an H100 SXM's)")
    ap.add_argument("--mfu", action="append", default=[], metavar="KIND=X",
                    help=f"assumed MFU of a stage kind (default: {MFU})")
    ap.add_argument("--out-dir", default="runs/scale")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gpu_scale.json")
    ap.add_argument("--timeout", type=float, default=None, help="stop the run after S s")
    a = ap.parse_args(argv)
    mfu = dict(MFU)
    for spec in a.mfu:
        k, _, v = spec.partition("=")
        mfu[k] = float(v)
    import torch

    cuda = torch.cuda.is_available()
    if not a.dry_run and not cuda:
        print("gpu_scale: needs a CUDA GPU (torch.cuda.is_available() is False here); "
              "nothing run. Its plan and H100 estimate: python experiments/gpu_scale.py "
              "--dry-run", file=sys.stderr)
        return 2
    peak = a.peak_tflops * 1e12 if a.peak_tflops else (
        (peak_flops(torch.cuda.get_device_name(0)) if cuda else None) or H100_PEAK)
    plan_cmd = ["undo", "run", str(a.config), "--dry-run", f"out_dir={a.out_dir}",
                *a.overrides]
    shown = subprocess.run(plan_cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    print(shown.stdout, end="")
    if shown.returncode:
        print(shown.stderr, file=sys.stderr, end="")
        return shown.returncode
    p = planned(a.config, [f"out_dir={a.out_dir}", *a.overrides])
    est = gpu_estimate(p, peak, mfu)
    print_estimate(est)
    if a.dry_run:
        return 0
    from undo.artifacts import environment, read_json, write_json

    gpu = gpu_info()
    cmd = ["undo", "run", str(a.config), f"out_dir={a.out_dir}", "device=cuda", *a.overrides]
    print("$", " ".join(cmd), flush=True)
    start = time.time()
    try:
        rc = subprocess.run(cmd, cwd=ROOT, check=False, timeout=a.timeout).returncode
        timed_out = False
    except subprocess.TimeoutExpired:
        rc, timed_out = None, True
    wall = time.time() - start
    run_dir = (ROOT / a.out_dir if not Path(a.out_dir).is_absolute()
               else Path(a.out_dir)) / p["name"]
    summary = run_dir / "summary.json"
    s = read_json(summary) if summary.is_file() else None
    write_json(a.out, {
        "what": "the scale ladder's GPU rung, run on one GPU: wall time, per-kind durations "
                "and achieved MFU, beside the dry run's ESTIMATE",
        "command": " ".join(cmd), "returncode": rc, "timed_out": timed_out,
        "wall_s": round(wall, 1), "gpu": gpu, "git": git_commit(), "plan": p,
        "estimate": est, "measured": measured(run_dir, peak),
        "finished": s is not None,
        "intervals": s["intervals"] if s else None,
        "study_wall_time_s": s.get("wall_time_s") if s else None,
        "environment": environment()})
    print(f"wrote {a.out} (exit {rc}{', timed out' if timed_out else ''}, "
          f"{wall / 60:.1f} min)")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
