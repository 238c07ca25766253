"""The verdict and tables with intervals (undo.report.errorbars): a comparison is stated
only where the 95% intervals separate; a worst case that broke the utility floor is
flagged, not dropped."""

from undo.report.errorbars import format_intervals, verdict_sentences


def _ci(point, lo, hi):
    return {"point": point, "lo": lo, "hi": hi}


def _summary(r02, r08, broke=False):
    models = [{"name": "gold", "kind": "gold", "alpha": None},
              {"name": "unlearn-only", "kind": "unlearn_only", "alpha": None}]
    for a in (0.2, 0.8):
        for s in (0, 1):
            models.append({"name": f"undo-a{a:g}-s{s}", "kind": "undo", "alpha": a, "seed": s})
    for m in models:
        ok = not (broke and m["name"] == "undo-a0.8-s1")
        m["attacks"] = {"paper": {"retain_before": 0.95, "worst_case": {
            "40": {"value": 0.2, "retain": 0.95 if ok else 0.3, "utility_ok": ok}}}}
    iv = {"worst_case": {"gold": _ci(0.05, 0.03, 0.07), "unlearn-only": _ci(0.6, 0.55, 0.65),
                         "UNDO α=0.2": _ci(0.4, 0.3, 0.5), "UNDO α=0.8": _ci(0.1, 0.05, 0.2)},
          "robustness": {"UNDO α=0.2": r02, "UNDO α=0.8": r08},
          "unlearn_only_over_gold": _ci(12, 8, 20),
          "method": {"resampled": ["eval items"], "lr_selection": "split"}}
    c = {k: _ci(0.3, 0.2, 0.4) for k in ("fraction_of_gold_steps", "fraction_of_gold_flops",
                                          "total_fraction_of_gold_steps",
                                          "total_fraction_of_gold_flops")}
    return {"metric": {"name": "forget/acc", "higher_is_worse": True},
            "retain_metric": {"name": "retain/acc"}, "models": models,
            "config": {"search": {"utility_floor": 0.9}},
            "intervals": {"attacks": {"paper": {"40": iv}},
                          "compute": {"UNDO α=0.2": c, "UNDO α=0.8": c}, "not_counted": []}}


def test_overlapping_intervals_are_within_noise_not_a_trend():
    text = " ".join(verdict_sentences(_summary(_ci(0.5, 0.2, 0.8), _ci(0.7, 0.4, 1.02))))
    assert "α=0.2 → α=0.8: within noise" in text and "rises" not in text
    assert "robustness after 40 steps 0.70 [0.40, 1.02] (within noise of the gold " \
           "standard" in text  # its interval reaches 1
    assert "0.50 [0.20, 0.80] (below the gold standard" in text
    assert "above the gold standard's" in text  # unlearn-only [0.55, 0.65] vs [0.03, 0.07]


def test_separated_intervals_state_the_comparison():
    text = " ".join(verdict_sentences(_summary(_ci(0.3, 0.2, 0.4), _ci(0.9, 0.8, 1.05))))
    assert "α=0.2 → α=0.8: rises" in text
    assert "UNDO α=0.2 (the paper's attack): robustness after 40 steps 0.30 [0.20, 0.40] " \
           "(below the gold standard, more robust than unlearning alone)" in text


def test_a_worst_case_that_wrecked_the_model_is_flagged_not_dropped():
    s = _summary(_ci(0.3, 0.2, 0.4), _ci(0.9, 0.8, 1.05), broke=True)
    text = " ".join(verdict_sentences(s))
    assert "Flagged under the paper's attack: the worst case of undo-a0.8-s1" in text
    table = format_intervals(s)
    row = next(line for line in table.splitlines() if line.startswith("UNDO α=0.8"))
    assert "1 broke" in row and "0.90 [0.80, 1.05]" in row  # still shown, with its value
