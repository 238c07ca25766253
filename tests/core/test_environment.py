"""Provenance for timings: every environment record (meta.json, summary.json, results
files) names the machine (CPU model, cores, bfloat16 in hardware, GPUs) and the load
average at the start and the end of the work it covers, so a figure from one machine is
never read as another's. None of it enters a cache key."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from undo import artifacts
from undo.artifacts import environment, load_sample, stage_lock
from undo.cli import main
from undo.runtime import BF16_CPU_FLAGS, bf16_is_slow, host

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "arithmetic" / "smoke.yaml")

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 {extra}

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: a second core, not read
flags\t\t: fpu
"""


def test_host_names_the_cpu_and_its_bfloat16_support():
    amx = host(CPUINFO.format(extra="avx512_bf16 amx_bf16"))
    assert amx["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert amx["cpu_id"] == "GenuineIntel family 6 model 143"
    assert amx["bf16_cpu_flags"] == sorted(BF16_CPU_FLAGS) and amx["bf16_is_slow"] is False
    old = host(CPUINFO.format(extra="avx512f"))
    assert old["bf16_cpu_flags"] == [] and old["bf16_is_slow"] is True
    assert bf16_is_slow("cpu", CPUINFO.format(extra="avx512f"))  # the same rule
    assert host("")["bf16_is_slow"] is None  # cannot be told: not guessed
    # Cores: the machine's and those this process may use (taskset, a container).
    assert amx["cpu_count"] == os.cpu_count()
    assert amx["cpu_affinity"] == len(os.sched_getaffinity(0))
    assert isinstance(amx["gpus"], list)  # [] here; never initialises CUDA for it


def test_this_machine_is_named_and_loads_are_taken_at_start_and_end():
    env = environment()
    h = env["host"]
    assert h["cpu"] and h["cpu_count"] >= 1 and 1 <= h["cpu_affinity"] <= h["cpu_count"]
    if Path("/proc/cpuinfo").is_file():
        assert h["bf16_is_slow"] is bf16_is_slow("cpu")
    load = env["load_average"]
    # No start given, no stage held: the start is when this process imported undo.
    assert load["start"]["is"] == "process start"
    assert load["start"]["time"] == artifacts._PROCESS_START["time"]
    assert len(load["start"]["1_5_15_min"]) == 3 and len(load["end"]["1_5_15_min"]) == 3
    json.dumps(env)  # JSON as it is
    # A timed piece of work names its own start.
    t0 = load_sample()
    assert environment(started=t0)["load_average"]["start"] == {**t0, "is": "given"}


def test_inside_a_stage_lock_the_start_is_the_stage_start(tmp_path):
    with stage_lock(tmp_path / "stage-a"):
        taken = artifacts._taken[(tmp_path / "stage-a").resolve()][1]
        with stage_lock(tmp_path / "chunk-0", quiet=True):
            pass  # a lock taken and let go meanwhile (a teacher-cache chunk)
        start = environment()["load_average"]["start"]
        assert start == {**taken, "is": "stage start"}
    assert environment()["load_average"]["start"]["is"] == "process start"


def test_a_stages_meta_json_records_host_and_load_and_its_key_does_not(tmp_path, capsys):
    assert main(["pretrain", SMOKE, "--which", "base", f"out_dir={tmp_path}",
                 "pretrain.steps=2", "pretrain.eval_every=0"]) == 0
    capsys.readouterr()
    (d,) = tmp_path.glob("*/stages/pretrain-base-*")
    meta = json.loads((d / "meta.json").read_text())
    assert meta["host"] == {**host(), "cpu_affinity": meta["host"]["cpu_affinity"]}
    load = meta["load_average"]
    assert load["start"]["is"] == "stage start" and load["start"]["time"] <= load["end"]["time"]
    # The key (config.yaml, hashed into the folder name) holds nothing of the machine.
    key = (d / "config.yaml").read_text()
    for word in ("host", "load_average", "bf16_cpu_flags", "1_5_15_min"):
        assert word not in key
    assert "host" not in yaml.safe_load(key)
