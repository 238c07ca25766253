"""The study's numbers with their 95% intervals, per attack: the text table, its HTML
twin and the verdict built on them (a comparison is stated only where the intervals
separate; otherwise the verdict says "within noise").

Reads the summary's `intervals` section (undo.analysis.intervals, built in undo.study.summary) and the
attack sections of every model (the retain metric after each worst case and the utility
flag). Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from ..analysis.arms import Arm, ModelKind, label_of
from ..analysis.robustness import budget_key
from .views import fmt_ci

ATTACK_LABELS = {"paper": "the paper's attack", "forget_only": "the forget-only attack"}


def has_intervals(summary: dict) -> bool:
    return bool((summary.get("intervals") or {}).get("attacks"))


def _budgets(summary: dict, attack: str) -> list[int]:
    return [int(k) for k in summary["intervals"]["attacks"].get(attack, {})]


def _arms(summary: dict) -> list[str]:
    names: list[str] = []
    for m in summary["models"]:
        label = label_of(m)
        if label and label not in names:
            names.append(label)
    return sorted(names, key=lambda n: Arm.parse(n).sort_key)


def _members(summary: dict, row: str) -> list[dict]:
    """The models behind a row: a reference, a single model, or an arm's students."""
    kinds = {"gold": "gold", "unlearn-only": "unlearn_only"}
    out = []
    for m in summary["models"]:
        if label_of(m) == row or m["name"] == row or m["kind"] == kinds.get(row):
            out.append(m)
    return out


def utility(summary: dict, row: str, attack: str, budget: int) -> tuple[str, list[str]]:
    """'retain after (before)' over a row's models at their worst case, and the names of
    those whose worst case broke the utility floor (flagged, never dropped)."""
    key = budget_key(budget)
    after, before, broke = [], [], []
    for m in _members(summary, row):
        sec = (m.get("attacks") or {}).get(attack)
        w = (sec or {}).get("worst_case", {}).get(key)
        if not w or w.get("retain") is None:
            continue
        after.append(w["retain"])
        before.append(sec["retain_before"])
        if w.get("utility_ok") is False:
            broke.append(m["name"])
    if not after:
        return "-", broke
    a, b = sum(after) / len(after), sum(before) / len(before)
    return f"{a:.2f} ({b:.2f})", broke


def _rows(summary: dict, attack: str, budget: int) -> list[list[str]]:
    iv = summary["intervals"]["attacks"][attack][budget_key(budget)]
    rows = []
    order = ["gold", "unlearn-only", *_arms(summary),
             *(k for k in iv["worst_case"] if k not in ("gold", "unlearn-only")
               and k not in _arms(summary))]
    for row in order:
        if row not in iv["worst_case"]:
            continue
        kept, broke = utility(summary, row, attack, budget)
        rows.append([row, fmt_ci(iv["worst_case"][row], 3), kept,
                     f"{len(broke)} broke" if broke else "ok",
                     fmt_ci(iv["robustness"].get(row))])
    return rows


def format_intervals(summary: dict) -> str:
    """Fixed-width tables: per attack and attacked budget, every reference, arm and
    single model with its worst case, retain after the attack, the utility flag and
    robustness, each with a 95% interval; then compute per arm."""
    if not has_intervals(summary):
        return ""
    metric, retain = summary["metric"]["name"], summary["retain_metric"]["name"]
    out = []
    for attack in summary["intervals"]["attacks"]:
        for k in _budgets(summary, attack):
            iv = summary["intervals"]["attacks"][attack][budget_key(k)]
            out.append(f"{ATTACK_LABELS.get(attack, attack)}, {k} steps "
                       f"(unlearn-only / gold: {fmt_ci(iv.get('unlearn_only_over_gold'), 1)})")
            out += _fixed([["", f"worst {metric} [95%]", f"{retain} after (before)",
                            "utility", f"R@{k} [95%]"], *_rows(summary, attack, k)])
            out.append("")
    comp = summary["intervals"]["compute"]
    if comp:
        out += _fixed([["arm", "distill steps", "distill FLOPs", "total steps (incl. unlearn)",
                        "total FLOPs"]] + [
            [arm, fmt_ci(c["fraction_of_gold_steps"], pct=True),
             fmt_ci(c["fraction_of_gold_flops"], pct=True),
             fmt_ci(c["total_fraction_of_gold_steps"], pct=True),
             fmt_ci(c["total_fraction_of_gold_flops"], pct=True)] for arm, c in comp.items()])
    m = summary["intervals"]["attacks"][next(iter(summary["intervals"]["attacks"]))]
    method = next(iter(m.values()), {}).get("method", {})
    out.append(f"[95%]: bootstrap over {', '.join(method.get('resampled', []))}; "
               f"{method.get('lr_selection', '')}. utility: worst cases whose attack left "
               f"{retain} below the floor ({summary['config']['search']['utility_floor']:g} "
               f"of its value before the attack), flagged not dropped; compute as fractions "
               f"of the gold standard's pretraining, mean over seeds.")
    return "\n".join(out)


def _fixed(table: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in table]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def html_intervals(summary: dict, escape: Any) -> str:
    """The same tables as HTML (`escape`: the page's HTML escaper)."""
    text = format_intervals(summary)
    if not text:
        return ""
    return "<h2>With 95% intervals, per attack</h2>\n<pre>" + escape(text) + "</pre>"


# ---------------------------------------------------------------------- the verdict


def compare(a: dict | None, b: dict | None) -> str:
    """'higher' / 'lower' when the two 95% intervals separate, else 'within noise' (also
    when either has no interval): the verdict's only way to compare two numbers."""
    if not a or not b or None in (a.get("lo"), a.get("hi"), b.get("lo"), b.get("hi")):
        return "within noise"
    if a["lo"] > b["hi"]:
        return "higher"
    if a["hi"] < b["lo"]:
        return "lower"
    return "within noise"


def _vs_references(r: dict | None) -> str:
    if not r or r.get("lo") is None:
        return "no interval"
    gold = "below the gold standard" if r["hi"] < 1 else "within noise of the gold standard"
    uo = ("more robust than unlearning alone" if r["lo"] > 0
          else "within noise of unlearning alone")
    return f"{gold}, {uo}"


def verdict_sentences(summary: dict) -> list[str]:
    """Findings with intervals; a difference is stated only where intervals separate."""
    out = []
    metric = summary["metric"]["name"]
    worse = summary["metric"]["higher_is_worse"]
    comp = summary["intervals"]["compute"]
    for attack, by_budget in summary["intervals"]["attacks"].items():
        label = ATTACK_LABELS.get(attack, attack)
        budgets = sorted(int(k) for k in by_budget)
        if not budgets:
            continue
        first, top = budgets[0], budgets[-1]
        iv0, iv = by_budget[budget_key(first)], by_budget[budget_key(top)]
        wc = iv0["worst_case"]
        if "gold" in wc and "unlearn-only" in wc:
            c = compare(wc["unlearn-only"], wc["gold"])
            rel = {"higher": "above", "lower": "below"}.get(c, "within noise of")
            bad = (c == "higher") if worse else (c == "lower")
            out.append(f"Under {label}, after {first} steps the unlearn-only model reached "
                       f"{metric} {fmt_ci(wc['unlearn-only'], 3)}, {rel} the gold standard's "
                       f"{fmt_ci(wc['gold'], 3)}" + (" (unlearning alone is fragile)" if bad
                                                  else "") + ".")
        arms = [a for a in _arms(summary) if a in iv["robustness"]]
        headline = attack == next(iter(summary["intervals"]["attacks"]))
        for a in arms:
            r = iv["robustness"][a]
            c = comp.get(a, {})
            cost = (f", at {fmt_ci(c.get('fraction_of_gold_steps'), pct=True)} of the gold "
                    f"standard's steps for distillation, "
                    f"{fmt_ci(c.get('total_fraction_of_gold_steps'), pct=True)} including "
                    f"unlearning ({fmt_ci(c.get('total_fraction_of_gold_flops'), pct=True)} "
                    f"of its FLOPs)") if headline else ""
            out.append(f"{a} ({label}): robustness after {top} steps {fmt_ci(r)} "
                       f"({_vs_references(r)}){cost}.")
        undo = [a for a in arms if Arm.parse(a).kind is ModelKind.UNDO]
        steps = [f"{x[5:]} → {y[5:]}: {_trend(compare(iv['robustness'][y], iv['robustness'][x]))}"
                 for x, y in zip(undo, undo[1:], strict=False)]
        if steps:
            out.append("Robustness against α (" + label + "): " + "; ".join(steps) + ".")
        if "Unlearn-and-Distill" in arms and undo:
            c = compare(iv["robustness"]["Unlearn-and-Distill"], iv["robustness"][undo[-1]])
            out.append(f"Unlearn-and-Distill vs {undo[-1]}: {_trend(c, 'more robust')}.")
        flagged = sorted({n for row in ["gold", "unlearn-only", *arms]
                          for n in utility(summary, row, attack, top)[1]})
        if flagged:
            out.append(f"Flagged under {label}: the worst case of {', '.join(flagged)} came "
                       f"from an attack that left {summary['retain_metric']['name']} below "
                       f"the utility floor; it is counted above and marked in the table.")
        singles = [k for k in iv0["worst_case"] if k.startswith("oracle")]
        if len(singles) == 2:
            a, b = (iv0["worst_case"][k] for k in sorted(singles))
            out.append(f"Oracle matching ({label}, {first} steps): {sorted(singles)[0]} "
                       f"{fmt_ci(a, 3)} vs {sorted(singles)[1]} {fmt_ci(b, 3)}: "
                       f"{_trend(compare(a, b), 'higher')}.")
    dropped = summary["intervals"].get("not_counted") or []
    if dropped:
        out.append(f"Not counted (did not recover the teacher's retain ability within "
                   f"budget): {', '.join(dropped)}.")
    return out


def _trend(c: str, word: str = "rises") -> str:
    if c == "within noise":
        return "within noise"
    if word == "rises":
        return "rises" if c == "higher" else "falls"
    return word if c == "higher" else f"not {word} (lower)"
