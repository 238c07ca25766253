"""A self-contained `report.html`: verdict, table, figures (inlined PNG), formulas, config.

Every piece of text from the summary is escaped; the page loads nothing from the network.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

import yaml

from . import views
from .errorbars import html_intervals
from .families import html_families
from .figures import FORMATS
from .search import section as search_section
from .table import fmt, fmt_count, fmt_fraction, fmt_ms, fmt_seconds, group_rows, rows

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;
border-bottom:1px solid #ddd;padding-bottom:.2em}
.meta,.note{color:#666;font-size:.9em}.verdict{background:#f6f8fa;border-left:4px solid #4a7;
padding:.8em 1em}
table{border-collapse:collapse;font-size:.85em;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e3e3e3;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#fafafa;position:sticky;top:0}td:first-child,th:first-child,
td:nth-child(2),th:nth-child(2){text-align:left}
.scroll{overflow-x:auto}.std{color:#888;font-size:.85em}
figure{margin:1.2em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em;max-width:900px}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
code{font-size:.95em}dt{font-weight:600;margin-top:.6em}dd{margin-left:1.2em}
"""

CAPTIONS = {
    "relearning": "Forget metric during the relearning attack at each model's worst-case "
                  "learning rate (the LR that is worst at the largest budget). Lines: mean over "
                  "attack seeds (and over model seeds for UNDO at one α); band: ±1 std. "
                  "Dashed: chance. Dotted verticals: the attack budgets.",
    "frontier": "Compute (training steps as a fraction of the gold standard's) against "
                "robustness after the largest attack budget. One point per α (mean over seeds, "
                "error bars ±1 std, faint dots: single seeds); unlearn-only sits at robustness 0 "
                "and the gold standard at (1, 1) by definition.",
    "frontier_flops": "The same against FLOPs (forward and backward passes, a distillation "
                      "teacher's forward included) as a fraction of the gold standard's "
                      "pretraining FLOPs; the axis says whether the unlearning run is counted "
                      "(it is wherever the summary records total FLOPs).",
    "search": "Adaptive attack search: the strongest counted attack (forget metric at the "
              "search budget) after each trial, per model. Trials below the utility floor "
              "do not count.",
    "pareto": "Retain metric (before the attack) against the worst-case forget metric after "
              "k attack steps, one panel per budget. Dashed: chance.",
    "attack_families": "Every attack family side by side: the worst-case forget metric per "
                       "row (reference, arm, single model) and attack at the largest budget, "
                       "robustness R where defined; †: the attack broke utility.",
}


def _e(x: Any) -> str:
    return escape(str(x), quote=True)


def figure_html(name: str, png: bytes, caption: str | None = None) -> str:
    """A figure inlined as PNG, with links to its SVG and PDF files beside the page."""
    data = base64.b64encode(png).decode("ascii")
    links = " ".join(f'<a href="plots/{_e(name)}.{ext}">{ext.upper()}</a>'
                     for ext in FORMATS if ext != "png")
    text = CAPTIONS.get(name, "") if caption is None else caption
    return (f'<figure id="fig-{_e(name)}"><img alt="{_e(name)} plot" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(text)} '
            f'<span class="std">({links})</span></figcaption></figure>')


def model_table(summary: dict) -> str:
    budgets = summary["budgets"]
    head = (["model", "kind", "α", "seed", _e(summary["retain_metric"]["name"]),
             _e(summary["metric"]["name"])]
            + [f"worst-case @{b}" for b in budgets] + [f"R@{b}" for b in budgets]
            + ["compute (steps)", "compute (FLOPs)", "steps", "tokens", "FLOPs", "wall time"])
    lines = ["<table><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
             + "</tr></thead><tbody>"]
    by_name = {m["name"]: m for m in summary["models"]}
    for r in rows(summary):
        m = by_name[r.name]
        cells = [f'<td title="{_e(m.get("stage_dir") or "")}">{_e(r.label)}</td>',
                 f"<td>{_e(views.KIND_LABELS.get(r.kind, r.kind))}</td>",
                 f"<td>{'' if r.alpha is None else _e(f'{r.alpha:g}')}</td>",
                 f"<td>{'' if r.seed is None else _e(r.seed)}</td>",
                 f"<td>{_e(fmt(r.retain))}</td>", f"<td>{_e(fmt(r.forget))}</td>"]
        for b in budgets:
            w = r.worst[b]
            if w is None:
                cells.append("<td>-</td>")
            else:
                std = "" if w[1] is None else f' <span class="std">± {_e(fmt(w[1]))}</span>'
                cells.append(f'<td title="worst-case LR {_e(f"{w[2]:g}")}">'
                             f"{_e(fmt(w[0]))}{std}</td>")
        cells += [f"<td>{_e(fmt(r.robustness[b], 2))}</td>" for b in budgets]
        cells += [f"<td>{_e(fmt_fraction(r.compute))}</td>",
                  f"<td>{_e(fmt_fraction(m['compute']['fraction_of_gold_flops']))}</td>",
                  f"<td>{r.steps}</td>", f"<td>{_e(fmt_count(r.tokens))}</td>",
                  f"<td>{_e(fmt_count(r.flops))}</td>", f"<td>{_e(fmt_seconds(r.wall_time_s))}</td>"]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return '<div class="scroll">' + "\n".join(lines) + "</div>"


def group_table(summary: dict) -> str:
    """Every arm over its seeds, mean ± std ('' when every arm ran one seed)."""
    groups = group_rows(summary)
    if not groups:
        return ""
    top = views.largest_budget(summary)
    attacked = [b for b in summary["budgets"] if b > 0]
    head = (["arm", "seeds", "recovered", _e(summary["retain_metric"]["name"])]
            + [f"worst-case @{b}" for b in attacked]
            + [f"R@{top}", "compute (steps)", "compute (FLOPs)"])
    lines = ["<h2>Arms over seeds</h2>",
             '<div class="scroll"><table><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
             + "</tr></thead><tbody>"]
    for g in groups:
        r = fmt_ms(g.robustness, 2) + ("" if g.counted == g.n else f" ({g.counted} counted)")
        cells = ([g.label, str(g.n), f"{g.recovered}/{g.n}", fmt_ms(g.retain)]
                 + [fmt_ms(g.worst[b]) for b in attacked]
                 + [r, fmt_ms(g.compute, pct=True), fmt_ms(g.compute_flops, pct=True)])
        lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    lines.append("</tbody></table></div>")
    lines.append(f'<p class="note">Mean ± sample std over seeds; R@{top} over the seeds '
                 "whose student recovered, so a seed that did not is never averaged in.</p>")
    return "\n".join(lines)


def _definitions(summary: dict) -> str:
    metric = summary["metric"]
    worst = "maximum" if metric["higher_is_worse"] else "minimum"
    chance = summary["metric"]["chance"]
    return f"""<dl>
<dt>Worst-case forget metric after k attack steps, P(k)</dt>
<dd>The {worst} over the attack learning rates of <code>{_e(metric["name"])}</code> after k
steps of relearning (plain finetuning on forget-domain data), averaged over attack seeds
(± is the std over attack seeds). Chance level: {_e("n/a" if chance is None else f"{chance:g}")}.
</dd>
<dt>Robustness (R@k)</dt>
<dd><code>R = (P<sub>model</sub> − P<sub>unlearn-only</sub>) /
(P<sub>gold</sub> − P<sub>unlearn-only</sub>)</code>, with P = P(k). 0: as fragile as
unlearning alone; 1: as robust as the gold standard (a model never trained on the forget
data). "-": undefined, where the denominator is about 0 or for the two reference models.</dd>
<dt>Compute</dt>
<dd><code>Compute = S<sub>model</sub> / S<sub>gold</sub></code>: the model's training steps
as the study recorded them (<code>compute.steps</code>; for UNDO and Unlearn-and-Distill the
distillation steps, as in the paper) over the gold standard's pretraining steps. The tokens
column shows whether tokens per step are equal; the FLOPs column counts forward and backward
passes, a distillation teacher's forward pass included.</dd></dl>"""


def _environment(env: dict) -> str:
    flat: list[tuple[str, Any]] = []

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat.append((prefix, obj))

    walk("", env)
    body = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in flat)
    return f"<table><tbody>{body}</tbody></table>"


def render_html(summary: dict, figures: dict[str, bytes], verdict: str, composed: bool) -> str:
    """The whole page as one string (figures: file stem -> PNG bytes)."""
    env = summary["environment"]
    meta = " · ".join(f"{k}: {_e(env[k])}" for k in ("device", "world_size", "torch_threads",
                                                      "time") if k in env)
    source = ("composed by <code>undo report</code> from the numbers below" if composed
              else "written by the study")
    config = yaml.safe_dump(summary["config"], sort_keys=False, allow_unicode=True)
    figs = "\n".join(figure_html(name, png) for name, png in figures.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>undo report: {_e(summary["study"])}</title><style>{CSS}</style></head>
<body>
<h1>UNDO study: {_e(summary["study"])}</h1>
<p class="meta">{meta} · summary.json schema v{_e(summary["schema_version"])}</p>
<h2>Verdict</h2>
<p class="verdict">{_e(verdict)}</p>
<p class="note">Verdict {source}.</p>
<h2>Models</h2>
{model_table(summary)}
<p class="note">Hover a worst-case value for its learning rate, a model name for its stage
folder. Compute columns are fractions of the gold standard's steps and FLOPs.</p>
{group_table(summary)}
{html_intervals(summary, _e)}
<p class="note">Every arm's numbers with their interval bounds, per attack and budget:
<a href="table.csv">table.csv</a>. Each figure is also in <code>plots/</code> as SVG and
PDF.</p>
{search_section(summary)}
{html_families(summary, _e)}
<h2>Figures</h2>
{figs}
<h2>Definitions</h2>
{_definitions(summary)}
<h2>Configuration</h2>
<pre>{_e(config)}</pre>
<h2>Environment</h2>
{_environment(env)}
<p class="note">Generated by <code>undo report</code> from summary.json alone.</p>
</body></html>
"""
