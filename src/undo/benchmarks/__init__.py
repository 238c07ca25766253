"""Benchmarks as plug-ins: `data.benchmark` names one; stages talk only to its protocol.

Each benchmark is one module under `undo.benchmarks` defining `Config` (the `data:`
section's dataclass, validated at load time) and `Benchmark` (see `base.Benchmark`).
Adding one is that module plus one line in `MODULES`. Modules are imported on first use,
so loading a config or `undo --help` does not import every benchmark's dependencies.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

MODULES: dict[str, str] = {
    "arithmetic": "undo.benchmarks.arithmetic.benchmark",
    "text": "undo.benchmarks.text.benchmark",
    "wmdp": "undo.benchmarks.wmdp",
}


def _module(name: str, key: str) -> ModuleType:
    from ..configlib import ConfigError

    if name not in MODULES:
        raise ConfigError(f"config key '{key}': got {name!r}; valid: {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])


def config_class(name: str, key: str = "data.benchmark") -> type:
    """The `data:` section's dataclass of benchmark `name`."""
    return _module(name, key).Config


def build_benchmark(data_cfg: Any) -> Any:
    """The benchmark a resolved `data:` section describes."""
    return _module(data_cfg.benchmark, "data.benchmark").Benchmark(data_cfg)
