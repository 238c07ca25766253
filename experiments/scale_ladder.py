"""The scale ladder (issue 35): one study at several model sizes, read back as one JSON
and one figure.

    python experiments/scale_ladder.py plan [RUNG ...]
    python experiments/scale_ladder.py run RUNG [key=value ...] [--out-dir runs/scale]
    python experiments/scale_ladder.py build [--ladder arithmetic] [RUNG=PATH ...]
        [--out-dir runs/scale] [--out JSON] [--figure STEM]

A rung is a config of configs/scale/ named by its stem (`arithmetic-medium`); its rules
(pretraining length, learning rates) are in each config's header and docs/scale.md.

`plan` prints each rung's parameters, its planned FLOPs by stage kind (the dry run's,
`undo.study.plan.plan`: full budgets) and an ESTIMATE of its wall time on this 2-core
CPU: planned FLOPs x a per-kind seconds-per-planned-FLOP rate measured on the default
study (experiments/results/study_profile_*.json; language: language_real_alone.json),
divided by the rung's workers. That rate folds in early stops, evaluation and this CPU's
FLOP rate at the tiny shape; a larger rung's matmuls run at most at the core's float32
peak, which tiny's largest already reaches (docs/scale.md), so the estimate is a
scaling, not a measurement.

`run` runs one rung (`undo run configs/scale/RUNG.yaml out_dir=OUT [key=value ...]`, e.g.
`study.run_seeds=[0,1]`) and writes what the run folder does not hold beside it,
OUT/<name>.ladder-run.json: the command, its exit status and wall time, the CPU model,
its bfloat16 instructions, the core count and the load before and after.

`build` reads finished rungs, each a run folder or a pooled file (`undo pool --out`, or
the OUT/<name>-pooled.json of `study.run_seeds`), by default every rung of `--ladder`
found under `--out-dir`, and writes one JSON and one figure (PNG and SVG): per rung
(a) robustness against alpha per attack at the largest budget, (b) each arm's total
compute as a fraction of the gold standard's FLOPs against parameters, (c) the oracle
contrast (worst-case forget metric of the gold standard distilled into the base model
and into a random init), (d) the base and gold pretraining curves with the plateau
check. Every interval is the summary's own (`intervals`) or the pooled file's; nothing
is resampled here. Per run: commit, wall time and load from the run folder (summary.json,
runs.jsonl) and the command and machine from its ladder-run.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from undo.analysis.arms import Arm, ModelKind
from undo.artifacts import environment, read_json, write_json
from undo.config import load_config, run_config
from undo.configlib import ConfigError
from undo.report import views
from undo.runtime import BF16_CPU_FLAGS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCALE = ROOT / "configs" / "scale"
RESULTS = HERE / "results"
SIZES = ("tiny", "small", "medium", "large", "gemma2-0.1b")
LADDERS = {"arithmetic": "arithmetic-{size}", "language": "language-{size}",
           "language-filtered": "language-{size}-filtered"}
# The plateau check of the pretraining-length rule (docs/scale.md): the retain metric
# moved by at most this much over the last 20% of steps (accuracy: absolute; CE: relative).
PLATEAU_ACC, PLATEAU_CE_REL, PLATEAU_TAIL = 0.01, 0.01, 0.2

# Where the per-kind rates of `plan` come from: a measured study profile (worker-seconds
# by kind, experiments/study_profile.py) and the config it ran, planned with this code.
RATE_SOURCES = {
    "arithmetic": [
        ("study_profile_no_oracles.json", "configs/arithmetic/tiny.yaml", [],
         ("pretrain", "unlearn", "distill", "attack")),
        ("study_profile_attack_bf16.json", "configs/arithmetic/tiny.yaml",
         ["study.oracles=true"], ("oracle",)),
    ],
}
# The language setting has no per-kind profile: its whole study, alone, end to end.
LANGUAGE_RATE = ("language_real_alone.json", "configs/language/tiny.yaml")


# ---------------------------------------------------------------- plan and estimate

def rung_config(rung: str) -> Path:
    path = SCALE / f"{rung}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in SCALE.glob("*.yaml")))
        raise ConfigError(f"no rung {rung!r} in {SCALE}; valid: {have}")
    return path


def planned(config: Path | str, overrides: list[str] | None = None) -> dict[str, Any]:
    """The dry run's numbers of one config: parameters and planned FLOPs by stage kind
    (every stage to run, at its full budget)."""
    from undo.study.plan import plan

    cfg = load_config(config, overrides or [])
    rows, shape, _ = plan(cfg)
    flops: dict[str, float] = defaultdict(float)
    for r in rows:
        flops[r.kind] += r.flops or 0.0
    return {"config": str(config), "overrides": overrides or [], "name": cfg.name,
            "benchmark": cfg.data.benchmark, "preset": cfg.model.preset,
            "params": shape.params if shape else None,
            "matmul_params": shape.matmul_params if shape else None,
            "stages": len(rows), "workers": cfg.study.workers,
            "planned_flops": dict(flops), "planned_flops_total": sum(flops.values())}


def rates(benchmark: str) -> dict[str, Any]:
    """Seconds of one worker per planned FLOP, by stage kind, from measured studies."""
    if benchmark != "arithmetic":
        result, config = LANGUAGE_RATE
        measured = read_json(RESULTS / result)
        p = planned(ROOT / config)
        # The study's wall time on its 2 workers, taken as work-bound (both busy).
        per = measured["wall_time_s"] * p["workers"] / p["planned_flops_total"]
        return {"by_kind": None, "whole_study": per,
                "basis": f"{result}: {measured['wall_time_s']:.0f} s of {config} "
                         f"(alone, from a fresh clone), taken as work-bound on "
                         f"{p['workers']} workers, over its {p['planned_flops_total']:.3g} "
                         f"planned FLOPs (this code's plan)"}
    by_kind, basis = {}, []
    for result, config, overrides, kinds in RATE_SOURCES["arithmetic"]:
        prof = read_json(RESULTS / result)
        p = planned(ROOT / config, overrides)
        for k in kinds:
            by_kind[k] = prof["by_kind"][k]["duration_s"] / p["planned_flops"][k]
        basis.append(f"{result} ({', '.join(kinds)}: worker-s by kind of {config} "
                     f"{' '.join(overrides)})".replace(" )", ")"))
    return {"by_kind": by_kind, "whole_study": None, "basis": "; ".join(basis)}


def estimate(p: dict[str, Any], r: dict[str, Any]) -> float:
    """Estimated wall seconds on this CPU: planned FLOPs x measured rates / workers."""
    if r["by_kind"] is None:
        return p["planned_flops_total"] * r["whole_study"] / p["workers"]
    # A kind the profile lacks (the search's trials) at the attacks' rate.
    return sum(f * r["by_kind"].get(k, r["by_kind"]["attack"])
               for k, f in p["planned_flops"].items()) / p["workers"]


def cmd_plan(a: argparse.Namespace) -> None:
    rungs = a.rungs or sorted(p.stem for p in SCALE.glob("*.yaml"))
    cache: dict[str, dict] = {}
    out = []
    print(f"{'rung':<32}{'params':>8}{'planned FLOPs':>15}{'est. wall (this CPU)':>22}")
    for rung in rungs:
        p = planned(rung_config(rung))
        bench = "arithmetic" if p["benchmark"] == "arithmetic" else "language"
        r = cache.setdefault(bench, rates(p["benchmark"]))
        est = estimate(p, r)
        out.append({**p, "rung": rung, "estimate_s": est, "estimate_basis": r["basis"]})
        print(f"{rung:<32}{p['params'] / 1e6:>7.2f}M{p['planned_flops_total']:>15.3g}"
              f"{est / 3600:>19.2f} h")
    print("ESTIMATES, not measurements: the dry run's planned FLOPs (full budgets) x the "
          "seconds per planned FLOP measured by kind on the default study; early stops, "
          "evaluation and the FLOP rate assumed to scale as at tiny")
    for b, r in cache.items():
        print(f"  rate basis ({b}): {r['basis']}")
    if a.out:
        write_json(a.out, {"what": "planned FLOPs and ESTIMATED wall time per rung on this "
                                   "CPU (not measured)", "machine": machine(),
                           "rungs": out, "environment": environment()})
        print(f"wrote {a.out}")


# ---------------------------------------------------------------- run

def machine() -> dict[str, Any]:
    """This machine: CPU model, bfloat16 instructions, cores, load."""
    info = {"cpu_model": None, "bf16_flags": [], "cpus": os.cpu_count(),
            "load_1_5_15": [round(x, 2) for x in os.getloadavg()]}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if line.startswith("model name") and info["cpu_model"] is None:
            info["cpu_model"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            words = set(line.split(":", 1)[1].split())
            info["bf16_flags"] = [f for f in BF16_CPU_FLAGS if f in words]
            break
    info["bf16"] = bool(info["bf16_flags"])
    return info


def git_commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def cmd_run(a: argparse.Namespace) -> int:
    config = rung_config(a.rung)
    cfg = load_config(config, [*a.overrides, f"out_dir={a.out_dir}"])
    cmd = ["undo", "run", str(config.relative_to(ROOT)), f"out_dir={a.out_dir}",
           *a.overrides]
    before = machine()
    start = time.time()
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    wall = time.time() - start
    record = {"rung": a.rung, "name": cfg.name, "command": " ".join(cmd),
              "cwd": str(ROOT), "returncode": rc, "wall_s": round(wall, 1),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(start)),
              "machine": before, "load_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
              "git": git_commit()}
    path = Path(a.out_dir) if Path(a.out_dir).is_absolute() else ROOT / a.out_dir
    write_json(path / f"{cfg.name}.ladder-run.json", record)
    print(f"wrote {path / f'{cfg.name}.ladder-run.json'} (exit {rc}, {wall / 60:.1f} min)")
    return rc


# ---------------------------------------------------------------- build

def _curve(stage: Path, metric: str) -> list[list[float]]:
    out = []
    path = stage / "metrics.jsonl"
    if not path.is_file():
        return out
    import json

    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if metric in (rec.get("eval") or {}):
            out.append([rec["step"], rec["eval"][metric]])
    return out


def plateau(curve: list[list[float]], lower_is_better: bool) -> dict[str, Any]:
    """The pretraining-length rule's check: the retain metric moved by at most
    PLATEAU_ACC (accuracy) or PLATEAU_CE_REL x its value (CE) over the last
    PLATEAU_TAIL of steps, in the improving direction."""
    if len(curve) < 2:
        return {"plateaued": None, "why": "fewer than two evaluations"}
    last_step, last = curve[-1]
    ref = [c for c in curve if c[0] <= (1 - PLATEAU_TAIL) * last_step] or curve[:1]
    ref_step, ref_value = ref[-1]
    gain = (ref_value - last) if lower_is_better else (last - ref_value)
    tol = PLATEAU_CE_REL * abs(ref_value) if lower_is_better else PLATEAU_ACC
    return {"plateaued": gain <= tol, "from_step": ref_step, "to_step": last_step,
            "gain": gain, "tolerance": tol}


def pretraining(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    metric = summary["retain_metric"]["name"]
    lower = summary["retain_metric"].get("higher_is_better") is False
    out: dict[str, Any] = {"metric": metric, "lower_is_better": lower}
    for m in summary["models"]:
        if m["kind"] in ("base", "gold") and m.get("stage_dir"):
            curve = _curve(run_dir / "stages" / Path(m["stage_dir"]).name, metric)
            out[m["kind"]] = {"curve": curve, **plateau(curve, lower)}
    return out


def run_meta(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """What the run folder and its ladder-run.json say about how and where it ran."""
    import json

    env = summary.get("environment", {})
    git = env.get("undo", {}).get("git", {})
    meta: dict[str, Any] = {
        "run_dir": str(run_dir), "run_seed": summary["config"]["seed"],
        "commit": git.get("commit"), "dirty": git.get("dirty"),
        "platform": env.get("platform"), "torch_threads": env.get("torch_threads"),
        "device": env.get("device"), "study_wall_time_s": summary.get("wall_time_s"),
        "workers": summary["config"]["study"]["workers"]}
    runs = run_dir / "runs.jsonl"
    if runs.is_file():
        records = [json.loads(x) for x in runs.read_text().splitlines() if x.strip()]
        timed = [r for r in records if r.get("timing")]
        if timed:
            last = timed[-1]["timing"]
            loads = [t["load_1min"] for t in last.get("schedule", []) if "load_1min" in t]
            meta["graph_s"] = last.get("graph_s")
            meta["load_1min_at_task_ends"] = ({"min": min(loads), "mean": round(
                sum(loads) / len(loads), 2), "max": max(loads)} if loads else None)
        meta["runs_recorded"] = len(records)
        meta["finished"] = records[-1].get("time") if records else None
    base = re.sub(r"-seed\d+$", "", run_dir.name)
    for name in dict.fromkeys([run_dir.name, base]):
        side = run_dir.parent / f"{name}.ladder-run.json"
        if side.is_file():
            rec = read_json(side)
            meta.update(command=rec["command"], machine=rec["machine"],
                        command_wall_s=rec["wall_s"], command_returncode=rec["returncode"],
                        load_1_5_15_after=rec.get("load_1_5_15_after"),
                        recorded_by=str(side))
            break
    else:
        meta.update(command=None, machine=None,
                    recorded_by="no ladder-run.json beside the run folder: not run with "
                                "`scale_ladder.py run` (command and machine not recorded)")
    return meta


def oracle_contrast(summary: dict[str, Any]) -> dict[str, Any]:
    """Per attack at the largest budget: each oracle's worst case with its interval, the
    references', and whether the two oracles' intervals overlap."""
    budget = str(views.largest_budget(summary))
    worse = summary["metric"]["higher_is_worse"]
    out = {}
    for attack, by_budget in summary["intervals"]["attacks"].items():
        wc = by_budget.get(budget, {}).get("worst_case", {})
        b, r = wc.get("oracle-base"), wc.get("oracle-random")
        if not b or not r or b.get("point") is None or r.get("point") is None:
            continue
        diff = (b["point"] - r["point"]) * (1 if worse else -1)
        overlap = None if b.get("lo") is None or r.get("lo") is None else \
            b["lo"] <= r["hi"] and r["lo"] <= b["hi"]
        out[attack] = {"budget": int(budget), "oracle-base": b, "oracle-random": r,
                       "gold": wc.get("gold"), "unlearn-only": wc.get("unlearn-only"),
                       "base_minus_random": diff, "within_noise": overlap,
                       "sign": "positive: the base-model oracle relearns more"}
    return out


def _alpha_of(label: str) -> float | None:
    arm = Arm.parse(label)
    return arm.alpha if arm.kind is ModelKind.UNDO else None


def _sorted_arms(arms: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(arms.items(), key=lambda kv: Arm.parse(kv[0]).sort_key))


def summary_points(summary: dict[str, Any]) -> tuple[dict, dict]:
    """(robustness[attack] -> {arm: interval} at the largest budget, compute[arm])."""
    budget = str(views.largest_budget(summary))
    iv = summary["intervals"]
    rob = {attack: {"budget": int(budget), "arms": _sorted_arms(
        by_budget[budget]["robustness"])} for attack, by_budget in iv["attacks"].items()
        if budget in by_budget}
    return rob, _sorted_arms(iv["compute"])


def pooled_points(pooled: dict[str, Any]) -> tuple[dict, dict]:
    rob = {}
    for attack, by_budget in pooled["attacks"].items():
        budget = max(by_budget, key=int)
        rob[attack] = {"budget": int(budget),
                       "arms": _sorted_arms(by_budget[budget]["robustness"])}
    return rob, _sorted_arms(pooled["compute"])


def read_rung(rung: str, path: Path) -> dict[str, Any]:
    """One rung from a finished run folder or a pooled file."""
    if path.is_dir():
        if not (path / "summary.json").is_file():
            raise ConfigError(f"{rung}: {path} has no summary.json (not a finished study)")
        run_dirs, pooled = [path], None
    elif path.is_file():
        pooled = read_json(path)
        if "run_seeds" not in pooled or "attacks" not in pooled:
            raise ConfigError(f"{rung}: {path} is not a pooled study (undo pool --out)")
        run_dirs = [Path(d) for d in pooled["runs"]]
        run_dirs = [d if d.is_absolute() or d.exists() else path.parent / d.name
                    for d in run_dirs]
    else:
        raise ConfigError(f"{rung}: {path} not found")
    summaries = [read_json(d / "summary.json") for d in run_dirs if
                 (d / "summary.json").is_file()]
    if not summaries:
        raise ConfigError(f"{rung}: none of the pooled runs' folders is here ({run_dirs})")
    first = summaries[0]
    rob, comp = summary_points(first) if pooled is None else pooled_points(pooled)
    from undo.study.gold import model_shape

    cfg = run_config(first["config"])
    shape, _ = model_shape(cfg, local_only=True)
    return {
        "rung": rung, "source": str(path), "pooled": pooled is not None,
        "run_seeds": [s["config"]["seed"] for s in summaries] if pooled is None
        else pooled["run_seeds"],
        "name": first["config"]["name"], "benchmark": first["benchmark"],
        "preset": first["config"]["model"]["preset"],
        "params": shape.params if shape else None,
        "matmul_params": shape.matmul_params if shape else None,
        "metric": first["metric"], "retain_metric": first["retain_metric"],
        "distill_inputs": first["config"]["distill"].get("inputs", "mix"),
        "robustness": rob,
        "compute": comp,
        "oracle_contrast": [{"run_seed": s["config"]["seed"], **oracle_contrast(s)}
                            for s in summaries],
        "pretraining": [{"run_seed": s["config"]["seed"], **pretraining(d, s)}
                        for d, s in zip(run_dirs, summaries, strict=False)],
        "runs": [run_meta(d, s) for d, s in zip(run_dirs, summaries, strict=False)],
    }


def discover(ladder: str, out_dir: Path) -> list[tuple[str, Path]]:
    """Every rung of `ladder` finished under out_dir: its pooled file, else its folder."""
    found = []
    for size in SIZES:
        rung = LADDERS[ladder].format(size=size)
        if not (SCALE / f"{rung}.yaml").is_file():
            continue
        name = load_config(SCALE / f"{rung}.yaml").name
        pooled, folder = out_dir / f"{name}-pooled.json", out_dir / name
        if pooled.is_file():
            found.append((rung, pooled))
        elif (folder / "summary.json").is_file():
            found.append((rung, folder))
    return found


def figure(rungs: list[dict[str, Any]], stem: Path) -> list[str]:
    """The ladder's four panels, one colour per rung; error bars are 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(12, 9))
    colours = plt.get_cmap("viridis")([i / max(1, len(rungs) - 1) * 0.85
                                       for i in range(len(rungs))])

    def err(iv: dict) -> tuple[float, list[list[float]]] | None:
        if not iv or iv.get("point") is None:
            return None
        p = iv["point"]
        lo, hi = (iv["lo"], iv["hi"]) if iv.get("lo") is not None else (p, p)
        return p, [[p - lo], [hi - p]]

    for i, (r, c) in enumerate(zip(rungs, colours, strict=True)):
        size = f"{r['rung']} ({r['params'] / 1e6:.2g}M)" if r["params"] else r["rung"]
        for j, (attack, rob) in enumerate(r["robustness"].items()):
            xs, ys, es = [], [], [[], []]
            for label, iv in rob["arms"].items():
                e = err(iv)
                if e is None:
                    continue
                alpha = _alpha_of(label)
                x = 1.0 if alpha is None else alpha  # Unlearn-and-Distill at alpha 1
                xs.append(x + 0.008 * (i - len(rungs) / 2))
                ys.append(e[0])
                es[0] += e[1][0]
                es[1] += e[1][1]
            if xs:
                ax[0, 0].errorbar(xs, ys, yerr=es, color=c, marker="o" if j == 0 else "s",
                                  ls="-" if j == 0 else "--", capsize=3,
                                  label=f"{size}, {attack}")
        for label, comp in r["compute"].items():
            e = err(comp.get("total_fraction_of_gold_flops"))
            if e and r["params"]:
                ax[0, 1].errorbar([r["params"]], [e[0]], yerr=e[1], color=c, capsize=3,
                                  marker="o" if _alpha_of(label) is not None else "*")
                ax[0, 1].annotate(label.replace("Unlearn-and-Distill", "U&D"),
                                  (r["params"], e[0]), fontsize=7, xytext=(4, 0),
                                  textcoords="offset points")
        for run in r["oracle_contrast"]:
            for j, name in enumerate(("oracle-base", "oracle-random", "gold",
                                      "unlearn-only")):
                first = next(iter(v for k, v in run.items() if k != "run_seed"), None)
                e = err(first.get(name)) if first else None
                if e and r["params"]:
                    ax[1, 0].errorbar([r["params"] * (1 + 0.06 * (j - 1.5))], [e[0]],
                                      yerr=e[1], color=c, capsize=3,
                                      marker="os^v"[j], label=name if i == 0 else None)
        for run in r["pretraining"]:
            for kind, ls in (("base", "-"), ("gold", "--")):
                curve = run.get(kind, {}).get("curve") or []
                if curve:
                    ax[1, 1].plot([s for s, _ in curve], [v for _, v in curve], ls=ls,
                                  color=c, label=f"{size} {kind}" if run is r[
                                      "pretraining"][0] else None)
    metric = rungs[0]["metric"]["label"] if rungs else ""
    retain = rungs[0]["retain_metric"]["label"] if rungs else ""
    ax[0, 0].set(xlabel="α (Unlearn-and-Distill at 1.0)", ylabel="robustness",
                 title="(a) robustness against α, largest budget")
    ax[0, 0].axhline(1.0, color="grey", lw=0.5)
    ax[0, 1].set(xscale="log", xlabel="parameters", ylabel="total FLOPs / gold's",
                 title="(b) compute fraction against size")
    ax[1, 0].set(xscale="log", xlabel="parameters", ylabel=f"worst-case {metric}",
                 title="(c) oracle contrast (first attack, largest budget)")
    ax[1, 1].set(xlabel="pretraining step", ylabel=retain,
                 title="(d) pretraining curves (base solid, gold dashed)")
    for a in ax.flat:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.suptitle("scale ladder: bars are 95% intervals (the summaries' own)")
    fig.tight_layout()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [str(stem.with_suffix(".png")), str(stem.with_suffix(".svg"))]
    for p in paths:
        fig.savefig(p, dpi=120)
    plt.close(fig)
    return paths


def cmd_build(a: argparse.Namespace) -> int:
    if a.rungs:
        given = []
        for spec in a.rungs:
            rung, sep, path = spec.partition("=")
            if not sep:
                raise ConfigError(f"rung {spec!r}: valid: RUNG=PATH (a run folder or a "
                                  f"pooled file)")
            given.append((rung, Path(path)))
    else:
        given = discover(a.ladder, Path(a.out_dir))
    if len(given) < 2:
        raise ConfigError(f"a ladder needs at least two finished rungs, found "
                          f"{[g[0] for g in given]} (ladder {a.ladder!r} under {a.out_dir})")
    rungs = [read_rung(rung, path) for rung, path in given]
    kinds = {(r["benchmark"], r["metric"]["name"]) for r in rungs}
    if len(kinds) > 1:
        raise ConfigError(f"rungs of one ladder share benchmark and metric, got "
                          f"{sorted(kinds)}; valid: one ladder per setting (--ladder)")
    rungs.sort(key=lambda r: r["params"] or 0)
    out = Path(a.out or RESULTS / f"scale_ladder_{a.ladder}.json")
    stem = Path(a.figure) if a.figure else out.with_suffix("")
    files = figure(rungs, stem)
    for r in rungs:
        print(f"{r['rung']} ({r['params'] / 1e6:.2f}M parameters, run seeds "
              f"{r['run_seeds']}{', pooled' if r['pooled'] else ''})")
        for attack, rob in r["robustness"].items():
            cells = "  ".join(f"{k} {views.fmt_ci(v)}" for k, v in rob["arms"].items())
            print(f"  R@{rob['budget']} {attack}: {cells}")
        for k, v in r["compute"].items():
            print(f"  {k}: total FLOPs of gold's "
                  f"{views.fmt_ci(v.get('total_fraction_of_gold_flops'), pct=True)}")
        for run in r["oracle_contrast"]:
            for attack, o in run.items():
                if attack != "run_seed":
                    print(f"  oracles ({attack}, seed {run['run_seed']}): base "
                          f"{views.fmt_ci(o['oracle-base'])} random "
                          f"{views.fmt_ci(o['oracle-random'])}"
                          f"{' (within noise)' if o['within_noise'] else ''}")
    write_json(out, {
        "what": "the scale ladder: per rung, robustness at the largest attack budget per "
                "arm and attack, total compute as a fraction of the gold standard's, the "
                "oracle contrast, the pretraining curves with the plateau check, and where "
                "and how each run ran; every interval the summary's or pooled file's own",
        "ladder": a.ladder, "plateau_rule": {"accuracy_abs": PLATEAU_ACC,
                                             "ce_rel": PLATEAU_CE_REL,
                                             "tail_fraction": PLATEAU_TAIL},
        "figure": files, "rungs": rungs, "built_on": machine(),
        "environment": environment()})
    print(f"wrote {out} and {', '.join(files)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan", help="planned FLOPs and estimated CPU wall time per rung")
    p.add_argument("rungs", nargs="*")
    p.add_argument("--out", type=Path, default=None)
    r = sub.add_parser("run", help="run one rung and record its command and machine")
    r.add_argument("rung")
    r.add_argument("overrides", nargs="*")
    r.add_argument("--out-dir", default="runs/scale")
    b = sub.add_parser("build", help="the ladder's JSON and figure from finished rungs")
    b.add_argument("rungs", nargs="*", help="RUNG=PATH (run folder or pooled file)")
    b.add_argument("--ladder", default="arithmetic", choices=sorted(LADDERS))
    b.add_argument("--out-dir", default=str(ROOT / "runs" / "scale"))
    b.add_argument("--out", default=None)
    b.add_argument("--figure", default=None, help="figure path without suffix")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "plan":
            cmd_plan(a)
            return 0
        if a.cmd == "run":
            return cmd_run(a)
        return cmd_build(a)
    except ConfigError as e:
        print(f"scale_ladder: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
