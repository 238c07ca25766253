"""Error bars (undo.analysis.intervals): split-half LR choice, references' noise inside every
interval, and the verdict's "within noise" rule (undo.report.errorbars.compare)."""

import numpy as np
import pytest

from undo.analysis.intervals import (
    Attacked,
    Study,
    attacked,
    halves,
    intervals,
    pooled,
    pooled_seed_interval,
)
from undo.report.errorbars import compare

N = 200  # eval items


def _run(lr, seed, correct, budget=40):
    return {"lr": lr, "seed": seed, "units": {str(budget): {"num": list(map(float, correct))}}}


def test_worst_lr_chosen_on_one_half_reported_on_the_other():
    """LR 0.1 looks worst on the selection half (even items) only; the reported value is
    its score on the report half (odd items), not the best-looking of the LRs."""
    sel, rep = halves(N)
    lucky = np.zeros(N)
    lucky[sel] = 1.0  # all selection items right, all report items wrong
    steady = np.full(N, 0.0)
    steady[::4] = 1.0  # every fourth item: 0.5 on the selection half, 0 on the report half
    a = attacked([_run(0.1, 0, lucky), _run(0.01, 0, steady)], 40, higher_is_worse=True)
    assert a.lr == 0.1
    assert a.point() == pytest.approx(0.0)  # its report-half score
    assert len(a.seeds[0][0]) == len(rep)
    assert attacked([{"lr": 0.1, "seed": 0, "units": {}}], 40, True) is None  # no units


def _refs(rng, gold_rates, uo_rate, seeds):
    gold = Attacked(1e-3, {s: ((rng.random(N // 2) < r).astype(float), np.ones(N // 2))
                           for s, r in zip(seeds, gold_rates, strict=True)})
    uo = Attacked(1e-3, {s: ((rng.random(N // 2) < uo_rate).astype(float), np.ones(N // 2))
                         for s in seeds})
    return gold, uo


def test_reference_noise_is_inside_the_robustness_interval():
    """Identical students, references whose attack seeds differ a lot: the interval over
    attack seeds must be wider than with references that agree across seeds."""
    rng = np.random.default_rng(0)
    seeds = [0, 1, 2]
    student = [Attacked(1e-3, {s: (np.full(N // 2, 0.3), np.ones(N // 2))}) for s in seeds]
    noisy = Study(*_refs(rng, [0.02, 0.25, 0.02], 0.6, seeds), {"arm": student}, {}, N // 2)
    steady = Study(*_refs(rng, [0.1, 0.1, 0.1], 0.6, seeds), {"arm": student}, {}, N // 2)
    w = {}
    for name, st in (("noisy", noisy), ("steady", steady)):
        r = intervals(st, tol=0.05, replicates=400)["robustness"]["arm"]
        assert r["lo"] <= r["point"] <= r["hi"]
        w[name] = r["hi"] - r["lo"]
    assert w["noisy"] > 1.5 * w["steady"]


def test_reference_attacked_with_fewer_seeds_than_a_student_is_refused():
    rng = np.random.default_rng(1)
    gold, uo = _refs(rng, [0.1], 0.6, [0])
    student = [Attacked(1e-3, {s: (np.full(N // 2, 0.3), np.ones(N // 2))}) for s in (0, 1)]
    with pytest.raises(ValueError, match=r"gold was not attacked with attack seeds \[1\]"):
        intervals(Study(gold, uo, {"UNDO α=0.8": student}, {}, N // 2), tol=0.05,
                  replicates=10)


def test_compare_states_a_difference_only_when_intervals_separate():
    a = {"point": 0.9, "lo": 0.85, "hi": 0.95}
    assert compare(a, {"point": 0.7, "lo": 0.6, "hi": 0.84}) == "higher"
    assert compare({"point": 0.7, "lo": 0.6, "hi": 0.84}, a) == "lower"
    assert compare(a, {"point": 0.8, "lo": 0.7, "hi": 0.86}) == "within noise"
    assert compare(a, {"point": 0.8, "lo": None, "hi": None}) == "within noise"


def _study(rng, student_rate, seeds=(0, 1, 2)):
    """Students scoring `student_rate` against gold 0.1 and unlearn-only 0.6: robustness
    (rate − 0.6) / (0.1 − 0.6)."""
    gold, uo = _refs(rng, [0.1] * len(seeds), 0.6, list(seeds))
    students = [Attacked(1e-3, {s: ((rng.random(N // 2) < student_rate).astype(float),
                                    np.ones(N // 2))}) for s in seeds]
    return Study(gold, uo, {"arm": students}, {}, N // 2)


def test_pooled_over_one_run_is_that_runs_robustness():
    st = _study(np.random.default_rng(2), 0.3)
    one = intervals(st, tol=0.05, replicates=200)["robustness"]["arm"]
    p = pooled([st], tol=0.05, replicates=200)["robustness"]["arm"]
    assert p["point"] == pytest.approx(one["point"]) and p["per_run"] == [p["point"]]


def test_pooled_interval_holds_the_spread_between_run_seeds():
    """Two runs whose references make the same students score 0.6 and 0.2: the pooled
    point is their mean, and its interval is much wider than when both runs agree (the
    same run twice): the run seed's noise is inside it."""
    rng = np.random.default_rng(3)
    a, b = _study(rng, 0.3), _study(rng, 0.5)

    def width(r):
        return r["hi"] - r["lo"]

    p = pooled([a, b], tol=0.05, replicates=400)["robustness"]["arm"]
    assert p["point"] == pytest.approx(np.mean(p["per_run"]))
    assert p["lo"] < min(p["per_run"]) + 0.1 and p["hi"] > max(p["per_run"]) - 0.1
    same = [pooled([x, x], tol=0.05, replicates=400)["robustness"]["arm"] for x in (a, b)]
    assert width(p) > 1.5 * max(map(width, same))


def test_pooled_seed_interval_resamples_runs_then_seeds():
    r = pooled_seed_interval([[0.2, 0.2], [0.6, 0.6]], replicates=400)
    assert r["point"] == pytest.approx(0.4)
    assert r["lo"] == pytest.approx(0.2) and r["hi"] == pytest.approx(0.6)
    assert pooled_seed_interval([[0.2], []])["point"] is None  # a run without the arm
