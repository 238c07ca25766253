"""One writer per stage folder: `stages.stage_lock` between real processes.

A helper process (a real `python`, not a thread) takes the lock on a stage folder and
holds it until told to finish; this test process then contends for the same folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import undo
from undo.artifacts import StageBusyError, is_done, stage_lock
from undo.config import ConfigError, load_config
from undo.integrity import sidecar
from undo.stages.base import reset
from undo.study.run_folder import record_run, write_run_config

SRC = str(Path(undo.__file__).resolve().parents[1])

# Holds the lock on argv[1] until a file `release` appears beside it, then finishes the
# stage (summary.json) and exits. `held` (its pid) says it has the lock.
HOLDER = """
import os, sys, time
from pathlib import Path
from undo.artifacts import stage_lock
d = Path(sys.argv[1])
with stage_lock(d, wait=False):
    d.mkdir(parents=True, exist_ok=True)
    (d.parent / "held").write_text(str(os.getpid()))
    while not (d.parent / "release").exists():
        time.sleep(0.02)
    time.sleep(0.3)  # still working: a waiter must not get in before this returns
    (d / "summary.json").write_text("{}")
"""


@pytest.fixture
def holder(tmp_path):
    """Start the holder process on `tmp_path/stages/pretrain-x`; wait until it holds."""
    d = tmp_path / "stages" / "pretrain-x"
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(d)], env=env)
    deadline = time.time() + 60
    while not (d.parent / "held").exists():
        assert proc.poll() is None, "holder process died before taking the lock"
        assert time.time() < deadline, "holder never took the lock"
        time.sleep(0.05)
    yield d, proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_a_live_stage_is_refused_or_waited_for(holder, micro_model, tokenizer, bench,
                                               capfd):
    """While another process works in a stage: no lock without waiting (the message
    names its pid), no --force delete, no resume by train(); a waiter gets the stage
    only after the holder has finished it, and finds it done."""
    from undo.benchmarks.arithmetic.benchmark import ItemBatches
    from undo.config import OptimConfig
    from undo.objectives import LOSSES
    from undo.train import train

    d, proc = holder
    with pytest.raises(StageBusyError, match=f"pid {proc.pid}") as e, stage_lock(d, wait=False):
        pytest.fail("got a lock another live process holds")
    assert isinstance(e.value, ConfigError)  # the CLI prints it as one line
    with pytest.raises(StageBusyError):
        reset(d)
    assert d.is_dir()
    batches = ItemBatches(bench.stream(bench.ops), tokenizer, 8, seed=0)
    with pytest.raises(StageBusyError, match=f"pid {proc.pid}"):
        train(micro_model, LOSSES.get("ce")(), batches, OptimConfig(steps=2), d,
              progress=False)
    assert not (d / "metrics.jsonl").exists()

    release = d.parent / "release"
    threading.Timer(0.5, release.write_text, args=("go",)).start()
    with stage_lock(d, wait=True):
        # The holder had finished its stage before the lock passed: reuse it.
        assert is_done(d)
        got = time.time()
    assert got >= release.stat().st_mtime + 0.3
    proc.wait(timeout=30)
    assert f"waiting for pid {proc.pid}" in capfd.readouterr().err


def test_a_killed_holder_frees_the_stage(holder):
    d, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with stage_lock(d, wait=False):  # the kernel dropped the dead process's lock
        assert not is_done(d)  # unfinished: the caller would resume it


def test_nested_locks_in_one_process_do_not_block(tmp_path):
    d = tmp_path / "stages" / "s"
    with stage_lock(d, wait=False), stage_lock(d, wait=False):
        pass
    with stage_lock(d, wait=False):  # released after the outer block
        pass


def test_run_folder_config_is_not_replaced_by_another(tmp_path):
    cfg = load_config("configs/arithmetic/smoke.yaml", [f"out_dir={tmp_path}"])
    path = write_run_config(cfg)
    before = path.read_text()
    # Settings that change no result may differ; the file records the latest.
    write_run_config(load_config("configs/arithmetic/smoke.yaml",
                                 [f"out_dir={tmp_path}", "threads=1", "study.workers=2"]))
    other = load_config("configs/arithmetic/smoke.yaml",
                        [f"out_dir={tmp_path}", "seed=3", "pretrain.steps=7"])
    with pytest.raises(ConfigError, match=r"pretrain.steps: 30 -> 7\).*name=NEW_NAME") as e:
        write_run_config(other)
    assert "seed: 0 -> 3" not in str(e.value)  # another seed alone would be accepted
    assert "threads: 0 -> 1" not in path.read_text()
    assert path.read_text() != before  # the allowed rewrite happened
    assert "seed: 0" in path.read_text()


def _as_older_undo(path, raw) -> None:
    """The run folder's config.yaml as an older undo wrote it: `raw`, and no manifest."""
    import yaml

    path.write_text(yaml.safe_dump(raw))
    sidecar(path).unlink(missing_ok=True)


def test_a_folder_from_before_data_order_is_per_seed(tmp_path):
    """A config.yaml written before `distill.data_order` existed ran each seed on its own
    data order: that folder takes `per_seed` (the default, so it re-runs as it was) and
    refuses `shared`, whose seeds 1 and 2 are other students."""
    import yaml

    smoke = "configs/arithmetic/smoke.yaml"
    path = write_run_config(load_config(smoke, [f"out_dir={tmp_path}"]))
    raw = yaml.safe_load(path.read_text())
    del raw["distill"]["data_order"]
    _as_older_undo(path, raw)
    write_run_config(load_config(smoke, [f"out_dir={tmp_path}"]))
    _as_older_undo(path, raw)
    with pytest.raises(ConfigError, match=r"distill.data_order: 'per_seed' -> 'shared'"):
        write_run_config(load_config(smoke, [f"out_dir={tmp_path}", "distill.data_order=shared"]))


def test_a_folder_from_before_attack_precision_attacked_at_the_runs(tmp_path):
    """A config.yaml written before `attack.precision` existed attacked at the run's
    `precision` (fp32): that folder re-runs with `attack.precision=fp32` and refuses the
    new default's bfloat16 attacks, which are other results."""
    import yaml

    smoke = "configs/arithmetic/smoke.yaml"
    path = write_run_config(load_config(smoke, [f"out_dir={tmp_path}"]))
    raw = yaml.safe_load(path.read_text())
    del raw["attack"]["precision"]
    _as_older_undo(path, raw)
    write_run_config(load_config(smoke, [f"out_dir={tmp_path}", "attack.precision=fp32"]))
    _as_older_undo(path, raw)
    with pytest.raises(ConfigError, match=r"attack.precision: 'fp32' -> 'bf16-mixed'"):
        write_run_config(load_config(smoke, [f"out_dir={tmp_path}"]))


def test_run_folder_takes_other_seeds_and_alphas_and_records_every_config(tmp_path):
    smoke = "configs/arithmetic/smoke.yaml"
    for overrides in ([], ["seed=1"], ["study.alphas=[0.5]", "study.seeds=[2, 3]"]):
        cfg = load_config(smoke, [f"out_dir={tmp_path}", *overrides])
        path = write_run_config(cfg)
        record_run(cfg)  # as a study does once it has finished
    # A run that was accepted but stopped before the end is not recorded.
    write_run_config(load_config(smoke, [f"out_dir={tmp_path}", "seed=4"]))
    runs = [json.loads(line) for line in (path.parent / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 3
    assert runs[0]["changed"] == []
    assert runs[1]["changed"] == ["seed: 0 -> 1"]
    assert runs[2]["config"]["study"]["alphas"] == [0.5]
    assert runs[2]["config"]["study"]["seeds"] == [2, 3]
    assert len({r["config_hash"] for r in runs}) == 3
    assert "seed: 4" in path.read_text()  # config.yaml: the latest config run in the folder
