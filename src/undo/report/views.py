"""Derived views of a validated summary: model groups, curves and frontier points.

Pure functions over the JSON (no plotting, no I/O), shared by the plots, the tables and the
verdict so that all three show the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..analysis.robustness import budget_key, mean_std
from .schema import lr_matches

Model = dict[str, Any]

KIND_LABELS = {
    "base": "base",
    "gold": "gold standard",
    "unlearn_only": "unlearn-only",
    "unlearn_distill": "unlearn-and-distill",
    "undo": "UNDO",
    "oracle_base": "oracle → base",
    "oracle_random": "oracle → random init",
}


def fmt(value: float | None, digits: int = 3) -> str:
    """A metric value; `-` where undefined (null), `nan` where the run produced NaN."""
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def fmt_fraction(value: float | None) -> str:
    """A compute fraction as a percentage; small ones keep a decimal (unlearning is ~0.3%)."""
    if value is None:
        return "-"
    pct = 100 * value
    return f"{pct:.1f}%" if abs(pct) < 10 else f"{pct:.0f}%"


def fmt_ci(x: dict | None, digits: int = 2, pct: bool = False) -> str:
    """A point and its 95% interval (`{point, lo, hi}`), as a value (`fmt`, `digits`) or a
    percentage (`fmt_fraction`); `-` where undefined."""
    if not x or x.get("point") is None:
        return "-"
    f = fmt_fraction if pct else (lambda v: fmt(v, digits))
    if x.get("lo") is None:
        return f"{f(x['point'])} [no interval]"
    return f"{f(x['point'])} [{f(x['lo'])}, {f(x['hi'])}]"


def largest_budget(summary: dict) -> int:
    return int(summary["budgets"][-1])


def smallest_attack_budget(summary: dict) -> int | None:
    """The first budget with at least one attack step (the paper's 40), if any."""
    positive = [b for b in summary["budgets"] if b > 0]
    return int(positive[0]) if positive else None


def worst_case(model: Model, budget: int) -> float | None:
    """Worst-case forget metric over the adversary's LRs after `budget` steps (None: no attack)."""
    attack = model.get("attack")
    return None if attack is None else attack["worst_case"][budget_key(budget)]["value"]


def robustness(model: Model, budget: int) -> float | None:
    return model["robustness"].get(budget_key(budget))


def counted_robustness(model: Model, budget: int) -> float | None:
    """A distilled model's robustness at `budget` if it counts: its student recovered
    and the value is defined (not null, not NaN); else None."""
    r = robustness(model, budget)
    if model.get("recovered") is False or r is None or not math.isfinite(r):
        return None
    return float(r)


def worst_lr_curve(model: Model, budget: int) -> tuple[float, dict[str, list]] | None:
    """The curve of the LR that is the worst case at `budget` (the relearning figure's line)."""
    attack = model.get("attack")
    if attack is None:
        return None
    lr = attack["worst_case"][budget_key(budget)]["lr"]
    for key, curve in attack["curves"].items():
        if lr_matches(key, lr):
            return lr, curve
    return None  # unreachable for a validated summary


def display_label(model: Model, models: Sequence[Model]) -> str:
    """A short legend label: the kind's name, or the model's own name where that is ambiguous."""
    kind = model["kind"]
    if kind == "undo" or model.get("seed") is not None:
        return model["name"]
    same = [m for m in models if m["kind"] == kind and m.get("seed") is None]
    return KIND_LABELS.get(kind, kind) if len(same) == 1 else model["name"]


@dataclass
class Group:
    """Models that differ only by seed (UNDO at one alpha over seeds), or a single model."""

    label: str
    kind: str
    alpha: float | None
    models: list[Model] = field(default_factory=list)


def groups(summary: dict) -> list[Group]:
    """Group seeded models by (kind, alpha); unseeded models stay alone. Order of appearance."""
    models = summary["models"]
    out: dict[tuple, Group] = {}
    for m in models:
        if m.get("seed") is not None:
            key: tuple = (m["kind"], m.get("alpha"))
            if key not in out:
                name = KIND_LABELS.get(m["kind"], m["kind"])
                label = f"{name} α={m['alpha']:g}" if m.get("alpha") is not None else name
                out[key] = Group(label, m["kind"], m.get("alpha"))
        else:
            key = ("name", m["name"])
            out[key] = Group(display_label(m, models), m["kind"], m.get("alpha"))
        out[key].models.append(m)
    for g in out.values():
        if len(g.models) > 1:
            g.label += f" ({len(g.models)} seeds)"
    return list(out.values())


def group_curve(group: Group, budget: int) -> dict[str, list] | None:
    """Mean relearning curve of a group at each model's worst-case LR, with a spread band.

    Each model's curve is a mean ± std over attack seeds; over model seeds the band combines
    both sources by the law of total variance: var = mean(std_i^2) + var(mean_i).
    Returns None when no model in the group was attacked or their step grids differ.
    """
    curves = [c for m in group.models if (c := worst_lr_curve(m, budget)) is not None]
    if not curves:
        return None
    steps = curves[0][1]["steps"]
    if any(c["steps"] != steps for _, c in curves):
        return None
    lrs = sorted({lr for lr, _ in curves})
    mean, std = [], []
    for j in range(len(steps)):
        mu, between = mean_std([c["mean"][j] for _, c in curves])
        within = sum(c["std"][j] ** 2 for _, c in curves) / len(curves)
        mean.append(mu)
        std.append(math.sqrt(within + between ** 2))
    return {"steps": steps, "mean": mean, "std": std, "lrs": lrs}


@dataclass
class FrontierPoint:
    """One point of the compute-vs-robustness frontier (a group; mean ± std over its seeds)."""

    label: str
    kind: str
    alpha: float | None
    compute: float
    compute_std: float
    robustness: float
    robustness_std: float
    n: int
    seeds: list[tuple[float, float]]  # per-model (compute, robustness)


COMPUTE_AXES = ("steps", "flops")


def compute_axis(summaries: Sequence[dict], compute: str) -> tuple[str, str]:
    """The compute key frontiers of these summaries plot on (one axis for all), and its label.

    "steps": distillation steps over the gold standard's (the paper's axis). "flops": all
    FLOPs over the gold standard's, unlearning included (`total_fraction_of_gold_flops`);
    where a summary was written before those totals existed, every panel falls back to the
    distillation FLOPs and the label says so.
    """
    if compute == "steps":
        return "fraction_of_gold_steps", "compute: steps / gold-standard steps"
    if compute != "flops":
        raise ValueError(f"compute axis {compute!r}: valid are {', '.join(COMPUTE_AXES)}")
    if all(any("total_fraction_of_gold_flops" in m["compute"] for m in s["models"])
           for s in summaries):
        return "total_fraction_of_gold_flops", \
            "compute: FLOPs incl. unlearning / gold-standard FLOPs"
    return "fraction_of_gold_flops", "compute: distillation FLOPs / gold-standard FLOPs"


def frontier(summary: dict, key: str = "fraction_of_gold_steps",
             budget: int | None = None) -> list[FrontierPoint]:
    """Compute (`key` of each model's compute: `compute_axis`) vs robustness at the
    largest budget (or `budget`).

    UNDO groups and Unlearn-and-Distill carry their measured robustness; the references sit at
    their definitional values where the file leaves them null: unlearn-only 0, gold 1.
    Models without a compute fraction or a defined robustness are left out (the table shows
    them; NaN counts as undefined), and so are students that did not recover their
    teacher's retain ability (`recovered: false`): their robustness is no success. Oracles and the base model are not on this trade-off and are left out too.
    """
    budget = largest_budget(summary) if budget is None else budget
    defaults = {"unlearn_only": 0.0, "gold": 1.0}
    default_compute = {"gold": 1.0}  # S_gold / S_gold, by definition
    points = []
    for g in groups(summary):
        if g.kind not in ("undo", "unlearn_distill", "unlearn_only", "gold"):
            continue
        xy = []
        for m in g.models:
            if m.get("recovered") is False:
                continue
            x = m["compute"].get(key)
            if x is None:
                x = default_compute.get(g.kind)
            y = robustness(m, budget)
            if y is None:
                y = defaults.get(g.kind)
            # NaN (a diverged run) is as undefined as null: it must not poison a mean.
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y):
                xy.append((float(x), float(y)))
        if not xy:
            continue
        mx, sx = mean_std([x for x, _ in xy])
        my, sy = mean_std([y for _, y in xy])
        points.append(FrontierPoint(g.label, g.kind, g.alpha, mx, sx, my, sy, len(xy), xy))
    return points


def unrecovered(summary: dict) -> list[dict]:
    """Distilled models that did not recover their teacher's retain ability in budget."""
    return [m for m in summary["models"] if m.get("recovered") is False]
