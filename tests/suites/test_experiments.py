"""The side-by-side benchmark scripts, run as a user runs them, on two finished smoke
studies that differ by one setting."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_study import SMOKE
from undo.cli import main

BENCH = Path(__file__).resolve().parents[2] / "experiments"
FAST = ["threads=1", "progress=false", "study.workers=1", "study.seeds=[0,1]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    for name, extra in (("fp32", []), ("bf16", ["precision=bf16-mixed"])):
        assert main(["run", str(SMOKE), f"out_dir={out / name}", *FAST, *extra]) == 0
    # The fp32 run's models attacked in float32 too: a copy re-run with only the attacks'
    # precision changed (every other stage reused).
    shutil.copytree(out / "fp32", out / "fp32-attacks")
    next((out / "fp32-attacks").iterdir()).joinpath("config.yaml").unlink()
    assert main(["run", str(SMOKE), f"out_dir={out / 'fp32-attacks'}", *FAST,
                 "attack.precision=fp32"]) == 0
    # The fp32 study at another run seed (its own base, gold standard and teacher).
    assert main(["run", str(SMOKE), f"out_dir={out / 'seed1'}", *FAST, "seed=1"]) == 0
    return {n: next((out / n).iterdir()) for n in ("fp32", "bf16", "fp32-attacks", "seed1")}


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True,
                          text=True, check=False)


@pytest.mark.slow
def test_precision_side_by_side_reads_both_runs(runs, tmp_path):
    out = tmp_path / "p.json"
    r = _script("precision_side_by_side.py", f"--run=fp32={runs['fp32']}",
                f"--run=bf16-mixed={runs['bf16']}", "--conditions", "fp32=test",
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["differences"] == {"bf16-mixed": ["precision: 'fp32' -> 'bf16-mixed'"]}
    assert {n: x["precision"] for n, x in res["runs"].items()} == {
        "fp32": "fp32", "bf16-mixed": "bf16-mixed"}
    arms = json.loads((runs["fp32"] / "summary.json").read_text())["intervals"]["compute"]
    assert set(res["arms"]) == set(arms) and set(res["comparison"]) == set(arms)
    for arm, t in res["arms"].items():
        assert set(t) == {"fp32", "bf16-mixed"} and t["fp32"]["arm"] == arm
        assert t["fp32"]["seeds"] == t["bf16-mixed"]["seeds"] == [0, 1]
        verdict = res["comparison"][arm]["fp32 vs bf16-mixed"]
        assert verdict["same_references"] is False  # precision is in every stage's key
    assert res["worst_case_differences"] == {"bf16-mixed": None}  # other models


@pytest.mark.slow
def test_precision_side_by_side_compares_attacks_of_the_same_models(runs, tmp_path):
    """Runs that differ by `attack.precision` alone attacked the same models: each
    model's worst cases are compared directly, at every budget, under every attack."""
    out = tmp_path / "a.json"
    r = _script("precision_side_by_side.py", f"--run=fp32={runs['fp32-attacks']}",
                f"--run=bf16={runs['fp32']}", "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["differences"] == {"bf16": ["attack.precision: 'fp32' -> 'bf16-mixed'"]}
    assert {n: x["attack_precision"] for n, x in res["runs"].items()} == {
        "fp32": "fp32", "bf16": "bf16-mixed"}
    summary = json.loads((runs["fp32"] / "summary.json").read_text())
    attacked = [(m["name"], a) for m in summary["models"] for a in m["attacks"]]
    moved = res["worst_case_differences"]["bf16"]
    assert set(moved) == {str(b) for b in summary["budgets"]}
    for budget in moved.values():
        assert budget["cases"] == len(attacked) > 0
        assert 0 <= budget["mean_value"] <= budget["max_value"]
    other = json.loads((runs["fp32-attacks"] / "summary.json").read_text())
    folders = [{Path(a["relearn_json"]).parent.name for m in x["models"]
                for a in m["attacks"].values()} for x in (summary, other)]
    assert not folders[0] & folders[1]  # each model attacked anew, not reused
    assert all(v["same_references"] for c in res["comparison"].values() for v in c.values())


@pytest.mark.slow
def test_recipe_side_by_side_names_what_changed_and_refuses_bad_input(runs, tmp_path):
    out = tmp_path / "r.json"
    arm = next(iter(json.loads((runs["fp32"] / "summary.json").read_text())
                    ["intervals"]["compute"]))
    r = _script("recipe_side_by_side.py", f"--run=a={runs['fp32']}", f"--run=b={runs['bf16']}",
                f"--arm=a={arm}", f"--arm=b={arm}", "--out", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["recipes"]["b"]["changed_from_baseline"] == ["precision: 'fp32' -> 'bf16-mixed'"]
    bad = _script("recipe_side_by_side.py", "--run", f"a{runs['fp32']}", "--out", str(out))
    assert bad.returncode != 0 and "expected NAME=" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_frontier_takes_each_summarys_numbers_and_names_what_differs(runs, tmp_path):
    out = tmp_path / "f.json"
    r = _script("frontier.py", str(runs["fp32"]), str(runs["bf16"] / "summary.json"),
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    a, b = json.loads(out.read_text())["runs"]
    # The key the two configs differ in is named; where they ran (out_dir) is not.
    assert (a["settings"]["precision"], b["settings"]["precision"]) == ("fp32", "bf16-mixed")
    assert "out_dir" not in a["settings"] and a["settings"]["study.seeds"] == [0, 1]
    summary = json.loads((runs["fp32"] / "summary.json").read_text())
    iv, budget = summary["intervals"], max(summary["budgets"])
    assert {(p["arm"], p["attack"]) for p in a["points"]} == {
        (arm, attack) for arm in iv["compute"] for attack in iv["attacks"]}
    for p in a["points"]:
        assert p["budget"] == budget and p["seeds"] == 2
        assert p["robustness"] == iv["attacks"][p["attack"]][str(budget)]["robustness"][p["arm"]]
        assert p["total_fraction_of_gold_flops"] == \
            iv["compute"][p["arm"]]["total_fraction_of_gold_flops"]


@pytest.mark.slow
def test_frontier_adds_a_study_pooled_over_run_seeds(runs, tmp_path):
    pooled_file, out = tmp_path / "pooled.json", tmp_path / "f.json"
    assert main(["pool", str(runs["fp32"]), str(runs["seed1"]), "--out",
                 str(pooled_file)]) == 0
    r = _script("frontier.py", str(runs["fp32"]), "--pooled", str(pooled_file),
                "--out", str(out))
    assert r.returncode == 0, r.stderr
    study, pooled_run = json.loads(out.read_text())["runs"]
    pooled = json.loads(pooled_file.read_text())
    assert pooled_run["pooled_runs"] == pooled["runs"] and pooled["run_seeds"] == [0, 1]
    assert pooled_run["settings"] == study["settings"]  # its first run is that study
    assert {(p["arm"], p["attack"]) for p in pooled_run["points"]} == {
        (p["arm"], p["attack"]) for p in study["points"]}
    for p in pooled_run["points"]:
        assert p["run_seeds"] == [0, 1]
        assert p["robustness"] == pooled["attacks"][p["attack"]][str(p["budget"])][
            "robustness"][p["arm"]]
        assert p["total_fraction_of_gold_flops"] == \
            pooled["compute"][p["arm"]]["total_fraction_of_gold_flops"]
