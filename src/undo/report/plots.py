"""The study's figures, as PNG bytes, from a validated summary alone.

Three figures, sized for a paper (7 in wide for two columns; 200 dpi), chance levels dashed:

- `relearning`: forget metric vs attack steps, one line per model (UNDO: per alpha, over
  seeds) at the learning rate that is the worst case at the largest budget; the band is the
  spread over attack seeds (and model seeds). Like the paper's "Relearned" figure.
- `frontier`: compute (fraction of gold-standard steps) vs robustness at the largest budget,
  one point per alpha with ±1 std error bars over seeds; unlearn-only and gold marked.
- `pareto`: one panel per budget k, x = retain metric, y = worst-case forget after k steps.
Shared style and helpers: `figures.py`.
"""

from __future__ import annotations

import math

from . import views
from .figures import chance_h, color_for, figure, marker_for, png, rc
from .search import progress_plot, searched


def _metric_label(summary: dict) -> str:
    m = summary["metric"]
    return f"{m['name']} ({'lower' if m['higher_is_worse'] else 'higher'} is better)"


# ----------------------------------------------------------------------------- relearning


def relearning(summary: dict) -> bytes:
    """Forget metric vs attack steps at each model's worst-case LR (at the largest budget)."""
    budget = views.largest_budget(summary)
    first = views.smallest_attack_budget(summary)
    lines = [(g, c) for g in views.groups(summary)
             if (c := views.group_curve(g, budget)) is not None]
    # A zoomed panel over the first budget shows how fast each model relearns; the full
    # panel shows where it ends. Only worth it when the first budget is a small fraction.
    zoom = first is not None and budget >= 4 * first
    with rc():
        fig = figure(7.0, 3.6)
        axes = fig.subplots(1, 2, sharey=True, width_ratios=[1, 1.6]) if zoom else \
            [fig.subplots(1, 1)]
        for ax in axes:
            for g, c in lines:
                color = color_for(g.kind, g.alpha)
                lo = [m - s for m, s in zip(c["mean"], c["std"], strict=True)]
                hi = [m + s for m, s in zip(c["mean"], c["std"], strict=True)]
                ax.fill_between(c["steps"], lo, hi, color=color, alpha=0.15, linewidth=0)
                ax.plot(c["steps"], c["mean"], color=color, label=g.label, zorder=3,
                        linestyle=":" if g.kind == "base" else "-")
            chance_h(ax, summary["metric"]["chance"], label=ax is axes[0])
            for b in summary["budgets"]:
                if b > 0:
                    ax.axvline(b, color="#999999", linewidth=0.6, linestyle=":", zorder=0)
            ax.set_xlabel("attack steps")
        if zoom:
            axes[0].set_xlim(0, min(2 * first, budget))
            axes[0].set_title(f"first {min(2 * first, budget)} steps")
            axes[1].set_xlim(0, max(c["steps"][-1] for _, c in lines) if lines else budget)
            axes[1].set_title("full attack")
        axes[0].set_ylabel(f"{summary['metric']['name']} at worst-case LR\n"
                           f"({'lower' if summary['metric']['higher_is_worse'] else 'higher'}"
                           " is more robust)")
        if not lines:
            axes[0].text(0.5, 0.5, "no model was attacked", ha="center",
                         transform=axes[0].transAxes)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(len(labels), 1)),
                   frameon=False)
        fig.suptitle(f"Relearning attacks: {summary['study']} (band: ±1 std over seeds; "
                     f"LR: worst case at {budget} steps)", fontsize=9)
        return png(fig)


# ----------------------------------------------------------------------------- frontier


def frontier(summary: dict) -> bytes:
    """Compute (fraction of gold steps) vs robustness at the largest budget."""
    budget = views.largest_budget(summary)
    points = views.frontier(summary)
    with rc():
        fig = figure(5.0, 3.6)
        ax = fig.subplots(1, 1)
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
        ax.set_xlabel("compute: steps / gold-standard steps")
        ax.set_ylabel(f"robustness after {budget} attack steps")
        ax.set_xlim(left=-0.03)
        ax.set_title(f"Compute vs robustness ({summary['study']})")
        if not points:
            ax.text(0.5, 0.5, "no model has both compute and robustness", ha="center",
                    transform=ax.transAxes)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return png(fig)


# ----------------------------------------------------------------------------- pareto


def pareto(summary: dict) -> bytes:
    """Retain metric vs worst-case forget metric after k attack steps, one panel per budget."""
    budgets = summary["budgets"]
    retain_name = summary["retain_metric"]["name"]
    ncols = min(len(budgets), 3)
    nrows = math.ceil(len(budgets) / ncols)
    with rc():
        fig = figure(7.0, 2.5 * nrows + 0.9)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax, b in zip(axes, budgets, strict=False):
            for g in views.groups(summary):
                xs, ys = [], []
                for m in g.models:
                    y = views.worst_case(m, b)
                    if y is None and b == 0:  # never attacked: its own metric is the k=0 value
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
            chance_h(ax, summary["metric"]["chance"], label=ax is axes[0])
            ax.set_title(f"after {b} attack steps" if b else "before the attack (k = 0)")
            ax.set_xlabel(retain_name + _chance_note(summary["retain_metric"]["chance"]))
            ax.margins(x=0.15)
        for ax in axes[len(budgets):]:
            ax.set_visible(False)
        for row in range(nrows):
            axes[row * ncols].set_ylabel(f"worst-case {_metric_label(summary)}")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(len(labels), 1)),
                   frameon=False)
        fig.suptitle(f"Retain vs forget after relearning ({summary['study']})", fontsize=9)
        return png(fig)


def _chance_note(chance: float | None) -> str:
    return "" if chance is None else f"  (chance {chance:g})"


FIGURES = {"relearning": relearning, "frontier": frontier, "pareto": pareto}


def render_all(summary: dict) -> dict[str, bytes]:
    """Every figure as PNG bytes, keyed by file stem (`relearning` -> plots/relearning.png)."""
    figures = {name: fn(summary) for name, fn in FIGURES.items()}
    if searched(summary):  # a study with the adaptive attack search
        figures["search"] = progress_plot(summary)
    return figures
