"""The model card (README.md) of an exported model: Hub metadata in YAML front matter and
the run's measured facts, every number read from its summary.json (nothing re-measured).

Metadata goes through huggingface_hub's `ModelCardData`, so the keys and their YAML are
the ones the Hub parses (base_model, license, library_name, pipeline_tag, tags).
"""

from __future__ import annotations

import math
from typing import Any

from ..provenance import version_line
from ..report import views
from ..report.table import fmt_count, fmt_fraction

TAGS = ["undo", "unlearning", "robust-unlearning", "distillation"]


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def base_model_id(summary: dict) -> str | None:
    """The hub id the run's base model came from (None: a preset or a local folder)."""
    from ..provenance import is_hub_id

    source = (summary.get("environment") or {}).get("model_source") or {}
    name = source.get("name_or_path") or summary["config"]["model"].get("name_or_path")
    return name if name and source.get("gguf_file") is None and is_hub_id(name) else None


def base_license(base: str | None) -> str | None:
    """The license on the base model's own card, if that card is in the hub cache."""
    if base is None:
        return None
    from huggingface_hub import ModelCard, try_to_load_from_cache

    path = try_to_load_from_cache(base, "README.md")
    if not isinstance(path, str):
        return None
    return ModelCard.load(path).data.to_dict().get("license")


def front_matter(summary: dict, license: str | None) -> str:
    """The card's YAML metadata block, fenced by --- lines."""
    from huggingface_hub import ModelCardData

    base = base_model_id(summary)
    data = ModelCardData(base_model=base, license=license or base_license(base),
                         library_name="transformers", pipeline_tag="text-generation",
                         tags=[*TAGS, f"benchmark-{summary['benchmark']}"])
    return f"---\n{data.to_yaml()}\n---\n"


def _by_kind(summary: dict, kind: str) -> dict | None:
    return next((m for m in summary["models"] if m["kind"] == kind), None)


def _recovery(summary: dict, entry: dict, stage: dict) -> str:
    name = summary["retain_metric"]["name"]
    teacher = (stage.get("teacher_metrics") or {}).get(name)
    own = entry["metrics"].get(name)
    stop = stage.get("stop") or {}
    rule = f"rule `{stop.get('rule')}`, within {stop.get('within')}" if stop else "its rule"
    if entry.get("recovered") is True:
        return (f"**Recovered** the teacher's retain ability within its distillation budget "
                f"({rule}): {name} {_f(own)} against the teacher's {_f(teacher)}.")
    if entry.get("recovered") is False:
        return (f"**Did NOT recover** the teacher's retain ability within its distillation "
                f"budget ({rule}): {name} {_f(own)} against the teacher's {_f(teacher)}. "
                f"Its robustness is therefore no success: a model that lost its retain "
                f"ability is trivially hard to relearn.")
    return (f"Not a distilled model, so no recovery test applies; its {name} is "
            f"{_f(own)}.")


def _robustness_table(summary: dict, entry: dict) -> str:
    if not entry.get("attack"):
        return "This model was not attacked in the run: no robustness was measured."
    metric = summary["metric"]["name"]
    worse = "higher" if summary["metric"]["higher_is_worse"] else "lower"
    seeds = len(entry["attack"]["seeds"])
    refs = [(label, m) for label, m in (("unlearn-only", _by_kind(summary, "unlearn_only")),
                                        ("gold standard", _by_kind(summary, "gold")))
            if m is not None and m is not entry and m.get("attack")]
    head = (f"| attack steps | {metric}: this model (mean ± std over {seeds} attack "
            f"seed{'s' * (seeds > 1)}, worst LR) | "
            + "".join(f"{label} | " for label, _ in refs) + "robustness |")
    rows = [head, "|" + "---|" * (3 + len(refs))]
    for b in summary["budgets"]:
        w = entry["attack"]["worst_case"][str(b)]
        cells = [f"{_f(w['value'])} ± {_f(w['std'])} (lr {w['lr']:.0e})"]
        cells += [_f(views.worst_case(m, b)) for _, m in refs]
        r = entry["robustness"].get(str(b))
        cells.append("undefined" if r is None else _f(r, 2))
        rows.append(f"| {b} | " + " | ".join(cells) + " |")
    lines = [f"Relearning attacks: finetuning on forget-domain data over learning rates "
             f"{entry['attack']['lrs']}; the worst case over them after each budget "
             f"({worse} {metric} = more relearned).", "", *rows, ""]
    if not summary.get("gold_standard", True):
        lines.append("The run had no gold standard (`study.gold=none`), so robustness "
                     "relative to one is not available; compare with the unlearn-only "
                     "model instead. Robustness needs a model of this architecture trained "
                     "without the forget data: `study.gold=PATH` (its folder), or "
                     "`study.gold=pretrain` (pretrain one on the retain data, at the cost "
                     "of a full pretraining).")
    else:
        lines.append("Robustness: 1 = as hard to relearn as the gold standard that never "
                     "saw the forget data, 0 = as easy as unlearning alone (undefined "
                     "where the two are too close to scale against, or the student did "
                     "not recover).")
    search = entry.get("search")
    if search:
        wc = {k: (v or {}).get("value") for k, v in search["worst_case"].items()}
        lines.append(f"\nAdaptive attack search ({search['trials']} trials x "
                     f"{search['steps']} steps): worst case {metric} "
                     + ", ".join(f"{_f(v)} after {k}" for k, v in wc.items()) + ".")
    return "\n".join(lines)


def _compute(entry: dict) -> str:
    c = entry["compute"]
    out = (f"{fmt_count(c.get('steps'))} optimizer steps, {fmt_count(c.get('tokens'))} "
           f"tokens, {fmt_count(c.get('flops'))} FLOPs")
    if c.get("fraction_of_gold_steps") is not None:
        out += (f": {fmt_fraction(c['fraction_of_gold_steps'])} of the gold standard's "
                f"pretraining steps (at its tokens per step) and "
                f"{fmt_fraction(c.get('fraction_of_gold_flops'))} of its FLOPs")
    return out + "."


def _what(summary: dict, entry: dict) -> str:
    cfg = summary["config"]
    method = cfg["unlearn"]["method"]
    label = views.KIND_LABELS.get(entry["kind"], entry["kind"])
    if entry["kind"] == "undo":
        return (f"UNDO (Unlearn, Noise, Distill-on-Outputs; arXiv 2506.06278): the base "
                f"model unlearned with `{method}` (the teacher), a copy of the teacher "
                f"noised with α = {entry['alpha']:g} (β = {cfg['noise']['beta']:g}), then "
                f"distilled from the teacher's outputs (seed {entry['seed']}).")
    if entry["kind"] == "unlearn_distill":
        return (f"Unlearn-and-Distill: the base model unlearned with `{method}`, then "
                f"distilled into a random init (seed {entry['seed']}).")
    if entry["kind"] == "unlearn_only":
        return f"The base model unlearned with `{method}` (no distillation)."
    return f"The run's {label} model."


def _data(summary: dict) -> str:
    data = summary["config"]["data"]
    flat = ", ".join(f"`{k}` = {v}" for k, v in data.items()
                     if k != "benchmark" and (not isinstance(v, (dict, list)) or len(str(v)) < 80))
    return f"Benchmark `{summary['benchmark']}` ({flat})."


def _attack_families(summary: dict, entry: dict) -> list[str]:
    """`## Robustness across attack families`: the summary's robustness table for this
    model's row beside the gold standard's and unlearn-only's (none where the study ran
    only the paper's two finetuning attacks)."""
    from ..analysis.arms import row_of

    table = summary.get("robustness_table")
    if not table:
        return []
    rows = {r["row"]: r for r in table["rows"]}
    mine = rows.get(row_of(entry))
    if mine is None:
        return []

    def cell(r: dict | None, attack: str) -> str:
        c = (r or {}).get("cells", {}).get(attack)
        if c is None or c["value"] is None:
            return "-"
        iv = c.get("interval") or {}
        text = f"{c['value']:.3f}" + (f" [{iv['lo']:.3f}, {iv['hi']:.3f}]"
                                      if iv.get("lo") is not None else "")
        return text + ("" if c["utility_ok"] else " †")

    def rob(attack: str) -> str:
        r = (mine["cells"].get(attack) or {}).get("robustness") or {}
        if r.get("point") is None:
            return "-"
        return f"{r['point']:.2f}" + (f" [{r['lo']:.2f}, {r['hi']:.2f}]"
                                      if r.get("lo") is not None else "")

    metric = summary["metric"]["name"]
    lines = [f"| attack (family) | {metric}: this model ({mine['row']}) | gold standard | "
             "unlearn-only | robustness |", "|---|---|---|---|---|"]
    for col in table["attacks"]:
        a = col["attack"]
        lines.append(f"| {a} ({col['family']}) | {cell(mine, a)} | {cell(rows.get('gold'), a)} "
                     f"| {cell(rows.get('unlearn-only'), a)} | {rob(a)} |")
    w = mine.get("worst")
    worst = ("" if w is None else f"The worst case over attacks that kept utility: "
             f"{w['value']:.3f} under `{w['attack']}` ({w['family']}).")
    return ["## Robustness across attack families", "",
            f"Worst-case {metric} after {table['budget']} attack steps (an attack that trains "
            f"no weight gives the same value at any budget), with 95% intervals; robustness "
            f"1 = as the gold standard, 0 = as unlearn-only; † = the attack broke utility "
            f"(retain below the floor). {worst}", "", *lines, ""]


def model_card(summary: dict, entry: dict, *, stage: dict, dtype: str,
               figure: str | None, evidence: list[str], license: str | None = None) -> str:
    """README.md of the exported `entry` (a summary model), with YAML front matter."""
    env = summary.get("environment") or {}
    undo = env.get("undo") or {}
    git = undo.get("git")
    run_by = (f"undo {undo.get('version')}" + (f", git {git['commit'][:12]}"
                                              f"{' (uncommitted changes)' if git['dirty'] else ''}"
                                              if git else ", not from a git checkout")
              if undo else "an undo version that did not record itself")
    base = base_model_id(summary)
    teacher = _by_kind(summary, "unlearn_only")
    rm, fm = summary["retain_metric"]["name"], summary["metric"]["name"]
    parts = [
        front_matter(summary, license),
        f"# {summary['study']}: {entry['name']}", "",
        f"Base model: {f'[{base}](https://huggingface.co/{base})' if base else 'a model built or trained in the run'}"
        f" · weights: {dtype}, safetensors.", "",
        "## What it is", "", _what(summary, entry), "",
        "## Data", "", _data(summary), "",
        "## Retain ability", "", _recovery(summary, entry, stage), "",
    ]
    if teacher is not None and teacher is not entry:
        parts += [f"The teacher (unlearn-only): {rm} {_f(teacher['metrics'].get(rm))}, "
                  f"{fm} {_f(teacher['metrics'].get(fm))}; this model: {rm} "
                  f"{_f(entry['metrics'].get(rm))}, {fm} {_f(entry['metrics'].get(fm))}.", ""]
    parts += ["## Robustness to relearning", "", _robustness_table(summary, entry), ""]
    parts += _attack_families(summary, entry)
    if figure:
        parts += [f"![Relearning curves of every model in the run]({figure})", ""]
    parts += ["## Compute", "", _compute(entry), "",
              "## Provenance", "",
              f"- Run with {run_by}; exported with {version_line()}.",
              f"- Evidence beside this card: {', '.join(f'`{e}`' for e in evidence)} "
              f"(every number above is read from them).", ""]
    return "\n".join(parts) + "\n"
