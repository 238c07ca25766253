"""Worst-case aggregation and the Robustness / Compute ratios, on hand-made numbers."""

import math

import pytest

from undo.analysis.robustness import (
    aggregate,
    compute_ratio,
    curve_peak,
    higher_is_worse,
    mean_curve,
    mean_std,
    robustness,
    safe_ratio,
    worst_case,
)


def _run(lr, seed, at, curve=None, ce=None):
    """A synthetic run: forget/acc `at[k]` at budget k, optional curve [(step, acc)]."""
    budgets = {str(k): {"forget/acc": v, "forget/ce": (ce or {}).get(k, 1.0 - v)}
               for k, v in at.items()}
    pts = curve or [(k, v) for k, v in sorted(at.items())]
    return {"lr": lr, "seed": seed, "budgets": budgets,
            "curve": [{"step": s, "forget/acc": v, "forget/ce": 1.0 - v} for s, v in pts]}


RUNS = [
    # lr 1e-3 relearns fast but overshoots late; lr 1e-4 is slower but ends higher.
    _run(1e-3, 0, {0: 0.1, 40: 0.6, 100: 0.5}),
    _run(1e-3, 1, {0: 0.1, 40: 0.8, 100: 0.5}),
    _run(1e-4, 0, {0: 0.1, 40: 0.3, 100: 0.7}),
    _run(1e-4, 1, {0: 0.1, 40: 0.5, 100: 0.9}),
]


def test_mean_std_by_hand():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)  # sample std: sqrt(2/2)
    assert mean_std([0.25]) == (0.25, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))  # no values: no mean (a report row)


def test_direction_of_metrics():
    assert higher_is_worse("forget/acc") and not higher_is_worse("forget/ce")
    with pytest.raises(ValueError):
        higher_is_worse("forget/bleu")


def test_worst_case_picks_the_lr_with_the_highest_seed_mean_per_budget():
    wc = worst_case(RUNS, [0, 40, 100], "forget/acc")
    assert set(wc) == {"0", "40", "100"}
    # budget 40: lr 1e-3 mean (0.6+0.8)/2 = 0.7 beats lr 1e-4 mean 0.4
    assert wc["40"]["lr"] == 1e-3 and wc["40"]["value"] == pytest.approx(0.7)
    assert wc["40"]["std"] == pytest.approx(math.sqrt(2 * 0.1**2))  # ddof=1
    assert (wc["40"]["min"], wc["40"]["max"], wc["40"]["n_seeds"]) == (0.6, 0.8, 2)
    # budget 100: lr 1e-4 mean 0.8 beats 0.5: the worst LR can change with the budget
    assert wc["100"]["lr"] == 1e-4 and wc["100"]["value"] == pytest.approx(0.8)
    assert wc["100"]["values"] == [0.7, 0.9]
    # budget 0: all equal; ties go to the larger LR
    assert wc["0"]["lr"] == 1e-3 and wc["0"]["value"] == pytest.approx(0.1)


def test_worst_case_for_ce_is_the_lowest():
    runs = [_run(1e-3, 0, {0: 0.0, 10: 0.0}, ce={0: 3.0, 10: 2.0}),
            _run(1e-4, 0, {0: 0.0, 10: 0.0}, ce={0: 3.0, 10: 1.5})]
    wc = worst_case(runs, [10], "forget/ce")
    assert wc["10"]["lr"] == 1e-4 and wc["10"]["value"] == 1.5


def test_curve_peak_is_the_worst_point_up_to_the_budget():
    r = _run(1e-3, 0, {0: 0.1, 20: 0.3}, curve=[(0, 0.1), (5, 0.6), (10, 0.4), (20, 0.3)])
    assert curve_peak(r, 20, "forget/acc") == 0.6
    assert curve_peak(r, 4, "forget/acc") == 0.1
    assert curve_peak(r, 20, "forget/ce") == pytest.approx(0.4)  # lowest CE = 1 - 0.6
    wc = worst_case([r], [20], "forget/acc")
    assert wc["20"]["value"] == 0.3 and wc["20"]["curve_peak"] == 0.6


def test_mean_curve_uses_steps_every_seed_has():
    a = _run(1e-3, 0, {0: 0.0}, curve=[(0, 0.0), (5, 0.2), (10, 0.4)])
    b = _run(1e-3, 1, {0: 0.0}, curve=[(0, 0.0), (5, 0.4)])
    c = mean_curve([a, b], "forget/acc")
    assert c["steps"] == [0, 5]
    assert c["mean"] == pytest.approx([0.0, 0.3])
    assert c["std"] == pytest.approx([0.0, math.sqrt(0.02)])


def test_aggregate_sections():
    agg = aggregate(RUNS, [0, 40, 100])
    assert set(agg) == {"worst_case", "curves"}
    assert set(agg["curves"]["forget/acc"]) == {"0.001", "0.0001"}
    assert agg["curves"]["forget/acc"]["0.0001"]["mean"] == pytest.approx([0.1, 0.4, 0.8])
    assert agg["worst_case"]["forget/ce"]["100"]["lr"] == 1e-4  # lowest CE: 1 - 0.8


def test_robustness_by_hand():
    # unlearn-only relearns to 0.9, gold to 0.4: a model at 0.5 recovered 0.8 of the gap.
    assert robustness(0.5, 0.9, 0.4) == pytest.approx(0.8)
    assert robustness(0.9, 0.9, 0.4) == 0.0  # as fragile as unlearning alone
    assert robustness(0.4, 0.9, 0.4) == pytest.approx(1.0)  # as robust as the gold standard
    assert robustness(0.3, 0.9, 0.4) == pytest.approx(1.2)  # beyond gold is not clipped
    # CE (lower is worse): unlearn-only CE 1.0, gold 3.0, model 2.0 -> 0.5
    assert robustness(2.0, 1.0, 3.0) == pytest.approx(0.5)


def test_robustness_undefined_when_gold_and_unlearn_only_coincide():
    assert robustness(0.5, 0.6, 0.6) is None
    assert robustness(0.5, 0.6, 0.6 + 1e-9) is None  # ~0 gap: undefined, no huge ratio
    assert robustness(0.5, 0.6, 0.59, tol=0.05) is None
    assert safe_ratio(1.0, float("nan")) is None


def test_compute_ratio_by_hand():
    c = compute_ratio({"steps": 300, "tokens": 3_000, "flops": 6e12},
                      {"steps": 1000, "tokens": 12_000, "flops": 2e13})
    assert c == pytest.approx({"steps": 0.3, "tokens": 0.25, "flops": 0.3})
    assert compute_ratio({"steps": 5}, {"steps": 0})["steps"] is None
    assert compute_ratio({"steps": 5, "flops": 1.0}, {"steps": 10}) == {"steps": 0.5}
