"""`undo report RUN_A RUN_B ... --out DIR`: several studies on one page.

Like the paper's WMDP figure (a MaxEnt and an RMU teacher side by side): each run's arms
next to the other runs', every figure one panel per run, each run labelled by its folder
name and the config keys in which the runs differ. Runs must measure the same thing (one
benchmark, one forget and one retain metric) and share an attack budget; the figures and
the side-by-side table use the largest budget they share. Every run is loaded and checked
before anything is drawn, and everything is drawn before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ..config import RESULT_NEUTRAL_KEYS
from ..configlib import ABSENT, differing
from . import arms, plots, schema
from .build import check_out_dir, run_label, summary_path, write_files
from .errorbars import ATTACK_LABELS
from .html import CAPTIONS, CSS, figure_html
from .verdict import verdict


@dataclass
class Run:
    label: str
    path: Path
    summary: dict


@dataclass
class Comparison:
    """What `write_comparison` wrote."""

    html: Path
    plots: dict[str, Path]  # figure stem -> PNG
    table: Path
    runs: list[Run]
    differences: dict[str, list[Any]]  # dotted config key -> value per run
    budgets: list[int]  # shared by every run
    files: list[Path]


def load_runs(run_dirs: Sequence[str | Path]) -> list[Run]:
    """Every run's validated summary, labelled by folder name (the path where two folders
    share a name). SummaryError names the first run that cannot be read."""
    seen: dict[Path, str] = {}
    runs = []
    for d in run_dirs:
        src = summary_path(d)
        key = src.resolve()
        if key in seen:
            raise schema.SummaryError(f"{d}: given twice (as {seen[key]} too); each run once")
        seen[key] = str(d)
        runs.append(Run(run_label(src.parent), src.parent, schema.load(src)))
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:
            r.label = str(r.path)
    return runs


def _measures(summary: dict) -> tuple:
    m, r = summary["metric"], summary["retain_metric"]
    return summary.get("benchmark"), m["name"], m["higher_is_worse"], r["name"]


def shared_budgets(runs: Sequence[Run]) -> list[int]:
    """The budgets every run attacked at; SummaryError when the runs cannot share axes."""
    first = runs[0]
    for r in runs[1:]:
        (b1, *m1), (b2, *m2) = _measures(first.summary), _measures(r.summary)
        # A summary written before `benchmark` was recorded is judged by its metrics alone.
        if m1 != m2 or None not in (b1, b2) and b1 != b2:
            def what(x: Run) -> str:
                bench, forget, _, retain = _measures(x.summary)
                return f"{x.label} ({bench or 'benchmark not recorded'}: {forget}, {retain})"
            raise schema.SummaryError(
                f"cannot compare runs that measure different things: {what(first)} vs "
                f"{what(r)}; compare runs of one benchmark")
    budgets = sorted(set.intersection(*(set(r.summary["budgets"]) for r in runs)))
    if not any(b > 0 for b in budgets):
        raise schema.SummaryError(
            "the runs share no attack budget: " + ", ".join(
                f"{r.label} {r.summary['budgets']}" for r in runs))
    return budgets


def config_differences(runs: Sequence[Run]) -> dict[str, list[Any]]:
    """Dotted config keys whose value is not the same in every run -> value per run
    (`ABSENT` where a run's config lacks the key)."""
    return differing([r.summary["config"] for r in runs])


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)


def titles(runs: Sequence[Run], diff: dict[str, list[Any]], most: int = 2) -> list[str]:
    """Panel titles: the run's label over (up to `most` of) the keys that set it apart,
    one a line: keys that change results (not where or how a run went: the difference
    table still lists those), and among them first the keys every run's config holds (a
    key an older run lacks mostly says when it ran, not what)."""
    keys = sorted((k for k in diff if k not in RESULT_NEUTRAL_KEYS),
                  key=lambda k: ABSENT in diff[k])
    more = f" (+{len(keys) - most} more)" if len(keys) > most else ""
    return ["\n".join([r.label, *(f"{k}={_show(diff[k][i])}" for k in keys[:most])]) + more
            for i, r in enumerate(runs)]


# ----------------------------------------------------------------------------- the page


def _fmt(row: dict, name: str, digits: int = 3) -> str:
    v = row.get(name)
    if v is None:
        return "-"
    lo, hi = row.get(f"{name}_lo"), row.get(f"{name}_hi")
    interval = "" if lo is None or hi is None else f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{v:.{digits}f}{interval}"


def side_by_side(runs: Sequence[Run], budget: int) -> str:
    """One line per reference or arm, each run's worst case, robustness and compute side by
    side (each run's first attack: the paper's where the study ran several)."""
    per_run, attacks = [], []
    for r in runs:
        rows = [x for x in arms.arm_rows(r.summary) if x["budget"] == budget]
        attacks.append(rows[0]["attack"] if rows else None)
        per_run.append({x["row"]: x for x in rows if x["attack"] == attacks[-1]})
    names = list(dict.fromkeys(n for rows in per_run for n in rows))
    e = escape
    head = "<tr><th></th>" + "".join(
        f'<th colspan="4">{e(r.label)} ({e(ATTACK_LABELS.get(a, f"attack {a}"))})</th>'
        for r, a in zip(runs, attacks, strict=True)) + "</tr><tr><th>arm</th>" + \
        "".join(f"<th>worst case @{budget}</th><th>R@{budget}</th><th>compute (steps)</th>"
                "<th>total FLOPs</th>" for _ in runs) + "</tr>"
    body = []
    for n in names:
        cells = [f"<td>{e(n)}</td>"]
        for rows in per_run:
            x = rows.get(n, {})
            cells += [f"<td>{e(_fmt(x, c, d))}</td>" for c, d in (
                ("worst_case", 3), ("robustness", 2), ("fraction_of_gold_steps", 3),
                ("total_fraction_of_gold_flops", 3))]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}'
            "</tbody></table></div>")


def _differences_html(runs: Sequence[Run], diff: dict[str, list[Any]]) -> str:
    if not diff:
        return '<p class="note">The runs\' configs are identical.</p>'
    head = "<tr><th>config key</th>" + "".join(f"<th>{escape(r.label)}</th>" for r in runs)
    rows = "".join("<tr><td>" + escape(k) + "</td>"
                   + "".join(f"<td>{escape(_show(v))}</td>" for v in vals) + "</tr>"
                   for k, vals in diff.items())
    return f"<table><thead>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_page(runs: Sequence[Run], diff: dict[str, list[Any]], budgets: list[int],
                figures: dict[str, bytes]) -> str:
    top = budgets[-1]
    names = ", ".join(r.label for r in runs)
    listing = "".join(
        f"<tr><td>{escape(r.label)}</td><td>{escape(str(r.path))}</td>"
        f"<td>{escape(r.summary['study'])}</td><td>{len(r.summary['models'])}</td></tr>"
        for r in runs)
    verdicts = "".join(f"<dt>{escape(r.label)}</dt><dd>{escape(verdict(r.summary)[0])}</dd>"
                       for r in runs)
    shared = f" One panel per run, at the largest budget all runs share ({top} steps)."
    figs = "\n".join(figure_html(name, png, CAPTIONS.get(name, "") + shared)
                     for name, png in figures.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>undo report: {escape(names)}</title><style>{CSS}</style></head>
<body>
<h1>UNDO studies compared: {escape(names)}</h1>
<h2>Runs</h2>
<table><thead><tr><th>run</th><th>folder</th><th>study</th><th>models</th></tr></thead>
<tbody>{listing}</tbody></table>
<h2>What differs</h2>
{_differences_html(runs, diff)}
<h2>Arms side by side, after {top} attack steps</h2>
{side_by_side(runs, top)}
<p class="note">[lo, hi]: the study's 95% bootstrap interval where its summary has one.
Compute: fractions of each run's own gold standard (steps: distillation only, as in the
paper; total FLOPs: unlearning included). Every attack and budget, each bound its own
column: <a href="table.csv">table.csv</a>. Each run's own report.html has the rest.</p>
<h2>Verdicts</h2>
<dl>{verdicts}</dl>
<h2>Figures</h2>
{figs}
<p class="note">Generated by <code>undo report</code> from the runs' summary.json alone.</p>
</body></html>
"""


def write_comparison(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Comparison:
    """The comparison page, its figures and table.csv in `out_dir`. Raises SummaryError
    (a run that cannot be read, runs that cannot share axes, a bad `out_dir`) before
    anything is written."""
    out = Path(out_dir)
    runs = load_runs(run_dirs)
    check_out_dir(out)
    if any(out.resolve() == r.path.resolve() for r in runs):
        raise schema.SummaryError(f"--out {out} is one of the runs' folders; the comparison "
                                  f"would overwrite that run's own report: pick a new folder")
    budgets = shared_budgets(runs)
    diff = config_differences(runs)
    labelled = list(zip(titles(runs, diff), (r.summary for r in runs), strict=True))
    figures = plots.compare_figures(labelled, budgets)
    page = render_page(runs, diff, budgets, {k: f["png"] for k, f in figures.items()})
    table = arms.to_csv([(r.label, r.summary) for r in runs])
    pngs, files = write_files(out, figures, page, table)
    return Comparison(out / "report.html", pngs, out / "table.csv", runs, diff, budgets, files)
