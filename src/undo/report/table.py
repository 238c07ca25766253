"""The table of all models: one row per model, shared by the terminal and the HTML report.

`format_table(summary)` is the fixed-width text that `undo run` and `undo report` print.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..analysis.robustness import budget_key
from . import views
from .errorbars import format_intervals
from .families import format_families
from .views import fmt, fmt_fraction


def fmt_seconds(s: float) -> str:
    if s < 100:
        return f"{s:.0f}s"
    if s < 6000:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def fmt_count(n: float | None) -> str:
    """Large counts in engineering notation: 4.6M tokens, 2.2e13 FLOPs ('-': not known)."""
    if n is None:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.3g}"


def robustness_budgets(summary: dict) -> list[int]:
    """Budgets where at least one model has a defined robustness (others are all '-')."""
    return [b for b in summary["budgets"]
            if any(m["robustness"].get(budget_key(b)) is not None for m in summary["models"])]


@dataclass
class Row:
    """One model's numbers, unformatted (None = undefined)."""

    name: str
    kind: str
    alpha: float | None
    seed: int | None
    retain: float | None
    forget: float | None
    worst: dict[int, tuple[float, float | None, float] | None]  # budget -> (value, std, lr)
    robustness: dict[int, float | None]
    compute: float | None
    steps: int
    tokens: int
    flops: float
    wall_time_s: float
    recovered: bool | None = None  # distilled models: did the student recover?

    @property
    def label(self) -> str:
        """The name, flagged where a student never recovered its teacher's retain ability."""
        return self.name + (" (not recovered)" if self.recovered is False else "")


def rows(summary: dict) -> list[Row]:
    out = []
    for m in summary["models"]:
        attack = m.get("attack")
        worst: dict[int, tuple[float, float | None, float] | None] = {}
        for b in summary["budgets"]:
            w = attack["worst_case"][budget_key(b)] if attack else None
            worst[b] = (w["value"], w.get("std"), w["lr"]) if w else None
        out.append(Row(
            name=m["name"], kind=m["kind"], alpha=m.get("alpha"), seed=m.get("seed"),
            retain=m["metrics"].get(summary["retain_metric"]["name"]),
            forget=m["metrics"].get(summary["metric"]["name"]),
            worst=worst,
            robustness={b: views.robustness(m, b) for b in summary["budgets"]},
            compute=m["compute"]["fraction_of_gold_steps"], steps=m["compute"]["steps"],
            tokens=m["compute"]["tokens"], flops=m["compute"]["flops"],
            wall_time_s=m["wall_time_s"], recovered=m.get("recovered")))
    return out


@dataclass
class GroupRow:
    """One arm over its seeds (UNDO at one α, Unlearn-and-Distill): (mean, std) pairs.

    Robustness is averaged over the seeds that count (recovered, defined), as in the
    frontier and the verdict; `counted` says how many of `n` those were.
    """

    label: str
    n: int
    recovered: int
    counted: int
    retain: tuple[float, float]
    worst: dict[int, tuple[float, float] | None]
    robustness: tuple[float, float] | None  # at the largest budget
    compute: tuple[float, float] | None  # fraction of gold steps
    compute_flops: tuple[float, float] | None


def _ms(values: list[float | None]) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return views.mean_std(vals) if vals else None


def group_rows(summary: dict) -> list[GroupRow]:
    """The arms that ran over more than one seed."""
    top = views.largest_budget(summary)
    retain = summary["retain_metric"]["name"]
    out = []
    for g in views.groups(summary):
        ms = g.models
        if len(ms) < 2:
            continue
        counted = [r for m in ms if (r := views.counted_robustness(m, top)) is not None]
        out.append(GroupRow(
            label=g.label.removesuffix(f" ({len(ms)} seeds)"), n=len(ms),
            recovered=sum(m.get("recovered") is not False for m in ms),
            counted=len(counted),
            retain=_ms([m["metrics"].get(retain) for m in ms]) or (math.nan, math.nan),
            worst={b: _ms([views.worst_case(m, b) for m in ms]) for b in summary["budgets"]},
            robustness=_ms(counted),
            compute=_ms([m["compute"]["fraction_of_gold_steps"] for m in ms]),
            compute_flops=_ms([m["compute"]["fraction_of_gold_flops"] for m in ms])))
    return out


def fmt_ms(v: tuple[float, float] | None, digits: int = 3, pct: bool = False) -> str:
    """mean ± std ('-' where undefined)."""
    if v is None:
        return "-"
    f = fmt_fraction if pct else (lambda x: fmt(x, digits))
    return f"{f(v[0])} ± {f(v[1])}"


def format_groups(summary: dict) -> str:
    """Fixed-width table of every arm over its seeds ('' when every arm ran one seed)."""
    groups = group_rows(summary)
    if not groups:
        return ""
    top = views.largest_budget(summary)
    header = ["arm", "recov.", "retain"] + \
        [f"wc@{b}" for b in summary["budgets"] if b > 0] + [f"R@{top}", "compute", "FLOPs"]
    body = [[g.label, f"{g.recovered}/{g.n}", fmt_ms(g.retain, 2)]
            + [fmt_ms(g.worst[b], 2) for b in summary["budgets"] if b > 0]
            + [fmt_ms(g.robustness, 2) + ("" if g.counted == g.n else f" ({g.counted})"),
               fmt_ms(g.compute, pct=True), fmt_ms(g.compute_flops, pct=True)]
            for g in groups]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    legend = (f"arms over seeds: mean ± std; R@{top} over the seeds that recovered (their count in "
              f"brackets when not all did); recov.: seeds whose student recovered; compute: steps and FLOPs (incl. the teacher) "
              f"as fractions of the gold standard's")
    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(b) for b in body), rule, *_wrap(legend, 96)])


def format_table(summary: dict) -> str:
    """Fixed-width plain-text table of every model, with a legend of the columns; then,
    for a study over seeds, the table of every arm's mean ± std (`format_groups`)."""
    rb = robustness_budgets(summary)
    header = ["model", "retain", "forget"] + [f"wc@{b}" for b in summary["budgets"]] + \
        [f"R@{b}" for b in rb] + ["compute", "time"]
    body = []
    for r in rows(summary):
        body.append([r.label, fmt(r.retain), fmt(r.forget)]
                    + [fmt(r.worst[b][0]) if r.worst[b] else "-" for b in summary["budgets"]]
                    + [fmt(r.robustness[b], 2) for b in rb]
                    + [fmt_fraction(r.compute), fmt_seconds(r.wall_time_s)])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "-" * len(line(header))
    metric, retain = summary["metric"]["name"], summary["retain_metric"]["name"]
    legend = (f"retain, forget: {retain}, {metric} before the attack; wc@k: worst-case {metric} "
              f"over the attack LRs after k steps (mean over attack seeds); R@k: robustness "
              f"(0 = unlearn-only, 1 = gold standard); compute: steps / gold-standard steps")
    per_model = [line(header), rule, *(line(b) for b in body), rule, *_wrap(legend, 96)]
    groups = format_groups(summary)
    ci = format_intervals(summary)
    fam = format_families(summary)
    return "\n".join(per_model + (["", groups] if groups else []) + (["", ci] if ci else [])
                     + (["", fam] if fam else []))


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
