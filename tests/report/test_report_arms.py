"""table.csv (report/arms.py) and the FLOPs frontier, on a real study's summary: the
committed `experiments/results/study_faithful_summary.json` (3 seeds, 95% intervals, two
attacks) and the synthetic fixture (no intervals)."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest

from undo.report import arms, views, write_report

ROOT = Path(__file__).resolve().parents[2]
FAITHFUL = ROOT / "experiments" / "results" / "study_faithful_summary.json"
EARLIER = ROOT / "experiments" / "results" / "study_summary.json"  # written before intervals
FIXTURE = ROOT / "tests" / "fixtures" / "summary_example.json"


def _read(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _num(cell: str) -> float | None:
    return None if cell == "" else float(cell)


@pytest.fixture(scope="module")
def faithful_csv(tmp_path_factory) -> tuple[dict, list[dict]]:
    d = tmp_path_factory.mktemp("run") / "maxent-faithful"
    d.mkdir()
    shutil.copy(FAITHFUL, d / "summary.json")
    rep = write_report(d)
    assert rep.table == d / "table.csv"
    with rep.table.open(newline="") as f:
        return rep.summary, list(csv.DictReader(f))


def test_csv_holds_every_interval_of_the_summary(faithful_csv):
    """Every (attack, budget, row) of `intervals`, point and bounds in their own columns,
    equal to the summary's numbers (floats read back exactly)."""
    s, rows = faithful_csv
    assert list(rows[0]) == arms.COLUMNS
    iv = s["intervals"]
    expected = {(a, int(b), r) for a, by_b in iv["attacks"].items() for b, x in by_b.items()
                for r in {**x["worst_case"], **x["robustness"]}}
    got = {(r["attack"], int(r["budget"]), r["row"]) for r in rows}
    assert got == expected and len(rows) == len(expected)
    assert {r["attack"] for r in rows} == {"paper", "forget_only"}
    assert {r["run"] for r in rows} == {"maxent-faithful"}  # the run folder's name
    for r in rows:
        x = iv["attacks"][r["attack"]][r["budget"]]
        for col, src in (("worst_case", x["worst_case"].get(r["row"])),
                         ("robustness", x["robustness"].get(r["row"]))):
            want = src or {}
            assert (_num(r[col]), _num(r[f"{col}_lo"]), _num(r[f"{col}_hi"])) == \
                (want.get("point"), want.get("lo"), want.get("hi")), (r["row"], col)
        assert r["interval"] == "95% bootstrap"
    arm = next(r for r in rows if r["attack"] == "paper" and r["budget"] == "100"
               and r["row"] == "UNDO α=0.8")
    c = iv["compute"]["UNDO α=0.8"]
    for key in arms.COMPUTE:
        assert (_num(arm[key]), _num(arm[f"{key}_lo"]), _num(arm[f"{key}_hi"])) == \
            (c[key]["point"], c[key]["lo"], c[key]["hi"])
    assert (arm["kind"], float(arm["alpha"]), int(arm["n_models"])) == ("undo", 0.8, 3)
    # A reference: its own compute, no interval on it; gold's fraction is null in the file.
    uo = next(r for r in rows if r["row"] == "unlearn-only")
    model = next(m for m in s["models"] if m["kind"] == "unlearn_only")
    assert _num(uo["total_fraction_of_gold_flops"]) == \
        model["compute"]["total_fraction_of_gold_flops"]
    assert uo["total_fraction_of_gold_flops_lo"] == ""
    assert next(r for r in rows if r["row"] == "gold")["fraction_of_gold_steps"] == ""


def test_csv_without_intervals_gives_seed_means():
    """A summary written before intervals: the mean over each arm's seeds, empty bounds."""
    s = json.loads(FIXTURE.read_text())
    rows = _read(arms.to_csv([("run-x", s)]))
    assert {r["interval"] for r in rows} == {arms.NO_INTERVAL}
    assert all(r[f"{c}_{end}"] == "" for r in rows for c in arms.VALUES for end in ("lo", "hi"))
    seeds = [m for m in s["models"] if m["kind"] == "undo" and m["alpha"] == 0.8]
    row = next(r for r in rows if r["row"] == "UNDO α=0.8" and r["budget"] == "500")
    assert int(row["n_models"]) == len(seeds) == 2
    assert float(row["worst_case"]) == pytest.approx(
        sum(m["attack"]["worst_case"]["500"]["value"] for m in seeds) / 2)
    assert float(row["robustness"]) == pytest.approx(
        sum(m["robustness"]["500"] for m in seeds) / 2)
    assert {int(r["budget"]) for r in rows} == {b for b in s["budgets"] if b > 0}
    assert {r["run"] for r in rows} == {"run-x"}


def test_frontier_against_flops_counts_unlearning():
    s = json.loads(FAITHFUL.read_text())
    key, label = views.compute_axis([s], "flops")
    assert key == "total_fraction_of_gold_flops" and "incl. unlearning" in label
    (p,) = [p for p in views.frontier(s, key) if p.label.startswith("UNDO α=0.8")]
    seeds = [m["compute"][key] for m in s["models"] if m["kind"] == "undo"
             and m["alpha"] == 0.8 and m.get("recovered") is not False]
    assert p.compute == pytest.approx(sum(seeds) / len(seeds))
    steps = {q.label: q for q in views.frontier(s, views.compute_axis([s], "steps")[0])}
    assert p.compute > steps[p.label].compute  # FLOPs incl. unlearning > distill steps here
    gold = next(q for q in views.frontier(s, key) if q.kind == "gold")
    assert (gold.compute, gold.robustness) == (1.0, 1.0)
    # A summary without totals: distillation FLOPs, said so, for every panel that shares it.
    old = json.loads(EARLIER.read_text())
    assert views.compute_axis([old], "flops")[0] == "fraction_of_gold_flops"
    key2, label2 = views.compute_axis([s, old], "flops")
    assert key2 == "fraction_of_gold_flops" and "distillation FLOPs" in label2
    with pytest.raises(ValueError, match="valid are steps, flops"):
        views.compute_axis([s], "tokens")
    assert all(math.isfinite(q.compute) for q in views.frontier(old, key2))
