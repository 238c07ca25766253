"""undo.study.pooled: one study over several run seeds, read from finished run folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny_study import SMOKE
from undo.cli import main
from undo.configlib import ConfigError
from undo.study.pooled import pool_runs

# The text smoke study: its CE metric keeps robustness defined where the arithmetic
# smoke models all score 0 (run seeds 1 and 2 measure it for α 0.3). Float32 attacks:
# the same numerics on a CPU without bfloat16 instructions.
TEXT_SMOKE = SMOKE.parents[1] / "text" / "smoke.yaml"
RUN = ["threads=1", "progress=false", "study.workers=1", "study.seeds=[0,1]",
       "attack.precision=fp32"]
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pool")
    for seed in SEEDS:
        assert main(["run", str(TEXT_SMOKE), f"out_dir={out / str(seed)}", f"seed={seed}",
                     *RUN]) == 0
    return [next((out / str(s)).iterdir()) for s in SEEDS]


@pytest.mark.slow
def test_pooled_robustness_is_the_mean_of_each_runs_with_a_wider_interval(runs):
    pooled = pool_runs(runs)
    assert pooled["run_seeds"] == list(SEEDS)
    summaries = [json.loads((r / "summary.json").read_text()) for r in runs]
    defined = 0
    for budget, p in pooled["attacks"]["paper"].items():
        for arm, r in p["robustness"].items():
            own = [s["intervals"]["attacks"]["paper"][budget]["robustness"][arm]["point"]
                   for s in summaries]
            assert r["per_run"] == pytest.approx(own)  # each run's own point, recomputed
            if None not in own:
                defined += 1
                assert r["point"] == pytest.approx(sum(own) / 2)
                assert r["lo"] is None or r["lo"] <= r["point"] <= r["hi"]
            else:
                assert r["point"] is None and r["lo"] is None
    assert defined > 0  # the study measured some robustness to pool
    arm = next(iter(pooled["compute"]))
    flops = pooled["compute"][arm]["total_fraction_of_gold_flops"]
    own = [s["intervals"]["compute"][arm]["total_fraction_of_gold_flops"]["point"]
           for s in summaries]
    assert flops["point"] == pytest.approx(sum(own) / 2)
    assert flops["lo"] <= min(own) and flops["hi"] >= max(own)


@pytest.mark.slow
def test_pooling_refuses_runs_of_another_study_or_the_same_seed(runs, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(runs[1], other)
    summary = json.loads((other / "summary.json").read_text())
    summary["config"]["distill"]["lr"] = 0.123
    (other / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"differ in more than the run seed \(distill.lr"):
        pool_runs([runs[0], other])
    with pytest.raises(ConfigError, match="repeat a run seed"):
        pool_runs([runs[0], runs[0]])
    with pytest.raises(ConfigError, match="at least two run folders"):
        pool_runs([runs[0]])
    with pytest.raises(ConfigError, match="no summary.json"):
        pool_runs([runs[0], tmp_path])


@pytest.mark.slow
def test_run_seeds_script_writes_and_prints_the_pooled_study(runs, tmp_path):
    """experiments/run_seeds.py, as a user runs it; a bad folder is one clear line."""
    script = Path(__file__).resolve().parents[2] / "experiments" / "run_seeds.py"
    out = tmp_path / "rs.json"
    r = subprocess.run([sys.executable, str(script), *map(str, runs), "--out", str(out)],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["run_seeds"] == list(SEEDS)
    assert f"run seeds {list(SEEDS)}" in r.stdout and "total FLOPs of gold's" in r.stdout
    bad = subprocess.run([sys.executable, str(script), str(runs[0]), "--out", str(out)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "at least two run folders" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_undo_pool_prints_and_writes_the_pooled_study(runs, tmp_path, capsys):
    out = tmp_path / "pooled.json"
    assert main(["pool", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"run seeds {list(SEEDS)}" in printed and f"pooled: {out}" in printed
    assert json.loads(out.read_text()) == json.loads(json.dumps(pool_runs(runs)))
    assert main(["pool", str(runs[0]), "--out", str(tmp_path / "one.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least two run folders" in err
    assert not (tmp_path / "one.json").exists()  # nothing written for bad input


@pytest.mark.slow
def test_undo_run_with_run_seeds_runs_each_and_pools_them(runs, tmp_path, capsys):
    """`study.run_seeds`: run seed `seed` in the folder `name`, the others in
    `name-seedN`, then the pooled study beside them. The two finished runs, copied
    there, are reused stage for stage, so the pooled file is theirs."""
    name = runs[0].name
    shutil.copytree(runs[0], tmp_path / name)
    shutil.copytree(runs[1], tmp_path / f"{name}-seed2")
    capsys.readouterr()
    assert main(["run", str(TEXT_SMOKE), f"out_dir={tmp_path}", "seed=1",
                 "study.run_seeds=[1,2]", *RUN]) == 0
    out = capsys.readouterr().out
    pooled = json.loads((tmp_path / f"{name}-pooled.json").read_text())
    assert pooled["runs"] == [str(tmp_path / name), str(tmp_path / f"{name}-seed2")]
    expected = pool_runs(runs)
    assert pooled["attacks"] == expected["attacks"] and pooled["compute"] == expected["compute"]
    assert "run seed 1 (" in out and "run seed 2 (" in out and "run seeds [1, 2]" in out
    # Each folder is an ordinary one-seed run folder: its config has no run_seeds.
    for d in (name, f"{name}-seed2"):
        assert "run_seeds: []" in (tmp_path / d / "config.yaml").read_text()


@pytest.mark.slow
def test_run_seeds_bad_input_stops_before_any_run(runs, tmp_path, capsys):
    name = runs[0].name
    assert main(["run", str(TEXT_SMOKE), f"out_dir={tmp_path}", "study.run_seeds=[1]",
                 *RUN]) == 2
    assert "study.run_seeds" in capsys.readouterr().err and not any(tmp_path.iterdir())
    # The second run seed's folder holds another recipe: refused before the first runs.
    other = tmp_path / f"{name}-seed2"
    other.mkdir()
    cfg = yaml.safe_load((runs[1] / "config.yaml").read_text())
    cfg["distill"]["lr"] = 0.5
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(TEXT_SMOKE), f"out_dir={tmp_path}", "seed=1",
                 "study.run_seeds=[1,2]", *RUN]) == 2
    err = capsys.readouterr().err
    assert "holds the results of a different config" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]
