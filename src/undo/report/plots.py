"""The study's figures, drawn from a validated summary alone; saved as PNG, SVG and PDF.

Four figures, sized for a paper (7 in wide for two columns; 200 dpi), chance levels dashed:

- `relearning`: forget metric vs attack steps, one line per model (UNDO: per alpha, over
  seeds) at the learning rate that is the worst case at the largest budget; the band is the
  spread over attack seeds (and model seeds). Like the paper's "Relearned" figure.
- `frontier`: compute (fraction of gold-standard steps) vs robustness at the largest budget,
  one point per alpha with ±1 std error bars over seeds; unlearn-only and gold marked.
  `frontier_flops`: the same against FLOPs, unlearning included (`views.compute_axis`).
- `pareto`: one panel per budget k, x = retain metric, y = worst-case forget after k steps.

Each figure is a set of panels (`_*_panel(ax, summary, ...)`), so `undo report A B --out D`
draws the same panels side by side, one per run (`compare_figures`).
Shared style and helpers: `figures.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from . import views
from .families import heatmap_figure, table_of
from .figures import chance_h, color_for, figure, marker_for, render
from .search import progress_figure, searched

Runs = Sequence[tuple[str, dict]]  # (run label, validated summary)


def _metric_label(summary: dict) -> str:
    m = summary["metric"]
    return f"{m['name']} ({'lower' if m['higher_is_worse'] else 'higher'} is better)"


def _legend_below(fig: Any, axes: Sequence[Any]) -> None:
    """One legend under the figure for every panel's lines, each label once."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, h)
    fig.legend(list(seen.values()), list(seen), loc="outside lower center",
               ncol=min(4, max(len(seen), 1)), frameon=False)


# ----------------------------------------------------------------------------- relearning


def _relearning_lines(summary: dict, budget: int) -> list[tuple[views.Group, dict]]:
    return [(g, c) for g in views.groups(summary)
            if (c := views.group_curve(g, budget)) is not None]


def _relearning_panel(ax: Any, summary: dict, budget: int, chance_label: bool = True) -> None:
    lines = _relearning_lines(summary, budget)
    for g, c in lines:
        color = color_for(g.kind, g.alpha)
        lo = [m - s for m, s in zip(c["mean"], c["std"], strict=True)]
        hi = [m + s for m, s in zip(c["mean"], c["std"], strict=True)]
        ax.fill_between(c["steps"], lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.plot(c["steps"], c["mean"], color=color, label=g.label, zorder=3,
                linestyle=":" if g.kind == "base" else "-")
    chance_h(ax, summary["metric"]["chance"], label=chance_label)
    for b in summary["budgets"]:
        if b > 0:
            ax.axvline(b, color="#999999", linewidth=0.6, linestyle=":", zorder=0)
    ax.set_xlabel("attack steps")
    if not lines:
        ax.text(0.5, 0.5, "no model was attacked", ha="center", transform=ax.transAxes)


def _relearning_ylabel(summary: dict) -> str:
    m = summary["metric"]
    return (f"{m['name']} at worst-case LR\n"
            f"({'lower' if m['higher_is_worse'] else 'higher'} is more robust)")


def relearning_figure(summary: dict) -> Any:
    """Forget metric vs attack steps at each model's worst-case LR (at the largest budget)."""
    budget = views.largest_budget(summary)
    first = views.smallest_attack_budget(summary)
    lines = _relearning_lines(summary, budget)
    # A zoomed panel over the first budget shows how fast each model relearns; the full
    # panel shows where it ends. Only worth it when the first budget is a small fraction.
    zoom = first is not None and budget >= 4 * first
    fig = figure(7.0, 3.6)
    axes = fig.subplots(1, 2, sharey=True, width_ratios=[1, 1.6]) if zoom else \
        [fig.subplots(1, 1)]
    for ax in axes:
        _relearning_panel(ax, summary, budget, chance_label=ax is axes[0])
    if zoom:
        axes[0].set_xlim(0, min(2 * first, budget))
        axes[0].set_title(f"first {min(2 * first, budget)} steps")
        axes[1].set_xlim(0, max(c["steps"][-1] for _, c in lines) if lines else budget)
        axes[1].set_title("full attack")
    axes[0].set_ylabel(_relearning_ylabel(summary))
    _legend_below(fig, axes[:1])
    fig.suptitle(f"Relearning attacks: {summary['study']} (band: ±1 std over seeds; "
                 f"LR: worst case at {budget} steps)", fontsize=9)
    return fig


def relearning(summary: dict) -> bytes:
    """The relearning figure as PNG (the release's model card embeds it)."""
    return render(lambda: relearning_figure(summary), ("png",))["png"]


# ----------------------------------------------------------------------------- frontier


def _frontier_panel(ax: Any, summary: dict, axis: tuple[str, str], budget: int) -> None:
    """`axis`: the compute key and its label (`views.compute_axis`)."""
    points = views.frontier(summary, axis[0], budget)
    # Reference levels by definition; labelled where no point usually sits (gold is at
    # the right end of y = 1, unlearn-only at the left end of y = 0).
    for y, text, x, ha in ((0.0, "unlearn-only level", 0.99, "right"),
                           (1.0, "gold-standard level", 0.01, "left")):
        ax.axhline(y, color="#999999", linewidth=0.7, linestyle="--", zorder=0)
        ax.annotate(text, (x, y), xycoords=("axes fraction", "data"), ha=ha,
                    va="bottom", fontsize=6.5, color="#666666")
    undo = sorted((p for p in points if p.kind == "undo"), key=lambda p: p.alpha)
    if len(undo) > 1:  # connect alphas in order: the trade-off curve
        ax.plot([p.compute for p in undo], [p.robustness for p in undo], color="#bbbbbb",
                linewidth=0.9, zorder=1)
    for p in points:
        color, marker = color_for(p.kind, p.alpha), marker_for(p.kind)
        if p.n > 1:  # individual seeds, faint, behind the mean
            ax.scatter([x for x, _ in p.seeds], [y for _, y in p.seeds], s=10,
                       color=color, alpha=0.35, linewidths=0, zorder=2)
        ax.errorbar(p.compute, p.robustness, xerr=p.compute_std or None,
                    yerr=p.robustness_std or None, color=color, marker=marker,
                    markersize=9 if marker == "*" else 6, capsize=2, linewidth=1,
                    zorder=3, label=p.label)
        if p.kind == "undo":
            ax.annotate(f"α={p.alpha:g}", (p.compute, p.robustness), xytext=(5, -9),
                        textcoords="offset points", fontsize=6.5, color=color)
    ax.set_xlabel(axis[1])
    ax.set_xlim(left=-0.03)
    if not points:
        ax.text(0.5, 0.5, "no model has both compute and robustness", ha="center",
                transform=ax.transAxes)


def frontier_figure(summary: dict, compute: str = "steps") -> Any:
    """Compute (fraction of gold steps or FLOPs) vs robustness at the largest budget."""
    budget = views.largest_budget(summary)
    fig = figure(5.0, 3.6)
    ax = fig.subplots(1, 1)
    _frontier_panel(ax, summary, views.compute_axis([summary], compute), budget)
    ax.set_ylabel(f"robustness after {budget} attack steps")
    ax.set_title(f"Compute vs robustness ({summary['study']})")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


# ----------------------------------------------------------------------------- pareto


def _pareto_panel(ax: Any, summary: dict, budget: int, chance_label: bool) -> None:
    retain_name = summary["retain_metric"]["name"]
    for g in views.groups(summary):
        xs, ys = [], []
        for m in g.models:
            y = views.worst_case(m, budget)
            if y is None and budget == 0:  # never attacked: its own metric is the k=0 value
                y = m["metrics"].get(summary["metric"]["name"])
            x = m["metrics"].get(retain_name)
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        if xs:
            marker = marker_for(g.kind)
            ax.scatter(xs, ys, color=color_for(g.kind, g.alpha), marker=marker,
                       s=60 if marker == "*" else 26, label=g.label, zorder=3,
                       edgecolors="white", linewidths=0.4)
    chance_h(ax, summary["metric"]["chance"], label=chance_label)
    ax.set_title(f"after {budget} attack steps" if budget else "before the attack (k = 0)")
    ax.set_xlabel(retain_name + _chance_note(summary["retain_metric"]["chance"]))
    ax.margins(x=0.15)


def pareto_figure(summary: dict) -> Any:
    """Retain metric vs worst-case forget metric after k attack steps, one panel per budget."""
    budgets = summary["budgets"]
    ncols = min(len(budgets), 3)
    nrows = math.ceil(len(budgets) / ncols)
    fig = figure(7.0, 2.5 * nrows + 0.9)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    for ax, b in zip(axes, budgets, strict=False):
        _pareto_panel(ax, summary, b, chance_label=ax is axes[0])
    for ax in axes[len(budgets):]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row * ncols].set_ylabel(f"worst-case {_metric_label(summary)}")
    _legend_below(fig, axes[:1])
    fig.suptitle(f"Retain vs forget after relearning ({summary['study']})", fontsize=9)
    return fig


def _chance_note(chance: float | None) -> str:
    return "" if chance is None else f"  (chance {chance:g})"


FIGURES: dict[str, Callable[[dict], Any]] = {
    "relearning": relearning_figure,
    "frontier": frontier_figure,
    "frontier_flops": lambda s: frontier_figure(s, "flops"),
    "pareto": pareto_figure,
}


def render_all(summary: dict) -> dict[str, dict[str, bytes]]:
    """Every figure in every format: file stem -> format -> bytes (`relearning` ->
    plots/relearning.png, .svg, .pdf)."""
    out = {name: render(lambda fn=fn: fn(summary)) for name, fn in FIGURES.items()}
    if searched(summary):  # a study with the adaptive attack search
        out["search"] = render(lambda: progress_figure(summary))
    if table_of(summary) is not None:  # attacks beyond the paper's two finetuning ones
        out["attack_families"] = render(lambda: heatmap_figure(summary))
    return out


# ----------------------------------------------------------------------------- comparison


def _compare_relearning(runs: Runs, budget: int) -> Any:
    fig = figure(7.0, 3.6)
    axes = fig.subplots(1, len(runs), sharey=True, squeeze=False).ravel()
    for i, (ax, (label, s)) in enumerate(zip(axes, runs, strict=True)):
        _relearning_panel(ax, s, budget, chance_label=i == 0)
        ax.set_title(label, fontsize=7.5)
    axes[0].set_ylabel(_relearning_ylabel(runs[0][1]))
    _legend_below(fig, axes)
    fig.suptitle(f"Relearning attacks (band: ±1 std over seeds; LR: worst case at {budget} "
                 "steps)", fontsize=9)
    return fig


def _compare_frontier(runs: Runs, budget: int, compute: str) -> Any:
    fig = figure(7.0, 3.4)
    axes = fig.subplots(1, len(runs), sharex=True, sharey=True, squeeze=False).ravel()
    axis = views.compute_axis([s for _, s in runs], compute)
    for ax, (label, s) in zip(axes, runs, strict=True):
        _frontier_panel(ax, s, axis, budget)
        ax.set_title(label, fontsize=7.5)
    axes[0].set_ylabel(f"robustness after {budget} attack steps")
    _legend_below(fig, axes)
    return fig


def _compare_pareto(runs: Runs, budgets: list[int]) -> Any:
    fig = figure(7.0, 2.3 * len(runs) + 0.9)
    axes = fig.subplots(len(runs), len(budgets), sharey=True, squeeze=False)
    for r, (label, s) in enumerate(runs):
        for c, b in enumerate(budgets):
            _pareto_panel(axes[r][c], s, b, chance_label=r == c == 0)
            # The run's name only: its differing keys are in the other figures' titles.
            axes[r][c].set_title(f"{label.splitlines()[0]}: " + axes[r][c].get_title())
        axes[r][0].set_ylabel(f"worst-case {runs[0][1]['metric']['name']}")
    _legend_below(fig, axes.ravel())
    return fig


def compare_figures(runs: Runs, budgets: list[int]) -> dict[str, dict[str, bytes]]:
    """The comparison page's figures, one panel per run side by side, at the runs' common
    `budgets` (the largest for the relearning LR and the frontier)."""
    top = budgets[-1]
    return {
        "relearning": render(lambda: _compare_relearning(runs, top)),
        "frontier": render(lambda: _compare_frontier(runs, top, "steps")),
        "frontier_flops": render(lambda: _compare_frontier(runs, top, "flops")),
        "pareto": render(lambda: _compare_pareto(runs, budgets)),
    }
