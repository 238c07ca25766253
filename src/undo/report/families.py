"""The robustness table across attack families (summary.json `robustness_table`,
docs/summary-schema.md): per row (the gold standard, unlearn-only, each arm, each single
model), each attack's worst case at the study's largest budget with its 95% interval,
robustness where defined, the retain metric the attack left and the utility flag; then
the worst case over attacks that kept utility (retain within `search.utility_floor` of
its pre-attack value: `utility_ok`, the one rule the grid and the search use).

Assembled from the summary's own entries and intervals (no file read, no torch), so the
report, the verdict and the model card read one table.
"""

from __future__ import annotations

import math
from typing import Any

from ..analysis.arms import row_of
from ..analysis.robustness import budget_key, mean_std

ORDER = {"gold": 0, "unlearn-only": 1}


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and math.isfinite(x)]
    return mean_std(vals)[0] if vals and len(vals) == len(xs) else None


def _cell(members: list[dict], name: str, key: str, iv: dict | None,
          row: str) -> dict[str, Any] | None:
    secs = [(m.get("attacks") or {}).get(name) for m in members]
    if not secs or any(s is None for s in secs):
        return None
    worst = [s["worst_case"].get(key) for s in secs]
    if any(w is None for w in worst):
        return None
    rob: Any = None
    if iv is not None and row in iv.get("robustness", {}):
        rob = iv["robustness"][row]
    elif len(members) == 1:  # a single model: its own robustness, no interval
        point = (members[0].get("robustness_by_attack") or {}).get(name, {}).get(key)
        rob = None if point is None else {"point": point, "lo": None, "hi": None}
    w_iv = (iv or {}).get("worst_case", {}).get(row)
    return {
        "value": _mean([w["value"] for w in worst]),
        "interval": None if w_iv is None else {"point": w_iv["point"], "lo": w_iv["lo"],
                                               "hi": w_iv["hi"]},
        "robustness": rob,
        "retain": _mean([w.get("retain") for w in worst]),
        "utility_ok": all(w.get("utility_ok") is not False for w in worst),
        "setting": worst[0].get("setting", worst[0].get("lr")) if len(worst) == 1 else None,
    }


def robustness_table(entries: list[dict[str, Any]], attacks: list[str],
                     families: dict[str, dict[str, Any]], intervals: dict[str, Any],
                     budget: int, higher_is_worse: bool) -> dict[str, Any]:
    """The table (see the module's docstring); `families`: attack -> {family, trains}."""
    key = budget_key(budget)
    rows: dict[str, list[dict]] = {}
    for e in entries:
        if e["kind"] == "base" or not e.get("attacks"):
            continue
        if e["kind"] in ("undo", "unlearn_distill") and e.get("recovered") is False:
            continue  # left out of its arm, as in the intervals
        rows.setdefault(row_of(e), []).append(e)
    out_rows = []
    for row, members in sorted(rows.items(), key=lambda kv: (ORDER.get(kv[0], 2), kv[0])):
        cells = {n: _cell(members, n, key, (intervals.get(n) or {}).get(key), row)
                 for n in attacks}
        kept = [(n, c) for n, c in cells.items()
                if c is not None and c["utility_ok"] and c["value"] is not None]
        worst = None
        if kept:
            n, c = (max if higher_is_worse else min)(kept, key=lambda nc: nc[1]["value"])
            worst = {"attack": n, "family": families[n]["family"], "value": c["value"],
                     "interval": c["interval"], "robustness": c["robustness"]}
        robs = [(n, c["robustness"]["point"]) for n, c in kept
                if c["robustness"] is not None and c["robustness"]["point"] is not None]
        least = min(robs, key=lambda nr: nr[1]) if robs else None
        out_rows.append({
            "row": row, "kind": members[0]["kind"],
            "models": [m["name"] for m in members], "cells": cells,
            "worst": worst,
            "least_robust": None if least is None else {"attack": least[0],
                                                        "robustness": least[1]},
        })
    return {"budget": budget,
            "attacks": [{"attack": n, **families[n]} for n in attacks],
            "rows": out_rows}


# ------------------------------------------------------------------------ rendering


def table_of(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The summary's robustness table (None where the study ran only the paper's two
    finetuning attacks)."""
    return summary.get("robustness_table")


def _label(col: dict[str, Any]) -> str:
    return f"{col['attack']} ({col['family']})" if col["family"] != col["attack"] \
        else col["attack"]


def format_families(summary: dict[str, Any]) -> str:
    """The table as fixed-width text: per row, each attack's worst case [95%] and R."""
    from .views import fmt, fmt_ci

    t = table_of(summary)
    if t is None:
        return ""
    cols = t["attacks"]
    head = ["", *(_label(c) for c in cols), "worst (utility kept)"]
    rows = [head]
    for r in t["rows"]:
        line = [r["row"]]
        for c in cols:
            cell = r["cells"].get(c["attack"])
            if cell is None:
                line.append("-")
                continue
            v = fmt_ci(cell["interval"], 3) if cell["interval"] else fmt(cell["value"], 3)
            rob = cell["robustness"]
            v += "" if rob is None or rob.get("point") is None else f" R={fmt(rob['point'], 2)}"
            line.append(v + ("" if cell["utility_ok"] else " †"))
        w = r["worst"]
        line.append("-" if w is None else f"{fmt(w['value'], 3)} ({w['attack']})")
        rows.append(line)
    widths = [max(len(x[i]) for x in rows) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)).rstrip()
            for x in rows]
    metric = summary["metric"]["name"]
    text.insert(1, "-" * len(text[0]))
    text.append(f"worst-case {metric} after {t['budget']} attack steps (an attack that trains "
                f"no weight gives the same value at every budget) [95% interval]; R: "
                f"robustness (1: as the gold standard, 0: as unlearn-only); †: the attack "
                f"left the retain metric below the utility floor (not counted as worst)")
    return "\n".join(text)


def html_families(summary: dict[str, Any], escape: Any) -> str:
    text = format_families(summary)
    if not text:
        return ""
    return ("<h2>Robustness across attack families</h2>\n<pre>" + escape(text) + "</pre>")


def heatmap_figure(summary: dict[str, Any]) -> Any:
    """Rows (references, arms, single models) x attacks: the worst-case forget metric,
    annotated with robustness where defined; † where utility broke."""
    import numpy as np

    from .figures import figure

    t = table_of(summary)
    assert t is not None
    cols, rows = t["attacks"], t["rows"]
    vals = np.full((len(rows), len(cols)), np.nan)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell = r["cells"].get(c["attack"])
            if cell is not None and cell["value"] is not None:
                vals[i, j] = cell["value"]
    fig = figure(1.6 + 1.15 * len(cols), 0.9 + 0.42 * len(rows))
    ax = fig.subplots()
    hiw = summary["metric"]["higher_is_worse"]
    im = ax.imshow(vals, cmap="Reds" if hiw else "Reds_r", aspect="auto")
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            cell = r["cells"].get(c["attack"])
            if cell is None:
                ax.text(j, i, "-", ha="center", va="center", fontsize=7)
                continue
            rob = cell["robustness"]
            text = f"{cell['value']:.2f}" if cell["value"] is not None else "-"
            if rob is not None and rob.get("point") is not None:
                text += f"\nR={rob['point']:.2f}"
            if not cell["utility_ok"]:
                text += " †"
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(cols)), [_label(c) for c in cols], rotation=30, ha="right",
                  fontsize=7)
    ax.set_yticks(range(len(rows)), [r["row"] for r in rows], fontsize=7)
    fig.colorbar(im, ax=ax, label=f"worst-case {summary['metric']['name']}")
    ax.set_title(f"Attack families after {t['budget']} steps (R: robustness; "
                 f"†: utility broke)", fontsize=8)
    return fig
