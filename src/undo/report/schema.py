"""Validation of `summary.json`, the one file every report artifact is derived from.

The schema (version 1) is documented field by field in docs/summary-schema.md. `validate`
raises `SummaryError` naming the first bad field by its JSON path (for example
`models[3] ('undo-a0.6-s0').attack.worst_case: missing budget '500'`), so the writer of a
broken file can fix it without reading this module. Only the standard library is used here:
the report must run from JSON alone, without torch or a model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..analysis.robustness import budget_key

SCHEMA_VERSION = 1

# kind -> role in the study. A new kind of model (e.g. a RepNoise baseline) is one line here;
# the plots give unknown roles a neutral colour, so adding a kind never breaks a report.
KINDS: dict[str, str] = {
    "base": "pretrained on retain + forget data (the model to unlearn from)",
    "gold": "gold standard: pretrained on retain data only (data filtering)",
    "unlearn_only": "the base model after an unlearning method, nothing else",
    "unlearn_distill": "Unlearn-and-Distill: the unlearned teacher distilled into a random init",
    "undo": "UNDO: unlearn, noise the weights with scale alpha, distill",
    "oracle_base": "oracle matching: the gold standard distilled into the base model",
    "oracle_random": "oracle matching: the gold standard distilled into a random init",
}


class SummaryError(ValueError):
    """A summary.json that does not match the schema: the message names the field."""


def lr_matches(key: str, lr: float) -> bool:
    """Whether a curve key such as "0.0007" or "7e-04" denotes the learning rate `lr`."""
    try:
        return math.isclose(float(key), float(lr), rel_tol=1e-6, abs_tol=0.0)
    except ValueError:
        return False


# ----------------------------------------------------------------------------- checks


def _fail(path: str, msg: str) -> None:
    raise SummaryError(f"{path}: {msg}")


def _is_number(x: Any) -> bool:
    # bool is an int subclass in Python; True is not a metric value.
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _get(obj: dict, key: str, path: str) -> Any:
    if key not in obj:
        _fail(f"{path}.{key}" if path else key, "missing (required)")
    return obj[key]


def _dict(obj: dict, key: str, path: str) -> dict:
    v = _get(obj, key, path)
    if not isinstance(v, dict):
        _fail(_join(path, key), f"must be an object, got {_show(v)}")
    return v


def _number(obj: dict, key: str, path: str, *, nullable: bool = False,
            minimum: float | None = None) -> float | None:
    v = _get(obj, key, path)
    if v is None and nullable:
        return None
    want = "a number or null" if nullable else "a number"
    if not _is_number(v):
        _fail(_join(path, key), f"must be {want}, got {_show(v)}")
    if minimum is not None and v < minimum:
        _fail(_join(path, key), f"must be >= {minimum}, got {v}")
    return float(v)


def _int(obj: dict, key: str, path: str, *, nullable: bool = False) -> int | None:
    v = _get(obj, key, path)
    if v is None and nullable:
        return None
    if not _is_int(v) or v < 0:
        want = "a non-negative integer" + (" or null" if nullable else "")
        _fail(_join(path, key), f"must be {want}, got {_show(v)}")
    return v


def _str(obj: dict, key: str, path: str, *, nullable: bool = False) -> str | None:
    v = _get(obj, key, path)
    if v is None and nullable:
        return None
    if not isinstance(v, str) or not v.strip():
        _fail(_join(path, key), f"must be a non-empty string, got {_show(v)}")
    return v


def _numbers(v: Any, path: str, *, ints: bool = False) -> list:
    ok = _is_int if ints else _is_number
    if not isinstance(v, list) or not all(ok(x) for x in v):
        _fail(path, f"must be a list of {'integers' if ints else 'numbers'}, got {_show(v)}")
    return v


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, float) or math.isfinite(v) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


# ----------------------------------------------------------------------------- schema


def validate(summary: Any) -> dict[str, Any]:
    """Check a loaded summary.json against schema version 1; return it unchanged.

    Raises SummaryError naming the first missing or malformed field.
    """
    if not isinstance(summary, dict):
        _fail("summary", f"the top level must be a JSON object, got {_show(summary)}")
    version = _get(summary, "schema_version", "")
    if version != SCHEMA_VERSION:
        _fail("schema_version", f"this report reads version {SCHEMA_VERSION}, got {_show(version)}")
    _str(summary, "study", "")
    _dict(summary, "config", "")
    _dict(summary, "environment", "")

    metric = _dict(summary, "metric", "")
    _str(metric, "name", "metric")
    if not isinstance(_get(metric, "higher_is_worse", "metric"), bool):
        _fail("metric.higher_is_worse", f"must be true or false, got {_show(metric['higher_is_worse'])}")
    _number(metric, "chance", "metric", nullable=True)
    retain = _dict(summary, "retain_metric", "")
    _str(retain, "name", "retain_metric")
    _number(retain, "chance", "retain_metric", nullable=True)
    if "higher_is_better" in retain and not isinstance(retain["higher_is_better"], bool):
        _fail("retain_metric.higher_is_better", "must be true or false")

    budgets = _numbers(_get(summary, "budgets", ""), "budgets", ints=True)
    if not budgets or any(b < 0 for b in budgets) or budgets != sorted(set(budgets)):
        _fail("budgets", f"must be a non-empty, strictly increasing list of step counts >= 0, "
                         f"got {_show(budgets)}")

    models = _get(summary, "models", "")
    if not isinstance(models, list) or not models:
        _fail("models", f"must be a non-empty list of models, got {_show(models)}")
    names: set[str] = set()
    for i, m in enumerate(models):
        path = f"models[{i}]"
        if not isinstance(m, dict):
            _fail(path, f"must be an object, got {_show(m)}")
        name = _str(m, "name", path)
        if name in names:
            _fail(f"{path}.name", f"duplicate model name {name!r}: names must be unique")
        names.add(name)
        _validate_model(m, f"{path} ({name!r})", summary)

    kinds = [m["kind"] for m in models]
    has_gold = summary.get("gold_standard", True)
    if not isinstance(has_gold, bool):
        _fail("gold_standard", f"must be true or false, got {_show(has_gold)}")
    if not has_gold and "gold" in kinds:
        _fail("gold_standard", "is false, but a model of kind 'gold' is listed")
    for needed in ("gold", "unlearn_only") if has_gold else ("unlearn_only",):
        if needed not in kinds:
            _fail("models", f"no model of kind {needed!r}: robustness is measured against the "
                            f"gold standard and the unlearn-only model")
    if "verdict" in summary and summary["verdict"] is not None:
        _str(summary, "verdict", "")
    return summary


def _validate_model(m: dict, path: str, summary: dict) -> None:
    kind = _get(m, "kind", path)
    if kind not in KINDS:
        _fail(f"{path}.kind", f"unknown kind {_show(kind)}; valid kinds: {', '.join(KINDS)}")
    alpha = _number(m, "alpha", path, nullable=True, minimum=0.0)
    rec = m.get("recovered")  # optional: summaries written before it existed lack it
    if rec is not None and not isinstance(rec, bool):
        _fail(f"{path}.recovered", f"must be true, false or null, got {_show(rec)}")
    if kind == "undo" and alpha is None:
        _fail(f"{path}.alpha", "an 'undo' model needs its noise scale alpha (a number)")
    _int(m, "seed", path, nullable=True)
    _str(m, "stage_dir", path, nullable=True)

    metrics = _dict(m, "metrics", path)
    for k, v in metrics.items():
        if v is not None and not _is_number(v):
            _fail(f"{path}.metrics.{k}", f"must be a number or null, got {_show(v)}")
    for name in (summary["metric"]["name"], summary["retain_metric"]["name"]):
        _number(metrics, name, f"{path}.metrics", nullable=True)

    compute = _dict(m, "compute", path)
    cpath = f"{path}.compute"
    # null: a model the study imported (model.name_or_path, study.gold=PATH), whose
    # training cost is not ours to know.
    _int(compute, "steps", cpath, nullable=True)
    _int(compute, "tokens", cpath, nullable=True)
    _number(compute, "flops", cpath, nullable=True, minimum=0.0)
    _number(compute, "fraction_of_gold_steps", cpath, nullable=True, minimum=0.0)
    _number(compute, "fraction_of_gold_flops", cpath, nullable=True, minimum=0.0)
    _number(m, "wall_time_s", path, minimum=0.0)

    budgets = [budget_key(b) for b in summary["budgets"]]
    attack = _get(m, "attack", path)
    if attack is not None:
        _validate_attack(attack, f"{path}.attack", budgets)
    rob = _dict(m, "robustness", path)
    for b in budgets:
        _number(rob, b, f"{path}.robustness", nullable=True)


def _validate_attack(attack: Any, path: str, budgets: list[str]) -> None:
    if not isinstance(attack, dict):
        _fail(path, f"must be an object or null, got {_show(attack)}")
    lrs = _numbers(_get(attack, "lrs", path), f"{path}.lrs")
    _numbers(_get(attack, "seeds", path), f"{path}.seeds", ints=True)
    if not lrs:
        _fail(f"{path}.lrs", "must list at least one learning rate")
    curves = _dict(attack, "curves", path)
    if not curves:
        _fail(f"{path}.curves", "must hold one curve per learning rate")
    for key, c in curves.items():
        cpath = f'{path}.curves["{key}"]'
        if not any(lr_matches(key, lr) for lr in lrs):
            _fail(cpath, f"key is not one of the attack's lrs {_show(lrs)}")
        if not isinstance(c, dict):
            _fail(cpath, f"must be an object, got {_show(c)}")
        steps = _numbers(_get(c, "steps", cpath), f"{cpath}.steps", ints=True)
        if not steps or steps != sorted(set(steps)):
            _fail(f"{cpath}.steps", "must be a non-empty, strictly increasing list of steps")
        for field in ("mean", "std"):
            vals = _numbers(_get(c, field, cpath), f"{cpath}.{field}")
            if len(vals) != len(steps):
                _fail(f"{cpath}.{field}", f"has {len(vals)} values for {len(steps)} steps")
    worst = _dict(attack, "worst_case", path)
    for b in budgets:
        if b not in worst:
            _fail(f"{path}.worst_case", f"missing budget {b!r} (budgets are {budgets})")
        wpath = f'{path}.worst_case["{b}"]'
        if not isinstance(worst[b], dict):
            _fail(wpath, f"must be an object, got {_show(worst[b])}")
        _number(worst[b], "value", wpath)
        _number(worst[b], "std", wpath, nullable=True)
        lr = _number(worst[b], "lr", wpath)
        if not any(lr_matches(k, lr) for k in curves):
            _fail(f"{wpath}.lr", f"{lr} has no curve in {path}.curves")


def load(path: str | Path) -> dict[str, Any]:
    """Read and validate a summary.json; a missing or unreadable file is a SummaryError too."""
    path = Path(path)
    if not path.is_file():
        raise SummaryError(f"{path}: no such file (a run folder holds summary.json once "
                           f"`undo run` has finished)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SummaryError(f"{path}: not valid JSON ({e})") from None
    try:
        return validate(data)
    except SummaryError as e:
        raise SummaryError(f"{path} does not match the summary schema v{SCHEMA_VERSION} "
                           f"(docs/summary-schema.md): {e}") from None
