"""The study on Ray (`study.executor: ray`, undo.study.executors) on a local Ray instance with
2 CPUs: the same summary as the local executor, each attack run its own task, a failing
stage retried once and then reported. Needs the optional extra: `pip install 'undo[ray]'`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fixed_stage import Fixed

from undo.cli import main
from undo.config import ConfigError, load_config
from undo.study.graph import run_graph
from undo.study.specs import Job

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "arithmetic" / "smoke.yaml"
TIMING = {"wall_time_s", "train_time_s", "time", "environment", "tok_per_s", "stage_dir",
          "relearn_json", "torch_threads"}


def _strip(x):
    """Drop what differs between runs by design: timings, paths, the executor settings."""
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items()
                if k not in TIMING | {"out_dir", "executor", "workers", "resources"}}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


@pytest.mark.parametrize("override, needle", [
    ("study.executor=slurm", "study.executor"),
    ("study.resources={train: {gpus: 1}}", "study.resources"),
    ("study.resources={distill: {cpus: 0}}", "study.resources.distill.cpus"),
    ("study.ray_address=auto", "study.ray_address"),
])
def test_bad_executor_settings_are_config_errors(override, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(SMOKE, [override])


@pytest.mark.slow
def test_ray_study_equals_local_study(tmp_path):
    pytest.importorskip("ray")
    assert main(["run", str(SMOKE), f"out_dir={tmp_path / 'local'}"]) == 0
    assert main(["run", str(SMOKE), f"out_dir={tmp_path / 'ray'}", "study.executor=ray",
                 "study.workers=2", "study.resources={attack: {cpus: 1}}"]) == 0
    local, ray_ = (json.loads((tmp_path / w / "arithmetic-smoke" / "summary.json").read_text())
                   for w in ("local", "ray"))
    assert ray_["config"]["study"]["executor"] == "ray"
    assert _strip(ray_) == _strip(local)
    # Every attack run came from its own Ray task into the folder the stage reads: one
    # file per run of the 2-LR grid, none twice.
    attacks = sorted(p for p in (tmp_path / "ray" / "arithmetic-smoke" / "attacks").iterdir()
                     if p.is_dir())  # not the stage locks beside them
    n_attacks = len(load_config(SMOKE).study.attacks)  # the paper's and forget-only
    assert len(attacks) == 7 * n_attacks  # every model but the base, under each attack
    for d in attacks:
        assert sorted(p.name for p in (d / "runs").glob("*.json")) == [
            "lr0.0001-seed0.json", "lr0.001-seed0.json"]
    # A re-run on Ray reuses every stage (cached in the shared run folder).
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").rglob("summary.json")
              if "stages" in p.parts}
    assert main(["run", str(SMOKE), f"out_dir={tmp_path / 'ray'}", "study.executor=ray",
                 "study.workers=2"]) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def flaky(cfg, marker: str) -> Path:
    """Fails on its first call (a marker file remembers it across processes)."""
    m = Path(marker)
    if not m.exists():
        m.write_text("failed once\n")
        raise RuntimeError("first attempt fails")
    return m


def broken(cfg, marker: str) -> Path:
    with Path(marker).open("a") as f:
        f.write("x")
    raise RuntimeError("always fails")


@pytest.mark.slow
def test_failed_stage_is_retried_once_then_reported(tmp_path):
    ray = pytest.importorskip("ray")
    # These test functions travel to the Ray workers by value (tests/ is no package).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = load_config(SMOKE, ["study.executor=ray", "study.workers=2"])
    logs: list[str] = []
    flaky_task = Fixed(name="flaky", kind="pretrain", cfg=cfg,
                       make=lambda _: Job("flaky", flaky, (str(tmp_path / "m1"),)))
    done = run_graph(cfg, [flaky_task], logs.append)
    assert done == {"flaky": tmp_path / "m1"}  # the retry succeeded

    broken_task = Fixed(name="broken", kind="pretrain", cfg=cfg,
                        make=lambda _: Job("broken", broken, (str(tmp_path / "m2"),)))
    with pytest.raises(RuntimeError, match="broken: failed twice on Ray"):
        run_graph(cfg, [broken_task], logs.append)
    assert (tmp_path / "m2").read_text() == "xx"  # ran exactly twice
    assert any("broken: failed" in line and "always fails" in line for line in logs)
