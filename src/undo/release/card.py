"""The model card (README.md) of an exported model: Hub metadata in YAML front matter and
the run's measured facts, every number read from its summary.json (nothing re-measured).

Metadata goes through huggingface_hub's `ModelCardData`, so the keys and their YAML are
the ones the Hub parses (base_model, license, library_name, pipeline_tag, tags).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..provenance import version_line
from ..report import views
from ..report.table import fmt_count, fmt_fraction

TAGS = ["undo", "unlearning", "robust-unlearning", "distillation"]


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _source(summary: dict) -> dict:
    """Where the run's base model came from: the summary's `model_source`, else its
    config's model keys (a summary of an undo that recorded no source)."""
    model = summary["config"].get("model") or {}
    return (summary.get("environment") or {}).get("model_source") or {
        k: model.get(k) for k in ("name_or_path", "gguf_file", "revision")}


def base_model_id(summary: dict) -> str | None:
    """The hub id the run's base model came from, a GGUF file's hub repository included
    (None: a preset or a local folder or file)."""
    from ..provenance import is_hub_id

    source = _source(summary)
    name = source.get("name_or_path")
    if not name:
        return None
    return name if source.get("hub_commit") or is_hub_id(name) else None


def base_model_words(summary: dict) -> str:
    """The card's "Base model:" line: a hub id (linked, with its commit), a local folder or
    a GGUF file by name, or the preset the run pretrained from scratch."""
    source = _source(summary)
    name, gguf = source.get("name_or_path"), source.get("gguf_file")
    hub = base_model_id(summary)
    commit = source.get("hub_commit") or source.get("revision")
    at = f" at commit `{commit[:12]}`" if commit else ""
    if hub is not None:
        repo = f"[{hub}](https://huggingface.co/{hub}){at}"
        return (f"the GGUF file `{gguf}` of {repo}, dequantized to train" if gguf
                else repo)
    if gguf:
        path = Path(gguf) if name is None else Path(name) / gguf
        return f"the GGUF file `{path.name}` (`{path}`), dequantized to train"
    if name:
        return f"the local model folder `{name}`"
    preset = (summary["config"].get("model") or {}).get("preset")
    return (f"the `{preset}` preset, pretrained from scratch in the run" if preset
            else "a model built or trained in the run")


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


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _one_source(src: Any) -> str:
    """A data source in words: a text benchmark's source (`path`, `dataset` or
    `shipped`), or anything else as it is."""
    if not isinstance(src, dict):
        return f"`{src}`"
    if src.get("path"):
        text = f"the local file `{src['path']}`"
    elif src.get("shipped"):
        text = f"the corpus `{src['shipped']}` shipped with undo"
    elif src.get("data_files"):
        files = ", ".join(f"`{f}`" for f in src["data_files"])
        text = f"the file{'s' * (len(src['data_files']) > 1)} {files} (read as `{src.get('dataset')}`)"
    elif src.get("dataset"):
        d = src["dataset"]
        text = (f"the dataset [`{d}`](https://huggingface.co/datasets/{d})"
                + (f", config `{src['name']}`" if src.get("name") else "")
                + f", split `{src.get('split', 'train')}`")
    else:
        return f"`{src}`"
    if src.get("max_documents"):
        text += f" (its first {src['max_documents']} documents)"
    if src.get("field", "text") != "text":
        text += f" (field `{src['field']}`)"
    return text


def _sources(data: dict, role: str) -> str | None:
    """The `role` set (forget or retain) of a benchmark's data section, in words."""
    value = data.get(role)
    if value is None and data.get(f"{role}_ops"):  # the arithmetic benchmark
        return f"arithmetic problems of the operations {', '.join(data[f'{role}_ops'])}"
    if not value:
        return None
    items = value if isinstance(value, list) else [value]
    weights = {float((x or {}).get("weight", 1.0)) if isinstance(x, dict) else 1.0
               for x in items}
    parts = [_one_source(x) + (f" (weight {x.get('weight', 1.0):g})" if len(weights) > 1
                               and isinstance(x, dict) else "") for x in items]
    return "; ".join(parts)


def _data(summary: dict) -> str:
    """The Data section: what was forgotten and what kept, named in words, then how the
    benchmark split and read them; every setting is in the evidence's `config.data`."""
    data = summary["config"]["data"]
    lines = [f"Benchmark `{summary['benchmark']}`.", ""]
    for role, what in (("forget", "what the model should no longer know"),
                       ("retain", "what it should keep")):
        said = _sources(data, role)
        if said:
            lines.append(f"- **{role.capitalize()}** ({what}): {said}.")
    if isinstance(data.get("distill"), list):
        lines.append(f"- **Distillation inputs**: {_sources(data, 'distill')}.")
    if isinstance(data.get("attack"), list):
        lines.append(f"- **Relearning attacks** train on {_sources(data, 'attack')}.")
    elif data.get("attack_fraction"):
        lines.append(f"- **Relearning attacks** train on a held-out "
                     f"{_pct(data['attack_fraction'])} of the forget data.")
    if data.get("eval_fraction"):
        lines.append(f"- **Metrics** are measured on {_pct(data['eval_fraction'])} of each "
                     f"corpus's documents, held out from training.")
    tok = data.get("tokenizer")
    if tok == "model":
        lines.append("- **Tokenizer**: the base model's own.")
    elif tok == "bpe":
        lines.append(f"- **Tokenizer**: a BPE of {data.get('vocab_size')} tokens trained on "
                     f"the corpora.")
    elif tok:
        lines.append(f"- **Tokenizer**: `{tok}`.")
    sets = (data.get("lm_eval") or {}).get("sets") or {}
    if sets:
        lines.append("- **lm-eval sets**: " + "; ".join(
            f"{name}: " + ", ".join(t.get("task", "?") if isinstance(t, dict) else str(t)
                                    for t in tasks) for name, tasks in sets.items()) + ".")
    lines += ["", "Every data setting: `config.data` in `evidence/summary.json`."]
    return "\n".join(lines)


def _metrics_table(summary: dict, entry: dict) -> str:
    """The forget and retain metrics of the base model (before unlearning), the gold
    standard, the teacher and this model, side by side."""
    rm, fm = summary["retain_metric"], summary["metric"]
    rows = [(label, m) for label, m in (
        ("base model (before unlearning)", _by_kind(summary, "base")),
        ("gold standard (never saw the forget data)", _by_kind(summary, "gold")),
        ("teacher (unlearn-only)", _by_kind(summary, "unlearn_only")))
        if m is not None and m is not entry]
    rows.append((f"**this model** ({entry['name']})", entry))
    forget_dir = "higher = knows more of it" if fm.get("higher_is_worse") else \
        "lower = knows more of it"
    retain_dir = "higher is better" if rm.get("higher_is_better", True) else "lower is better"
    out = [f"| model | retain: {rm['name']} ({retain_dir}) | forget: {fm['name']} "
           f"({forget_dir}) |", "|---|---|---|"]
    out += [f"| {label} | {_f(m['metrics'].get(rm['name']))} | "
            f"{_f(m['metrics'].get(fm['name']))} |" for label, m in rows]
    return "\n".join(out)


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
    parts = [
        front_matter(summary, license),
        f"# {summary['study']}: {entry['name']}", "",
        f"Base model: {base_model_words(summary)} · weights: {dtype}, safetensors.", "",
        "## What it is", "", _what(summary, entry), "",
        "## Data", "", _data(summary), "",
        "## Retain ability", "", _recovery(summary, entry, stage), "",
        "Forget and retain metrics of the run's models on its evaluation data:", "",
        _metrics_table(summary, entry), "",
    ]
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
