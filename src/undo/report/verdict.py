"""A plain-language verdict composed from a summary's numbers (used when it carries none).

Each sentence states a measured number and what it is compared with; where a finding does not
hold (nothing matched the gold standard, robustness not monotonic in alpha, oracle ordering
reversed) the sentence says so instead of staying silent.
"""

from __future__ import annotations

from . import views
from .errorbars import has_intervals, verdict_sentences
from .table import fmt_fraction

MATCH = 0.9  # robustness at or above this counts as "matched the gold standard" (1 = gold)
SAME = 0.01  # forget-metric differences below this are reported as "about the same"


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _by_kind(summary: dict, kind: str) -> list[dict]:
    return [m for m in summary["models"] if m["kind"] == kind]


def _first_budget_pair(summary: dict, kind_a: str, kind_b: str
                       ) -> tuple[int, float, float] | None:
    """(first attack budget, worst case of the first model of kind_a, of kind_b), or None
    when either model or its attack is missing."""
    k = views.smallest_attack_budget(summary)
    a, b = _by_kind(summary, kind_a), _by_kind(summary, kind_b)
    if k is None or not a or not b:
        return None
    wa, wb = views.worst_case(a[0], k), views.worst_case(b[0], k)
    return None if wa is None or wb is None else (k, wa, wb)


def _fragility(summary: dict) -> str | None:
    """Unlearn-only vs gold standard after the first attack budget (the paper's 40 steps)."""
    pair = _first_budget_pair(summary, "gold", "unlearn_only")
    if pair is None:
        return None
    k, g, u = pair
    name, worse = summary["metric"]["name"], summary["metric"]["higher_is_worse"]
    text = (f"After {k} attack steps at the worst-case learning rate, the unlearn-only model "
            f"reached {name} {_f(u)} against the gold standard's {_f(g)}")
    if worse and g > 0:
        text += f" ({u / g:.1f}×)"
    relearned = (u - g > SAME) if worse else (g - u > SAME)
    if not relearned:
        text += ": unlearning alone was not measurably less robust than the gold standard here"
    return text + "."


def _in_every_seed(models: list[dict], budget: int) -> tuple[int, int]:
    """(seeds whose model matched the gold standard, seeds): a seed that did not recover
    or whose robustness is undefined did not match."""
    hits = sum(1 for m in models if (r := views.counted_robustness(m, budget)) is not None and r >= MATCH)
    return hits, len(models)


def _spread(p: views.FrontierPoint, seeds: int = 1) -> str:
    """Mean ± std over the seeds that count; says how many of `seeds` did."""
    text = f"{_f(p.robustness)} ± {_f(p.robustness_std)}" if p.n > 1 else _f(p.robustness)
    if seeds > p.n:
        return f"{text} over {p.n} of {seeds} seeds (the rest not counted)"
    return f"{text} over {p.n} seeds" if p.n > 1 else text


def _rises(values: list[float | None]) -> bool:
    return all(v is not None for v in values) and all(
        b > a for a, b in zip(values, values[1:], strict=False))  # type: ignore[operator]


def _by_seed_trend(undo_models: list[dict], budget: int) -> str | None:
    """Robustness and compute against α, seed by seed: the claim is made per seed, and a
    seed with a student that did not recover cannot support it."""
    seeds = sorted({m.get("seed") for m in undo_models}, key=lambda s: (s is None, s))
    alphas = sorted({m["alpha"] for m in undo_models})
    if len(alphas) < 2:
        return None
    rose = compute_rose = 0
    broken = []
    for seed in seeds:
        ms = {m["alpha"]: m for m in undo_models if m.get("seed") == seed}
        r = [views.counted_robustness(ms[a], budget) if a in ms else None for a in alphas]
        c = [ms[a]["compute"]["fraction_of_gold_steps"] if a in ms else None for a in alphas]
        rose += _rises(r)
        compute_rose += _rises(c)
        if not _rises(r):
            vals = ", ".join(f"α = {a:g}: " + ("not counted" if v is None else _f(v))
                             for a, v in zip(alphas, r, strict=True))
            broken.append(f"seed {seed}: {vals}")
    n = len(seeds)
    unit = "seed" if n == 1 else "seeds"
    text = f"Robustness rose with α in {rose}/{n} {unit}"
    if broken:
        text += f" (not in {'; '.join(broken)})"
    return text + f"; compute rose with α in {compute_rose}/{n} {unit}."


def _undo(summary: dict) -> list[str]:
    budget = views.largest_budget(summary)
    points = [p for p in views.frontier(summary) if p.kind == "undo"]
    undo_models = _by_kind(summary, "undo")
    if not undo_models:
        return ["This study has no UNDO model."]
    if not points:
        return [f"UNDO's robustness after {budget} steps is undefined (null in the summary: "
                f"typically the gold standard and the unlearn-only model are too close to "
                f"scale against, or no student recovered), so no compute trade-off can be "
                f"stated."]
    points.sort(key=lambda p: p.alpha)
    by_alpha = {a: [m for m in undo_models if m["alpha"] == a] for a in
                {m["alpha"] for m in undo_models}}
    out = []
    # "Matched" is said only of an α that matched in every seed.
    everywhere = [p for p in points
                  if (h := _in_every_seed(by_alpha[p.alpha], budget))[0] == h[1]]
    if everywhere:
        p = min(everywhere, key=lambda p: p.compute)
        n = len(by_alpha[p.alpha])
        every = " in every seed" if n > 1 else ""
        out.append(f"UNDO with α = {p.alpha:g} matched the gold standard's robustness after "
                   f"{budget} attack steps{every} (robustness {_spread(p, n)}) at "
                   f"{fmt_fraction(p.compute)} of its compute.")
    else:
        p = max(points, key=lambda p: p.robustness)
        hits, n = _in_every_seed(by_alpha[p.alpha], budget)
        out.append(f"No UNDO setting matched the gold standard's robustness after {budget} "
                   f"attack steps in every seed (taken here as robustness ≥ {MATCH}): the "
                   f"most robust, α = {p.alpha:g}, reached {_spread(p, n)} (≥ {MATCH} in "
                   f"{hits}/{n}) at {fmt_fraction(p.compute)} of the gold standard's compute.")
    trend = _by_seed_trend(undo_models, budget)
    if trend:
        lo, hi = points[0], points[-1]
        out.append(f"{trend[:-1]} (mean {_f(lo.robustness)} at α = {lo.alpha:g} to "
                   f"{_f(hi.robustness)} at α = {hi.alpha:g}; compute "
                   f"{fmt_fraction(lo.compute)} to {fmt_fraction(hi.compute)}).")
    return out


def _distill(summary: dict) -> str | None:
    budget = views.largest_budget(summary)
    ps = [p for p in views.frontier(summary) if p.kind == "unlearn_distill"]
    if not ps:
        return None
    p = ps[0]
    hits, n = _in_every_seed(_by_kind(summary, "unlearn_distill"), budget)
    seeds = f" (≥ {MATCH} in {hits}/{n} seeds)" if n > 1 else ""
    return (f"Unlearn-and-Distill reached robustness {_spread(p, n)}{seeds} after {budget} steps "
            f"at {fmt_fraction(p.compute)} of the gold standard's compute.")


def _oracles(summary: dict) -> str | None:
    pair = _first_budget_pair(summary, "oracle_base", "oracle_random")
    if pair is None:
        return None
    k, b, r = pair
    worse = summary["metric"]["higher_is_worse"]
    diff = (b - r) if worse else (r - b)
    verb = "relearned about as fast as" if abs(diff) < SAME else \
        "relearned faster than" if diff > 0 else "relearned more slowly than"
    return (f"Oracle matching into the base model {verb} oracle matching into a random init "
            f"({summary['metric']['name']} {_f(b)} vs {_f(r)} after {k} steps).")


def _retain(summary: dict) -> str | None:
    name = summary["retain_metric"]["name"]
    undo = [m["metrics"].get(name) for m in _by_kind(summary, "undo")]
    undo = [v for v in undo if v is not None]
    base = [m["metrics"].get(name) for m in _by_kind(summary, "base")]
    if not undo:
        return None
    lo, hi = min(undo), max(undo)
    span = _f(lo, 3) if abs(hi - lo) < 5e-4 else f"{_f(lo, 3)}–{_f(hi, 3)}"
    ref = f" (base model {_f(base[0], 3)})" if base and base[0] is not None else ""
    return f"UNDO models kept {name} at {span}{ref}."


def _without_gold(summary: dict) -> list[str]:
    """No gold standard: say so, and compare each distilled model with unlearning alone."""
    k = views.largest_budget(summary)
    out = ["This study has no gold standard (study.gold=none), so robustness relative to "
           "one is not available."]
    uos = _by_kind(summary, "unlearn_only")
    u = views.worst_case(uos[0], k) if uos else None
    if u is None:
        return out
    name, worse = summary["metric"]["name"], summary["metric"]["higher_is_worse"]
    for m in summary["models"]:
        p = views.worst_case(m, k) if m["kind"] in ("undo", "unlearn_distill") else None
        if p is None:
            continue
        diff = (u - p) if worse else (p - u)
        verb = "about as easy to relearn as" if abs(diff) < SAME else \
            "harder to relearn than" if diff > 0 else "easier to relearn than"
        out.append(f"{m['name']} was {verb} the unlearn-only model ({name} {_f(p)} vs "
                   f"{_f(u)} after {k} attack steps).")
    return out


def _unrecovered(summary: dict) -> str | None:
    """Students that never recovered are named, with their retain metric, and not counted."""
    bad = views.unrecovered(summary)
    if not bad:
        return None
    name = summary["retain_metric"]["name"]
    items = ", ".join(f"{m['name']} ({name} {_f(m['metrics'].get(name, float('nan')), 3)})"
                      for m in bad)
    return (f"Not counted: {items} did not recover the teacher's retain ability within its "
            f"distillation budget, so its robustness is no success.")


def compose_verdict(summary: dict) -> str:
    """One paragraph of plain-language findings, each with its number and comparison."""
    if not summary.get("gold_standard", True):
        parts = [*_without_gold(summary), _retain(summary), _unrecovered(summary)]
        return " ".join(p for p in parts if p)
    if has_intervals(summary):  # comparisons only where the 95% intervals separate
        return " ".join([*verdict_sentences(summary), *filter(None, [_retain(summary)])])
    parts = [_fragility(summary), *_undo(summary), _distill(summary), _oracles(summary),
             _retain(summary), _unrecovered(summary)]
    return " ".join(p for p in parts if p)


def verdict(summary: dict) -> tuple[str, bool]:
    """The summary's own verdict if it has one, else a composed one; and whether it was composed."""
    own = summary.get("verdict")
    return (own, False) if own else (compose_verdict(summary), True)
