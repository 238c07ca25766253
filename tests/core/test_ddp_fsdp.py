"""Sharded training under `torchrun` on 2 CPU processes (gloo): DDP and FSDP2 follow the
same loss curve as one process with the same global batch, resume from a checkpoint, and
launches that would silently misbehave are errors (undo.sharding)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from undo.config import ConfigError
from undo.sharding import check_launch

SCRIPT = Path(__file__).parents[1] / "fixtures" / "sharded_train.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# float32, 8 steps: only the order of the gradient reductions differs between the runs.
RTOL, ATOL = 1e-5, 1e-6


def _run(out: Path, mode: str, kill: int | None = None) -> None:
    extra = [] if kill is None else [str(kill)]
    if mode == "single":
        cmd = [sys.executable, str(SCRIPT), str(out), mode]
    else:
        cmd = [shutil.which("torchrun"), "--standalone", "--nproc_per_node", "2",
               str(SCRIPT), str(out), mode, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _losses(out: Path, mode: str) -> list[float]:
    lines = (out / mode / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if "loss" in json.loads(x)]


def _max_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max(float((x[k] - y[k]).abs().max()) for k in x)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_global_batch(tmp_path, mode):
    """Loss curve and final weights of 2 ranks x batch 8 equal one process's 2 micro-batches
    of 8 (rank r's batch is micro-batch r) within RTOL, also across a kill and resume.
    (This caught accelerate stepping a prepared LR schedule once per process.)"""
    _run(tmp_path, "single")
    _run(tmp_path, mode)
    single = _losses(tmp_path, "single")
    assert len(single) == 8 and single[-1] < single[0]
    assert _losses(tmp_path, mode) == pytest.approx(single, rel=RTOL, abs=ATOL)
    assert _max_diff(tmp_path / "single.safetensors", tmp_path / f"{mode}.safetensors") < 1e-5
    meta = json.loads((tmp_path / f"{mode}.json").read_text())
    ref = json.loads((tmp_path / "single.json").read_text())
    assert meta["world_size"] == 2 and meta["type"] == "LlamaForCausalLM"  # a plain model
    assert (meta["tokens"], meta["flops"]) == (ref["tokens"], ref["flops"])

    # Killed after step 5 (checkpoint of step 3), then resumed: bit-identical weights.
    resumed = tmp_path / "resumed"
    _run(resumed, mode, kill=5)
    state = resumed / mode / "state"
    assert (state / "done").exists()
    shard_files = sorted(p.name for p in state.glob("shards-*"))  # FSDP: one per rank
    assert shard_files == (["shards-0.json", "shards-0.safetensors", "shards-1.json",
                            "shards-1.safetensors"] if mode == "fsdp" else [])
    _run(resumed, mode)
    assert _max_diff(tmp_path / f"{mode}.safetensors", resumed / f"{mode}.safetensors") == 0
    assert _losses(resumed, mode) == pytest.approx(single, rel=RTOL, abs=ATOL)
    assert not state.exists()


@pytest.mark.parametrize("env, needle", [
    ({"OMPI_COMM_WORLD_SIZE": "2"}, "2 independent copies"),
    ({"SLURM_STEP_NUM_TASKS": "4"}, "srun started 4"),
    ({"ACCELERATE_USE_FSDP": "true"}, "single-process launch"),
])
def test_launches_that_would_run_copies_or_unsharded_are_errors(monkeypatch, env, needle):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=needle):
        check_launch()


def test_sharding_requests_are_checked(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert check_launch("ddp") == 1  # one process: nothing to shard, nothing to refuse
    with pytest.raises(ConfigError, match="sharding: got 'fsdp' in a single-process"):
        check_launch("fsdp")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert check_launch("fsdp") == 2
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="sharding: got 'ddp' but this is an accelerate FSDP"):
        check_launch("ddp")


@pytest.mark.slow
def test_accelerate_cpu_launch_of_two_processes_is_refused(tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts ONE process; undo says so."""
    accelerate = shutil.which("accelerate")
    assert accelerate is not None
    src = str(Path(__file__).parents[2] / "src")
    proc = subprocess.run(
        [accelerate, "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "undo.cli", "pretrain",
         f"out_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
        env={**ENV, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert proc.returncode != 0
    assert "started one process" in proc.stderr, proc.stderr[-2000:]
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_hold_frozen_keeps_a_plain_teacher_on_one_process(micro_model):
    from accelerate import Accelerator

    from undo.sharding import hold_frozen

    teacher = hold_frozen(micro_model, Accelerator(cpu=True))
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not teacher.training and next(teacher.parameters()).dtype == torch.float32


@pytest.mark.slow
def test_stage_under_shipped_fsdp2_config_matches_torchrun_ddp(tmp_path):
    """`undo pretrain` launched with configs/accelerate/fsdp2.yaml (2 CPU processes: the
    file's FSDP setting reaches undo, which shards) logs the losses of a torchrun DDP run;
    in both launches one process (the main one) holds the stage and saves a plain model
    folder with its weights.

    Issue 25: every rank used to take itself for the main process (a bare PartialState()
    on a CPU machine records one process), so the ranks trained alone and the one that
    won the stage's lock wrote no weights when it was torch rank 1 (~1 in 3 runs)."""
    root = Path(__file__).parents[2]
    env = {**ENV, "PYTHONPATH": str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    smoke = str(root / "configs" / "arithmetic" / "smoke.yaml")
    args = ["-m", "undo.cli", "pretrain", smoke, "--which", "base"]
    launches = {
        "fsdp": [shutil.which("accelerate"), "launch", "--config_file",
                 str(root / "configs" / "accelerate" / "fsdp2.yaml"), "--num_processes", "2",
                 "--main_process_port", "29531"],
        "ddp": [shutil.which("torchrun"), "--standalone", "--nproc_per_node", "2"],
    }
    logs, summaries = {}, {}
    for mode, launch in launches.items():
        proc = subprocess.run([*launch, *args, f"out_dir={tmp_path / mode}"],
                              capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (stage,) = (tmp_path / mode / "arithmetic-smoke" / "stages").glob("pretrain-base-*")
        assert (stage / "model" / "model.safetensors").exists(), mode
        assert "waiting for pid" not in proc.stderr  # one writer: the main process
        summaries[mode] = json.loads((stage / "summary.json").read_text())
        logs[mode] = [json.loads(x)["loss"] for x in
                      (stage / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert len(logs["ddp"]) == 3
    assert logs["fsdp"] == pytest.approx(logs["ddp"], rel=RTOL, abs=ATOL)
    assert summaries["fsdp"]["tokens"] == summaries["ddp"]["tokens"]


@pytest.mark.slow
def test_frozen_teacher_is_sharded_under_fsdp(tmp_path):
    """hold_frozen under FSDP2: each rank keeps ~half the teacher (dim-0 shards, rounded
    up) and its logits equal the whole model's."""
    script = Path(__file__).parents[1] / "fixtures" / "sharded_teacher.py"
    proc = subprocess.run([shutil.which("torchrun"), "--standalone", "--nproc_per_node", "2",
                           str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        rank = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert rank["max_diff"] < 1e-6 and rank["trainable"] == 0
        assert rank["local"] <= 0.6 * rank["whole"]
