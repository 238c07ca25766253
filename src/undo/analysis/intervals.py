"""Error bars for the study's worst cases, robustness and ratios (issue 21).

Pure functions over relearn.json runs (numpy, no torch, no I/O). Three sources of noise
are resampled together, percentile bootstrap, 95%:

- evaluation items: every run stores its forget metric per item at each budget
  (`units`: metric = Σ num / Σ den, undo.attacks.grid.metric_units); one resample of the
  items is shared by every model of a replicate (they are scored on the same items);
- attack seeds: within each model's own seeds;
- model seeds: the arm's students (UNDO at one α, Unlearn-and-Distill). Student seed s
  was attacked with attack seeds shifted by s, and the references (gold, unlearn-only)
  with every student's attack seeds, so a resampled student is scaled by the reference
  runs of *its* attack seeds: the references' noise is inside every interval.

Selection bias: the worst learning rate is chosen on one half of the eval items (even
positions) and the worst case reported on the other half (odd positions), so the value
is not the best-looking of several LRs on the items it reports.

Arm robustness is a ratio of means over the (resampled) students:
R = (mean P − mean U) / (mean G − mean U), each mean over the students' attack seeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .robustness import budget_key, by_lr

Run = Mapping[str, Any]
LEVEL = 0.95
REPLICATES = 2000
MAX_UNDEFINED = 0.05  # more undefined replicates than this: no interval


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection half, report half): even and odd positions. Eval sets list items group
    by group, so both halves cover every (operation, format) alike."""
    idx = np.arange(n)
    return idx[0::2], idx[1::2]


def _units(run: Run, budget: int) -> tuple[np.ndarray, np.ndarray] | None:
    u = (run.get("units") or {}).get(budget_key(budget))
    if u is None:
        return None
    num = np.asarray(u["num"], dtype=float)
    den = np.asarray(u["den"], dtype=float) if "den" in u else np.ones_like(num)
    return num, den


def value(num: np.ndarray, den: np.ndarray, idx: np.ndarray) -> float:
    """The metric on the items `idx` (a ratio of sums; NaN without items)."""
    d = den[idx].sum()
    return float(num[idx].sum() / d) if d > 0 else math.nan


@dataclass
class Attacked:
    """One model's runs at one budget, at the LR chosen on the selection half: per
    attack seed, the per-item (num, den) of the report half."""

    lr: float
    seeds: dict[int, tuple[np.ndarray, np.ndarray]]

    def point(self, seeds: Sequence[int] | None = None, idx: np.ndarray | None = None) -> float:
        """Mean over `seeds` (all by default) of the metric on report-half items `idx`."""
        chosen = list(self.seeds) if seeds is None else list(seeds)
        vals = []
        for s in chosen:
            num, den = self.seeds[s]
            vals.append(value(num, den, np.arange(len(num)) if idx is None else idx))
        return float(np.mean(vals))


def attacked(runs: Sequence[Run], budget: int, higher_is_worse: bool) -> Attacked | None:
    """The worst LR on the selection half (seed-mean; ties to the larger LR), its runs
    on the report half. None when the runs carry no per-item units (older caches)."""
    groups = by_lr(runs)  # largest LR first
    best: tuple[float, float] | None = None
    for lr, group in groups.items():
        vals = []
        for r in group:
            u = _units(r, budget)
            if u is None:
                return None
            sel, _ = halves(len(u[0]))
            vals.append(value(*u, sel))
        v = float(np.mean(vals))
        if best is None or (v > best[1] if higher_is_worse else v < best[1]):
            best = (lr, v)
    if best is None:
        return None
    out = {}
    for r in groups[best[0]]:
        num, den = _units(r, budget)  # type: ignore[misc]
        _, rep = halves(len(num))
        out[int(r["seed"])] = (num[rep], den[rep])
    return Attacked(best[0], out)


@dataclass
class Interval:
    point: float | None
    lo: float | None
    hi: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"point": self.point, "lo": self.lo, "hi": self.hi}


def _interval(point: float | None, reps: list[float]) -> Interval:
    finite = [r for r in reps if r is not None and math.isfinite(r)]
    if point is None or not math.isfinite(point) or \
            len(finite) < (1 - MAX_UNDEFINED) * len(reps):
        return Interval(point if point is not None and math.isfinite(point) else None,
                        None, None)
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(finite, [a, 1 - a])
    return Interval(point, float(lo), float(hi))


def _ratio(num: float, den: float, tol: float) -> float:
    return num / den if abs(den) > tol else math.nan


@dataclass
class Study:
    """Everything one attack measured at one budget, ready to resample: the references
    and the arms (name -> students), each model `Attacked`."""

    gold: Attacked | None
    unlearn_only: Attacked | None
    arms: dict[str, list[Attacked]]
    singles: dict[str, Attacked]  # models over no seeds (oracles): worst case only
    n_items: int


def _draw(rng: np.random.Generator, st: Study) -> tuple[np.ndarray, dict]:
    idx = rng.integers(0, st.n_items, st.n_items)
    picks = {name: [students[i] for i in rng.integers(0, len(students), len(students))]
             for name, students in st.arms.items()}
    return idx, picks


def _seeds_of(m: Attacked, rng: np.random.Generator | None) -> list[int]:
    seeds = list(m.seeds)
    if rng is None or len(seeds) == 1:
        return seeds
    return [seeds[i] for i in rng.integers(0, len(seeds), len(seeds))]


def _arm_robustness(students: Sequence[Attacked], gold: Attacked, uo: Attacked,
                    idx: np.ndarray | None, rng: np.random.Generator | None,
                    tol: float) -> float:
    p, u, g = [], [], []
    for m in students:
        seeds = _seeds_of(m, rng)
        p.append(m.point(seeds, idx))
        u.append(uo.point(seeds, idx))
        g.append(gold.point(seeds, idx))
    pu, uu, gg = float(np.mean(p)), float(np.mean(u)), float(np.mean(g))
    return _ratio(pu - uu, gg - uu, tol)


def _ref_point(m: Attacked, idx: np.ndarray | None, rng: np.random.Generator | None) -> float:
    return m.point(_seeds_of(m, rng), idx)


def intervals(st: Study, tol: float, seed: int = 0,
              replicates: int = REPLICATES) -> dict[str, Any]:
    """Point values and 95% intervals: each reference's and model's worst case, the
    unlearn-only / gold ratio of worst cases, and every arm's robustness."""
    for name, students in st.arms.items():
        for ref, m in (("gold", st.gold), ("unlearn-only", st.unlearn_only)):
            missing = sorted({s for x in students for s in x.seeds} - set(m.seeds)) \
                if m is not None else []
            if missing:
                raise ValueError(f"{ref} was not attacked with attack seeds {missing} of "
                                 f"{name}: every reference must be attacked with each "
                                 f"student's attack seeds (undo.study.graph.attack_config)")
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"worst_case": {}, "robustness": {}}
    refs = {"gold": st.gold, "unlearn-only": st.unlearn_only, **st.singles}
    reps_w: dict[str, list[float]] = {k: [] for k, m in refs.items() if m is not None}
    reps_arm_w: dict[str, list[float]] = {k: [] for k in st.arms}
    reps_r: dict[str, list[float]] = {k: [] for k in st.arms}
    reps_ratio: list[float] = []
    both = st.gold is not None and st.unlearn_only is not None
    for _ in range(replicates):
        idx, picks = _draw(rng, st)
        for k in reps_w:
            reps_w[k].append(_ref_point(refs[k], idx, rng))  # type: ignore[arg-type]
        for name, students in picks.items():
            reps_arm_w[name].append(float(np.mean([m.point(_seeds_of(m, rng), idx)
                                                   for m in students])))
            if both:
                reps_r[name].append(_arm_robustness(students, st.gold, st.unlearn_only,
                                                    idx, rng, tol))
        if both:
            g = st.gold.point(None, idx)  # type: ignore[union-attr]
            reps_ratio.append(_ratio(st.unlearn_only.point(None, idx), g, 0.0))  # type: ignore[union-attr]
    for k, m in refs.items():
        if m is not None:
            out["worst_case"][k] = {**_interval(m.point(), reps_w[k]).to_dict(), "lr": m.lr}
    for name, students in st.arms.items():
        out["worst_case"][name] = _interval(
            float(np.mean([m.point() for m in students])), reps_arm_w[name]).to_dict()
        if both:
            point = _arm_robustness(students, st.gold, st.unlearn_only, None, None, tol)  # type: ignore[arg-type]
            out["robustness"][name] = _interval(point, reps_r[name]).to_dict()
    if both:
        point = _ratio(st.unlearn_only.point(), st.gold.point(), 0.0)  # type: ignore[union-attr]
        out["unlearn_only_over_gold"] = _interval(point, reps_ratio).to_dict()
    out["method"] = {"level": LEVEL, "replicates": replicates, "resampled": [
        "eval items (report half)", "attack seeds", "model seeds"],
        "lr_selection": "worst LR chosen on the even-position eval items, reported on "
                        "the odd-position ones"}
    return out


def pooled(studies: Sequence[Study], tol: float, seed: int = 0,
           replicates: int = REPLICATES) -> dict[str, Any]:
    """Arm robustness over several runs of one study that differ by the run seed (each its
    own base model, gold standard and teacher: a source of noise one run's `intervals`
    cannot see). The point is the mean over runs of each run's robustness; a replicate
    resamples the runs, then inside each drawn run its items, students and attack seeds
    as `intervals` does. Arms that some run lacks, or that a run cannot score (no
    references), are left out."""
    if not studies:
        raise ValueError("pooled: no runs")
    arms = [a for a in studies[0].arms
            if all(a in st.arms and st.gold and st.unlearn_only for st in studies)]
    rng = np.random.default_rng(seed)
    reps: dict[str, list[float]] = {a: [] for a in arms}
    for _ in range(replicates):
        drawn = [studies[i] for i in rng.integers(0, len(studies), len(studies))]
        per_arm: dict[str, list[float]] = {a: [] for a in arms}
        for st in drawn:
            idx, picks = _draw(rng, st)
            for a in arms:
                per_arm[a].append(_arm_robustness(picks[a], st.gold, st.unlearn_only,  # type: ignore[arg-type]
                                                  idx, rng, tol))
        for a in arms:
            reps[a].append(float(np.mean(per_arm[a])))
    out: dict[str, Any] = {"robustness": {}}
    for a in arms:
        points = [_arm_robustness(st.arms[a], st.gold, st.unlearn_only, None, None, tol)  # type: ignore[arg-type]
                  for st in studies]
        # Undefined in any run (its references too close): undefined pooled.
        out["robustness"][a] = {**_interval(float(np.mean(points)), reps[a]).to_dict(),
                                "per_run": [p if math.isfinite(p) else None for p in points]}
    out["method"] = {"level": LEVEL, "replicates": replicates, "runs": len(studies),
                     "resampled": ["runs (run seeds)", "eval items (report half)",
                                   "attack seeds", "model seeds"]}
    return out


def pooled_seed_interval(groups: Sequence[Sequence[float | None]], seed: int = 0,
                         replicates: int = REPLICATES) -> dict[str, float | None]:
    """`seed_interval` over several runs: the mean over runs of each run's seed mean,
    resampling runs and then the seeds inside each."""
    runs = [np.asarray([v for v in g if v is not None and math.isfinite(v)], dtype=float)
            for g in groups]
    if not runs or any(len(r) == 0 for r in runs):
        return Interval(None, None, None).to_dict()
    rng = np.random.default_rng(seed)
    reps = []
    for _ in range(replicates):
        drawn = [runs[i] for i in rng.integers(0, len(runs), len(runs))]
        reps.append(float(np.mean([r[rng.integers(0, len(r), len(r))].mean() for r in drawn])))
    return _interval(float(np.mean([r.mean() for r in runs])), reps).to_dict()


def seed_interval(values: Sequence[float | None], seed: int = 0,
                  replicates: int = REPLICATES) -> dict[str, float | None]:
    """Mean and 95% bootstrap interval over model seeds (compute fractions: the only
    noise in them is the seed's)."""
    vals = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(vals) == 0:
        return Interval(None, None, None).to_dict()
    rng = np.random.default_rng(seed)
    reps = [float(vals[rng.integers(0, len(vals), len(vals))].mean())
            for _ in range(replicates)]
    return _interval(float(vals.mean()), reps).to_dict()
