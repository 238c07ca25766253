"""Every arm's numbers with their interval bounds as rows: `table.csv` and the comparison
page's table.

One row per (attack, budget, row); a row is a reference (`gold`, `unlearn-only`), an arm
(`UNDO α=0.8`, `Unlearn-and-Distill`) or a single model by name, exactly as the summary's
`intervals` section names them. Every number is copied from summary.json: the point and its
95% bootstrap bounds in separate columns (`worst_case`, `worst_case_lo`, `worst_case_hi`,
...), compute as fractions of the gold standard (distillation only and, `total_*`,
unlearning included). A summary without `intervals` (written before them) gives the mean
over each arm's seeds with empty bounds; the `interval` column says which. Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

from ..analysis.arms import row_of
from ..analysis.robustness import budget_key
from . import views

COMPUTE = ("fraction_of_gold_steps", "fraction_of_gold_flops",
           "total_fraction_of_gold_steps", "total_fraction_of_gold_flops")
VALUES = ("worst_case", "robustness", *COMPUTE)
COLUMNS = ["run", "attack", "budget", "row", "kind", "alpha", "n_models", "interval",
           "worst_case_lr", *(f"{v}{end}" for v in VALUES for end in ("", "_lo", "_hi"))]
NO_INTERVAL = "none (mean over seeds)"

Row = dict[str, Any]


def _bounds(row: Row, name: str, x: dict | None) -> None:
    x = x or {}
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = x.get("point"), x.get("lo"), x.get("hi")


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _base_row(attack: str, budget: int, name: str, members: list[dict]) -> Row:
    first = members[0] if members else {}
    row: Row = dict.fromkeys(COLUMNS)
    row.update(attack=attack, budget=budget, row=name, kind=first.get("kind"),
               alpha=first.get("alpha"), n_models=len(members))
    for key in COMPUTE:  # references and single models: their own values, no interval
        row[key] = _mean([m["compute"].get(key) for m in members])
    return row


def _with_intervals(summary: dict) -> list[Row]:
    iv_all = summary["intervals"]
    out = []
    for attack, by_budget in iv_all["attacks"].items():
        for key, iv in by_budget.items():
            level = iv.get("method", {}).get("level")
            names = list(iv["worst_case"]) + [r for r in iv["robustness"]
                                              if r not in iv["worst_case"]]
            for name in names:
                members = [m for m in summary["models"] if row_of(m) == name]
                row = _base_row(attack, int(key), name, members)
                row["interval"] = f"{100 * level:g}% bootstrap" if level else NO_INTERVAL
                _bounds(row, "worst_case", iv["worst_case"].get(name))
                row["worst_case_lr"] = (iv["worst_case"].get(name) or {}).get("lr")
                _bounds(row, "robustness", iv["robustness"].get(name))
                for c in COMPUTE:
                    if name in iv_all.get("compute", {}):
                        _bounds(row, c, iv_all["compute"][name].get(c))
                out.append(row)
    return out


def _seed_means(summary: dict) -> list[Row]:
    attack = (summary.get("attacks") or ["grid"])[0]
    out = []
    for b in (b for b in summary["budgets"] if b > 0):
        for g in views.groups(summary):
            attacked = [m for m in g.models if m.get("attack")]
            if not attacked:
                continue
            row = _base_row(attack, b, row_of(g.models[0]), g.models)
            row["interval"] = NO_INTERVAL
            row["worst_case"] = _mean([views.worst_case(m, b) for m in attacked])
            lrs = {m["attack"]["worst_case"][budget_key(b)]["lr"] for m in attacked}
            row["worst_case_lr"] = lrs.pop() if len(lrs) == 1 else None
            row["robustness"] = _mean([views.counted_robustness(m, b) for m in g.models])
            out.append(row)
    return out


def arm_rows(summary: dict) -> list[Row]:
    """Every row of the table (see the module doc), `run` left empty."""
    return _with_intervals(summary) if summary.get("intervals", {}).get("attacks") \
        else _seed_means(summary)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return repr(v) if isinstance(v, float) else str(v)  # repr: floats read back exactly


def to_csv(runs: Sequence[tuple[str, dict]]) -> str:
    """The CSV of every run's rows, one `run` column first (the run's label)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for label, summary in runs:
        for row in arm_rows(summary):
            row["run"] = label
            w.writerow([_cell(row[c]) for c in COLUMNS])
    return buf.getvalue()
