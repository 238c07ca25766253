"""A plain-language verdict composed from a summary's numbers (used when it carries none).

Each sentence states a measured number and what it is compared with; where a finding does not
hold (nothing matched the gold standard, robustness not monotonic in alpha, oracle ordering
reversed) the sentence says so instead of staying silent.
"""

from __future__ import annotations

from . import views
from .table import fmt_fraction

MATCH = 0.9  # robustness at or above this counts as "matched the gold standard" (1 = gold)
SAME = 0.01  # forget-metric differences below this are reported as "about the same"


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _by_kind(summary: dict, kind: str) -> list[dict]:
    return [m for m in summary["models"] if m["kind"] == kind]


def _fragility(summary: dict) -> str | None:
    """Unlearn-only vs gold standard after the first attack budget (the paper's 40 steps)."""
    k = views.smallest_attack_budget(summary)
    golds, uos = _by_kind(summary, "gold"), _by_kind(summary, "unlearn_only")
    if k is None or not golds or not uos:
        return None
    g, u = views.worst_case(golds[0], k), views.worst_case(uos[0], k)
    if g is None or u is None:
        return None
    name, worse = summary["metric"]["name"], summary["metric"]["higher_is_worse"]
    text = (f"After {k} attack steps at the worst-case learning rate, the unlearn-only model "
            f"reached {name} {_f(u)} against the gold standard's {_f(g)}")
    if worse and g > 0:
        text += f" ({u / g:.1f}×)"
    relearned = (u - g > SAME) if worse else (g - u > SAME)
    if not relearned:
        text += ": unlearning alone was not measurably less robust than the gold standard here"
    return text + "."


def _undo(summary: dict) -> list[str]:
    budget = views.largest_budget(summary)
    points = [p for p in views.frontier(summary) if p.kind == "undo"]
    undo_models = _by_kind(summary, "undo")
    if not undo_models:
        return ["This study has no UNDO model."]
    if not points:
        return [f"UNDO's robustness after {budget} steps is undefined (null in the summary: "
                f"typically the gold standard and the unlearn-only model are too close to "
                f"scale against), so no compute trade-off can be stated."]
    points.sort(key=lambda p: p.alpha)

    def spread(p: views.FrontierPoint) -> str:
        return f"{_f(p.robustness)} ± {_f(p.robustness_std)} over {p.n} seeds" if p.n > 1 \
            else _f(p.robustness)

    out = []
    matched = [p for p in points if p.robustness >= MATCH]
    if matched:
        p = min(matched, key=lambda p: p.compute)
        out.append(f"UNDO with α = {p.alpha:g} matched the gold standard's robustness after "
                   f"{budget} attack steps (robustness {spread(p)}) at "
                   f"{fmt_fraction(p.compute)} of its compute.")
    else:
        p = max(points, key=lambda p: p.robustness)
        out.append(f"No UNDO setting matched the gold standard's robustness after {budget} "
                   f"attack steps (taken here as robustness ≥ {MATCH}): the most robust, "
                   f"α = {p.alpha:g}, reached {spread(p)} at {fmt_fraction(p.compute)} of the "
                   f"gold standard's compute.")
    if len(points) >= 2:
        r = [p.robustness for p in points]
        c = [p.compute for p in points]
        lo, hi = points[0], points[-1]
        r_up = all(b > a for a, b in zip(r, r[1:], strict=False))
        c_up = all(b > a for a, b in zip(c, c[1:], strict=False))
        rng = (f"{_f(lo.robustness)} at α = {lo.alpha:g} to {_f(hi.robustness)} at "
               f"α = {hi.alpha:g}")
        crng = f"{fmt_fraction(lo.compute)} to {fmt_fraction(hi.compute)}"
        if r_up and c_up:
            out.append(f"Robustness rose with α ({rng}), and so did compute ({crng}).")
        else:
            vals = ", ".join(f"α = {p.alpha:g}: {_f(p.robustness)}" for p in points)
            out.append(f"Robustness {'rose' if r_up else 'did not rise monotonically'} with α "
                       f"({vals}); compute {'rose' if c_up else 'did not rise monotonically'} "
                       f"({crng}).")
    return out


def _distill(summary: dict) -> str | None:
    budget = views.largest_budget(summary)
    ps = [p for p in views.frontier(summary) if p.kind == "unlearn_distill"]
    if not ps:
        return None
    p = ps[0]
    return (f"Unlearn-and-Distill reached robustness {_f(p.robustness)} after {budget} steps at "
            f"{fmt_fraction(p.compute)} of the gold standard's compute.")


def _oracles(summary: dict) -> str | None:
    k = views.smallest_attack_budget(summary)
    ob, orand = _by_kind(summary, "oracle_base"), _by_kind(summary, "oracle_random")
    if k is None or not ob or not orand:
        return None
    b, r = views.worst_case(ob[0], k), views.worst_case(orand[0], k)
    if b is None or r is None:
        return None
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
    parts = [_fragility(summary), *_undo(summary), _distill(summary), _oracles(summary),
             _retain(summary), _unrecovered(summary)]
    return " ".join(p for p in parts if p)


def verdict(summary: dict) -> tuple[str, bool]:
    """The summary's own verdict if it has one, else a composed one; and whether it was composed."""
    own = summary.get("verdict")
    return (own, False) if own else (compose_verdict(summary), True)
