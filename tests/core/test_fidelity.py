"""docs/fidelity.md against the shipped configs: every value a row names (its block of
machine-readable rows) is what the config holds, so a config cannot change a value a
fidelity row states without the row changing too. Also the WMDP loss weighting the rows
name (W3): (1 - a) * forget + a * retain."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from undo.config import ConfigError, UnlearnConfig, load_config
from undo.configlib import to_dict
from undo.objectives.unlearning import build_objective, combine

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "fidelity.md"
CONFIGS = ROOT / "src" / "undo" / "configs"


def doc_rows() -> tuple[dict[str, str], dict[str, dict[str, dict[str, Any]]]]:
    text = DOC.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| ([A-Z]\d+) \|.*$", text, re.M)}
    block = re.search(r"```yaml\n(.*?)```", text.split("## Machine-readable rows")[1], re.S)
    assert block, "docs/fidelity.md has no machine-readable block"
    return rows, yaml.safe_load(block.group(1))


ROWS, KEYS = doc_rows()
_LOADED: dict[str, dict[str, Any]] = {}


def config(name: str) -> dict[str, Any]:
    if name not in _LOADED:
        cfg = load_config(None if name == "default" else str(CONFIGS / name), [])
        _LOADED[name] = to_dict(cfg)
    return _LOADED[name]


def lookup(d: Any, key: str) -> Any:
    for part in key.split("."):
        d = d[int(part)] if isinstance(d, list) else d[part]
    return d


def test_the_table_covers_every_setting():
    assert len(ROWS) >= 35
    for prefix, n in (("A", 20), ("S", 10), ("L", 8), ("W", 12)):
        assert sum(r.startswith(prefix) for r in ROWS) >= n, prefix
    for row in ROWS.values():  # id, component, theirs, ours, verdict, reason
        assert row.count(" | ") >= 5, row[:60]
    assert set(KEYS) <= set(ROWS), sorted(set(KEYS) - set(ROWS))


@pytest.mark.parametrize("row_id", sorted(KEYS))
def test_row_values_are_the_shipped_configs(row_id):
    for name, keys in KEYS[row_id].items():
        got = config(name)
        for key, want in keys.items():
            value = lookup(got, key)
            if isinstance(want, float) or isinstance(value, float):
                assert value == pytest.approx(want), f"{row_id}: {name} {key}"
            else:
                assert value == want, (f"{row_id}: {name} {key} is {value!r}, the fidelity "
                                       f"row says {want!r}: change the row with the config")


def test_convex_weighting_is_the_authors_wmdp_loss():
    f, r = torch.tensor(2.0), torch.tensor(4.0)
    assert float(combine(f, r, 0.3, "convex")) == pytest.approx(0.7 * 2 + 0.3 * 4)
    assert float(combine(f, r, 0.3, "sum")) == pytest.approx(2 + 0.3 * 4)
    for method in ("maxent", "rmu"):
        ok = UnlearnConfig(method=method, retain_weight=0.5,
                           method_args={"weighting": "convex"})
        assert build_objective(ok).args.weighting == "convex"
        with pytest.raises(ConfigError, match=r"retain_weight.*\(0, 1\)"):
            build_objective(UnlearnConfig(method=method, retain_weight=1.0,
                                          method_args={"weighting": "convex"}))
