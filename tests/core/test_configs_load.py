"""Every config the project ships loads (all checks of config load run), offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from undo.config import load_config

ROOT = Path(__file__).resolve().parents[2]
# Run configs; configs/accelerate/ holds accelerate's launch configs (docs/scale.md), and
# configs/robustify/ configs that take their model and data from `undo robustify`'s
# options (loaded through it in tests/release/test_robustify.py and tests/study/test_recipe.py).
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml")
                 if "accelerate" not in p.parts and "robustify" not in p.parts)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: loading a config must not touch the hub."""
    def refuse(*args, **kwargs):
        raise AssertionError("loading a config opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_configs_exist():
    assert {p.parent.name for p in CONFIGS} >= {"arithmetic", "text", "language", "wmdp"}


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT)) for p in CONFIGS])
def test_config_loads(path, no_network):
    cfg = load_config(path)
    first = path.read_text().splitlines()[0]
    assert first.startswith("# undo ") and path.name in first  # the command that runs it
    if path.parent.name in ("language", "wmdp") and path.name != "tiny.yaml":
        assert "GPU-hours" in path.read_text()  # paper-scale configs say what they cost
    assert cfg.name
