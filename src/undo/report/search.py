"""The adaptive attack search in the report: grid and search side by side, the best-so-far
plot, and the recipes that broke each model. Read from summary.json's `search` sections
(undo.attacks.search; absent when the study ran no search)."""

from __future__ import annotations

from html import escape
from typing import Any

from .figures import chance_h, color_for, figure
from .table import fmt


def searched(summary: dict) -> list[dict]:
    """The models with a search section, in summary order."""
    return [m for m in summary["models"] if m.get("search")]


def progress_figure(summary: dict) -> Any:
    """Best-so-far forget metric (counted trials only) against trials, one line per model."""
    metric = summary["metric"]
    fig = figure(7.0, 3.4)
    ax = fig.subplots(1, 1)
    for m in searched(summary):
        best = m["search"]["best_so_far"]
        xs = [i + 1 for i, v in enumerate(best) if v is not None]
        ax.step(xs, [v for v in best if v is not None], where="post", label=m["name"],
                color=color_for(m["kind"], m.get("alpha")))
    chance_h(ax, metric["chance"])
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best {metric['name']} so far\n"
                  f"({'higher' if metric['higher_is_worse'] else 'lower'} is a stronger "
                  "attack)")
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(len(labels), 1)),
               frameon=False)
    fig.suptitle("Adaptive attack search: the strongest counted attack after n trials",
                 fontsize=9)
    return fig


def _recipe(params: dict[str, Any] | None) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def search_table(summary: dict) -> str:
    """HTML: per model and budget, the grid's and the search's worst case and robustness,
    and the recipe that reached the search's worst case at the largest budget."""
    budgets = [b for b in summary["budgets"] if b > 0]
    head = (["model"] + [f"grid @{b}" for b in budgets]
            + [f"grid under floor @{b}" for b in budgets] + [f"search @{b}" for b in budgets]
            + [f"R@{b} grid" for b in budgets] + [f"R@{b} search" for b in budgets]
            + ["trials", "search FLOPs", f"what broke it (@{summary['budgets'][-1]})"])
    lines = ["<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head)
             + "</tr></thead><tbody>"]
    for m in searched(summary):
        s, a = m["search"], m.get("attack") or {}
        grid = [(a.get("worst_case") or {}).get(str(b)) for b in budgets]
        floored = [(s.get("grid_under_floor") or {}).get(str(b)) for b in budgets]
        found = [s["worst_case"].get(str(b)) for b in budgets]
        top = s["worst_case"].get(str(summary["budgets"][-1])) or {}
        cells = [m["name"]]
        cells += [fmt(w["value"]) if w else "-" for w in grid]
        cells += [fmt(w["value"]) if w else "none" for w in floored]
        cells += [fmt(w["value"]) if w else "-" for w in found]
        cells += [fmt((m.get("robustness") or {}).get(str(b)), 2) for b in budgets]
        cells += [fmt((m.get("robustness_search") or {}).get(str(b)), 2) for b in budgets]
        cells += [str(s["trials"]), f"{s['cost']['flops']:.3g}",
                  f"{top.get('source', '-')}: {_recipe(top.get('params'))}"]
        lines.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    lines.append("</tbody></table>")
    return '<div class="scroll">' + "\n".join(lines) + "</div>"


def section(summary: dict) -> str:
    """The report's search section ('' without a search)."""
    if not searched(summary):
        return ""
    first = searched(summary)[0]["search"]
    floor = first["utility"]["floor"]
    return (f"<h2>Under the adaptive attack search</h2>\n{search_table(summary)}\n"
            f'<p class="note">Each model: {first["trials"]} Optuna trials of {first["steps"]} '
            f"steps over optimizer, LR, schedule, batch size, LoRA and data mix, started from "
            f"the grid's worst-case recipes; its worst case also counts every other model's "
            f"best recipe replayed against it. A trial counts only if the retain metric keeps "
            f"{floor:g} of its pre-attack value (CE: at most 1/{floor:g} of it); the grid "
            f"has no such floor, so its worst case may be a model that lost its retain "
            f"ability: \"grid under floor\" is its worst run that kept it (none: no run "
            f"did). Source: grid, tpe (a search trial) or replay:MODEL.</p>")
