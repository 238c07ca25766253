"""The run configuration's schema: one dataclass per stage, and `load_config`.

Every user-facing setting lives here. Loading is strict (`undo.configlib`): an unknown
key, a value of the wrong type or one out of range stops at load time with a single
`ConfigError` naming the key, the bad value and what is valid. The resolved config
(every default filled in) is what gets written beside each result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..configlib import (
    ConfigError,
    check,
    config_path,
    dump_yaml,
    from_dict,
    parse_override,
    read_yaml,
    set_dotted,
    to_dict,
)
from .attack import AttackConfig, SearchConfig
from .model import ModelConfig, Precision
from .study import STAGE_KINDS, Resources, StudyConfig
from .training import (
    DistillConfig,
    NoiseConfig,
    OptimConfig,
    PretrainConfig,
    SweepConfig,
    UnlearnConfig,
    alpha_ok,
)

# Re-exported: the public API (`undo.load_config`, `undo.ConfigError`), the sections'
# classes, and the machinery callers that load or dump a RunConfig reach through here.
__all__ = ["STAGE_KINDS", "AttackConfig", "ConfigError", "DistillConfig", "ModelConfig",
           "NoiseConfig", "OptimConfig", "PretrainConfig", "Resources", "RunConfig",
           "SearchConfig", "StudyConfig", "SweepConfig", "UnlearnConfig", "alpha_ok",
           "dump_yaml", "load_config", "run_config", "to_dict"]


def _data_config_class(raw: Any, key: str) -> type:
    """The config dataclass of the benchmark `raw["benchmark"]` names (default arithmetic)."""
    from ..benchmarks import config_class

    name = raw.get("benchmark", "arithmetic") if isinstance(raw, dict) else "arithmetic"
    return config_class(name, f"{key}.benchmark")


def _default_data() -> Any:
    return _data_config_class({}, "data")()


# Settings that say where or how fast a run goes, not what it computes (no stage key
# holds them): a run folder's config.yaml may differ from the config in these alone.
# `name`/`out_dir` locate the folder; `study.stages` selects which stages run. Read by
# the stages (what a re-run may change) and the report (what a panel title names).
RESULT_NEUTRAL_KEYS = frozenset({"name", "out_dir", "device", "threads", "progress",
                                 "report_to",
                                 "study.workers", "study.stages", "attack.workers",
                                 # where and how stages run, not what they compute
                                 "sharding", "study.executor", "study.ray_address",
                                 "study.resources"})


TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass
class RunConfig:
    """A whole study. Stage sections are added as stages are built."""

    name: str = "arithmetic-tiny"
    seed: int = 0
    out_dir: str = "runs"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # torch intra-op threads on CPU; 0 keeps torch's default
    # How a multi-process launch (torchrun / accelerate launch) splits a training stage:
    # ddp, fsdp (FSDP2, fully sharded) or auto (fsdp under an accelerate FSDP config, else
    # ddp); see undo.sharding. Not part of any stage's cache key: it changes how a stage
    # is computed, not what (float reduction order aside).
    sharding: Literal["auto", "ddp", "fsdp"] = "auto"
    # How every stage computes (undo.runtime.compute_precision): fp32, or bf16-mixed
    # (float32 weights and optimizer, bfloat16 matmuls under torch.autocast: the authors'
    # `accelerate launch --mixed_precision bf16`). In every stage's and cache's key when
    # it is not fp32, so results of the two never mix (docs/scale.md).
    precision: Precision = "fp32"
    progress: bool = True
    # Experiment trackers that get every training stage's metrics.jsonl records too,
    # through accelerate's trackers (`tensorboard`, `wandb`, `mlflow`; each needs its
    # package). Files go to each stage's `trackers/` folder. Not part of any result.
    report_to: list[str] = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The benchmark's own section, selected by `data.benchmark` (undo.benchmarks).
    data: Any = field(default_factory=_default_data, metadata={"select": _data_config_class})
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    unlearn: UnlearnConfig = field(default_factory=UnlearnConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def validate(self, p: str = "") -> None:
        # `..` would put the run beside out_dir, not in it.
        check(bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
               "name", self.name, "a non-empty folder name without '/', not '.' or '..'")
        check(self.threads >= 0, "threads", self.threads, "an integer >= 0")
        check(all(t in TRACKERS for t in self.report_to) and
              len(set(self.report_to)) == len(self.report_to), "report_to", self.report_to,
              f"a list of distinct trackers from {', '.join(TRACKERS)} ([] for none)")
        self.data.check_run(self)  # settings of other sections the benchmark constrains

    def at_alpha(self, alpha: float) -> RunConfig:
        """This config with its one α field, `noise.alpha`, set: how the study makes each
        UNDO student's config from `study.alphas` (both held to `alpha_ok`)."""
        from dataclasses import replace

        check(alpha_ok(alpha), "noise.alpha", alpha, "a number in [0, 1]")
        return replace(self, noise=replace(self.noise, alpha=alpha))


def run_config(raw: dict) -> RunConfig:
    """A validated RunConfig from a plain mapping (e.g. a run folder's config.yaml)."""
    return from_dict(raw, RunConfig)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                cls: type = RunConfig, values: dict[str, Any] | None = None) -> Any:
    """Load a YAML file or a shipped config by name (`config_path`; the defaults when
    `path` is None) and apply dotted overrides. `values`: dotted keys -> typed values,
    set before the overrides (so an override wins), e.g. defaults computed by code."""
    raw = read_yaml(config_path(path)) if path is not None else {}
    for key, value in (values or {}).items():
        set_dotted(raw, key, value)
    keys = []
    for ov in overrides or []:
        key, value = parse_override(ov)
        set_dotted(raw, key, value)
        keys.append(key)
    # `undo run seed=N` runs the study at that one seed, unless the seeds are named.
    if cls is RunConfig and "seed" in keys and "seeds" not in (raw.get("study") or {}):
        raw.setdefault("study", {})["seeds"] = [raw["seed"]]
    return from_dict(raw, cls)
