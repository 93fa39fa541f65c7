"""Gate decisions on constructed per-seed scores."""

import numpy as np
import pytest

from tidian.evaluation.gate import gate, holm, pareto_front
from tidian.evaluation.stats import paired_compare
from tidian.metrics import row_pseudo_values

INCUMBENT = [0.80, 0.82, 0.79, 0.85, 0.81]


def decide(candidates, **kw):
    return gate(INCUMBENT, candidates, metric="accuracy", greater_is_better=True, **kw)


def test_a_a_is_rejected():
    noise = np.array([0.004, -0.006, 0.003, -0.002, 0.001])
    d = decide({"same": list(np.add(INCUMBENT, noise))})["same"]
    assert not d.accepted and d.low < 0 < d.high
    assert d.reason.startswith("rejected")


def test_clear_gain_is_accepted_with_numbers():
    d = decide({"better": [s + g for s, g in zip(INCUMBENT, [0.04, 0.05, 0.03, 0.045, 0.05])]})
    d = d["better"]
    assert d.accepted and d.gain == pytest.approx(0.043) and d.low > 0
    assert d.p_value < d.alpha == pytest.approx(0.025)
    assert "accepted: better beyond noise" in d.reason and "+0.043" in d.reason


def test_min_effect_raises_the_bar():
    cand = {"small": [s + g for s, g in zip(INCUMBENT, [0.011, 0.012, 0.010, 0.011, 0.012])]}
    assert decide(cand)["small"].accepted
    assert not decide(cand, min_effect=0.02)["small"].accepted


def test_non_inferiority_within_and_beyond_the_margin():
    slightly_worse = {"c": [s - g for s, g in zip(INCUMBENT, [0.002, 0.003, 0.001, 0.002, 0.002])]}
    assert decide(slightly_worse, test="non_inferiority", margin=0.01)["c"].accepted
    assert not decide(slightly_worse, test="superiority")["c"].accepted
    much_worse = {"c": [s - 0.05 + g for s, g in zip(INCUMBENT, [0.01, -0.01, 0.0, 0.005, 0])]}
    d = decide(much_worse, test="non_inferiority", margin=0.01)["c"]
    assert not d.accepted and "more than the margin" in d.reason


def test_lower_is_better_metrics_are_oriented():
    losses = [0.50, 0.52, 0.49, 0.55, 0.51]
    lower = [x - 0.05 + e for x, e in zip(losses, [0.0, 0.004, -0.003, 0.002, 0.001])]
    d = gate(losses, {"c": lower}, metric="log_loss", greater_is_better=False)["c"]
    assert d.accepted and d.gain > 0


def test_holm_with_several_candidates():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # p just under alpha alone is accepted; among five candidates Holm rejects it
    gains = [0.02, 0.005, 0.03, 0.01, 0.015]
    borderline = {"b": [s + g for s, g in zip(INCUMBENT, gains)]}
    alone = decide(borderline)["b"]
    nulls = {
        f"n{i}": list(np.add(INCUMBENT, np.roll([0.01, -0.01, 0.005, -0.005, 0], i)))
        for i in range(4)
    }
    crowded = decide({**borderline, **nulls})["b"]
    assert alone.p_value == pytest.approx(crowded.p_value)
    assert crowded.p_adjusted == pytest.approx(min(1, 5 * crowded.p_value))
    assert alone.accepted and not crowded.accepted
    assert "Holm p=" in crowded.reason
    # the reason shows why: the interval alone clears zero, adjusted for five it does not
    assert alone.low > 0 and alone.adjusted_low is None and "adjusted" not in alone.reason
    assert crowded.adjusted_low < 0 < crowded.low
    assert (crowded.low, crowded.high) == pytest.approx((alone.low, alone.high))
    wide = paired_compare(
        INCUMBENT, borderline["b"], metric="accuracy", greater_is_better=True, confidence=0.99
    )
    assert (crowded.adjusted_low, crowded.adjusted_high) == pytest.approx((wide.low, wide.high))
    assert f"([{crowded.adjusted_low:+.4g}, {crowded.adjusted_high:+.4g}] adjusted for 5)" in (
        crowded.reason
    )


def test_pareto_front():
    points = {"a": (1, 1), "b": (2, 0.5), "c": (2, 2), "d": (0.5, 3)}
    assert sorted(pareto_front(points)) == ["a", "b", "d"]


def test_a_gain_whose_seeds_agree_exactly_is_not_proven_with_p_0():
    # the same one extra test row (of 67) right on every seed: no spread, no t statistic
    row = 1 / 67
    d = gate(
        INCUMBENT[:3],
        {"c": [s + row for s in INCUMBENT[:3]]},
        metric="accuracy",
        greater_is_better=True,
    )["c"]
    assert d.p_value == 0.125 and not d.accepted  # the exact sign test: 0.5^3
    assert "p=0.125 (the seeds agree exactly: sign test)" in d.reason
    assert "p=0 " not in d.reason
    # accuracies on the same 67 rows: their differences agree up to rounding only
    base = [k / 67 for k in (50, 53, 55)]
    d = gate(
        base, {"c": [(k + 1) / 67 for k in (50, 53, 55)]}, metric="accuracy", greater_is_better=True
    )["c"]
    assert d.p_value == 0.125 and d.low == d.high == pytest.approx(row)
    # six seeds all the same way is evidence at α = 0.025 (0.5^6 = 0.016)
    six = [0.8, 0.82, 0.79, 0.85, 0.81, 0.83]
    d6 = gate(six, {"c": [s + row for s in six]}, metric="accuracy", greater_is_better=True)
    assert d6["c"].p_value == 0.5**6 and d6["c"].accepted
    # an exactly equal candidate shows nothing
    same = decide({"c": list(INCUMBENT)})["c"]
    assert same.p_value == 1.0 and not same.accepted


def test_the_same_extra_row_on_every_seed_is_not_a_proven_gain_when_rows_are_counted():
    """The issue's penguins case with the test rows' pseudo-values: the candidate gets one more
    of 67 rows right on each of 3 seeds. The rows say that is one row's luck, not a lift."""
    y = np.zeros(67, dtype=int)

    def pseudo(right: int) -> list[float]:
        out = np.zeros((67, 2))
        out[np.arange(67), (np.arange(67) >= right).astype(int)] = 1.0
        return row_pseudo_values(y, out, ["accuracy"])["accuracy"]

    base = [60 / 67] * 3
    d = gate(
        base,
        {"c": [61 / 67] * 3},
        metric="accuracy",
        greater_is_better=True,
        incumbent_rows=[pseudo(60)] * 3,
        rows={"c": [pseudo(61)] * 3},
    )["c"]
    assert not d.accepted and d.low < 0 < d.high and d.gain == pytest.approx(1 / 67)
    assert 0.1 < d.p_value < 0.25
    assert "(test rows 100% of the variance)" in d.reason and "sign test" not in d.reason
    # six more rows right on every seed (and none wrong) is a lift the rows cannot explain
    many = gate(
        base,
        {"c": [66 / 67] * 3},
        metric="accuracy",
        greater_is_better=True,
        incumbent_rows=[pseudo(60)] * 3,
        rows={"c": [pseudo(66)] * 3},
    )["c"]
    assert many.accepted and many.p_value < 0.01 and many.low > 0
