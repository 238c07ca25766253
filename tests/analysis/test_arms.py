"""Arm identity (undo.analysis.arms): the typed value behind every interval row's label."""

import pytest

from undo.analysis.arms import Arm, ModelKind, label_of, row_of


def test_label_round_trips_and_matches_the_committed_summary_keys():
    for arm in (Arm(ModelKind.UNDO, 0.8), Arm(ModelKind.UNDO, 0.25),
                Arm(ModelKind.UNLEARN_DISTILL)):
        assert Arm.parse(arm.label) == arm
    # The keys summary.json has always carried, so old summaries read unchanged.
    assert Arm(ModelKind.UNDO, 0.8).label == "UNDO α=0.8"
    assert Arm(ModelKind.UNLEARN_DISTILL).label == "Unlearn-and-Distill"


def test_of_a_summary_entry_and_the_rows_of_references():
    assert Arm.of({"kind": "undo", "alpha": 0.5}) == Arm(ModelKind.UNDO, 0.5)
    assert Arm.of({"kind": "gold"}) is None
    assert label_of({"kind": "unlearn_distill"}) == "Unlearn-and-Distill"
    assert row_of({"kind": "gold", "name": "gold"}) == "gold"
    assert row_of({"kind": "unlearn_only", "name": "unlearn-only"}) == "unlearn-only"
    assert row_of({"kind": "oracle_base", "name": "oracle-base"}) == "oracle-base"


def test_sort_order_is_undo_by_alpha_then_unlearn_and_distill():
    labels = ["Unlearn-and-Distill", "UNDO α=0.8", "UNDO α=0.2", "UNDO α=0.5"]
    assert sorted(labels, key=lambda s: Arm.parse(s).sort_key) == \
        ["UNDO α=0.2", "UNDO α=0.5", "UNDO α=0.8", "Unlearn-and-Distill"]


def test_bad_arms_are_refused_with_what_is_valid():
    with pytest.raises(ValueError, match="needs its alpha"):
        Arm(ModelKind.UNDO)
    with pytest.raises(ValueError, match="not an arm"):
        Arm(ModelKind.GOLD)
    with pytest.raises(ValueError, match="valid: 'Unlearn-and-Distill'"):
        Arm.parse("UNDO a=0.8")
    with pytest.raises(ValueError):
        ModelKind("teacher")
