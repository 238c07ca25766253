"""The study summary takes every fraction of the gold standard's compute, one way."""

import pytest

from undo.study.summary import compute_of

GOLD = {"steps": 1000, "tokens": 2_000_000, "flops": 1e15}


def test_steps_are_counted_at_the_gold_runs_tokens_per_step_for_every_model():
    distilled = {"steps": 200, "tokens": 500_000, "flops": 2e14, "flops_incl_teacher": 3e14}
    unlearned = {"steps": 40, "tokens": 100_000, "flops": 5e13}
    d, u = compute_of(distilled, GOLD), compute_of(unlearned, GOLD)
    assert d["fraction_of_gold_steps"] == pytest.approx(0.25)  # 250 gold-sized steps
    assert d["fraction_of_gold_flops"] == pytest.approx(0.3)  # the teacher's forwards count
    assert d["flops"] == 3e14
    # Unlearning by the same definition (not raw steps, which would say 0.04).
    assert u["fraction_of_gold_steps"] == pytest.approx(0.05)
    assert u["fraction_of_gold_flops"] == pytest.approx(0.05)


def test_no_fraction_without_a_gold_standard_or_its_counts():
    s = {"steps": 10, "tokens": 100, "flops": 1.0}
    assert compute_of(s, None)["fraction_of_gold_steps"] is None
    imported = {"steps": None, "tokens": None, "flops": None}  # an imported gold: not ours
    assert compute_of(s, imported)["fraction_of_gold_flops"] is None
    assert compute_of(s, {**GOLD, "tokens": 0})["fraction_of_gold_steps"] is None
