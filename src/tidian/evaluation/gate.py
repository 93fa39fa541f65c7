"""The gate: does a candidate really beat (or, for cost stages, not lose to) the incumbent?

Scores are paired by seed (same seed → same split and data order for both). For each
candidate the gain d_i = candidate_i − incumbent_i (sign-flipped for lower-is-better
metrics) is tested one-sided with a paired t-test — over seeds, and, when every seed was scored
on the same test rows, over those rows too (the test set is a sample: a candidate that gets the
same one extra row right on every seed has not shown that it is better; ``stats.mean_variance``):

* superiority (quality stages):  H0: mean gain ≤ min_effect
* non-inferiority (cost stages): H0: mean gain ≤ −margin

at level α = (1 − confidence) / 2, so that with a single candidate "accepted" is exactly "the
lower end of the two-sided CI of the gain lies above the threshold". With several candidates
in one stage the p-values get Holm's step-down correction, which keeps the chance of accepting
any candidate that is really no better at α; each such reason shows the Bonferroni interval (at
α / m per side) beside the plain one, so a gain whose interval clears zero alone but not after
the correction says why it was turned down. (The pipeline by default gates only the candidate a
stage chooses on validation, alone: ``evaluate.select``.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tidian.evaluation.stats import no_spread, one_sided_p, paired_compare, row_differences
from tidian.exceptions import bad_value

TESTS = ("superiority", "non_inferiority")


@dataclass(frozen=True)
class Decision:
    """The gate's verdict on one candidate, with the numbers behind it and a one-line reason."""

    accepted: bool
    test: str
    metric: str
    gain: float  # mean gain, positive = better
    low: float  # two-sided CI of the gain at the run's confidence
    high: float
    threshold: float
    p_value: float
    p_adjusted: float
    alpha: float
    n: int
    reason: str
    # with several candidates: the interval adjusted for them (Bonferroni, α / m per side)
    adjusted_low: float | None = None
    adjusted_high: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (monotone, capped at 1)."""
    m = len(p_values)
    order = np.argsort(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def gate(
    incumbent: Sequence[float],
    candidates: Mapping[str, Sequence[float]],
    *,
    metric: str,
    greater_is_better: bool,
    test: str = "superiority",
    confidence: float = 0.95,
    min_effect: float = 0.0,
    margin: float = 0.01,
    correction: float = 0.0,
    incumbent_rows: Any = None,
    rows: Mapping[str, Any] | None = None,
) -> dict[str, Decision]:
    """Decide every candidate of one stage against the incumbent (per-seed, same seeds).
    ``correction`` (ρ = n_test / n_train) when the seeds are cross-validation units: the
    t statistic then uses Nadeau & Bengio's corrected variance. ``incumbent_rows`` and
    ``rows[name]``: seeds × row-groups pseudo-values of the metric when every seed was scored
    on the same test rows (``metrics.row_pseudo_values``): the test set is a sample too, and
    its rows' part of the variance is added to the seeds' (``stats.mean_variance``); a
    candidate without them is judged on its seeds alone."""
    if test not in TESTS:
        raise bad_value("test", f"one of {TESTS}", test)
    alpha = (1 - confidence) / 2
    threshold = min_effect if test == "superiority" else -margin
    sign = 1.0 if greater_is_better else -1.0
    names = list(candidates)
    comparisons, adjusted_intervals, p_values = {}, {}, []
    bonferroni = 1 - (1 - confidence) / max(len(names), 1)  # two-sided level, α / m per side
    for name in names:
        pair = (incumbent_rows, (rows or {}).get(name))
        cmp, adjusted_intervals[name] = (
            paired_compare(
                incumbent,
                candidates[name],
                metric=metric,
                greater_is_better=greater_is_better,
                confidence=level,
                correction=correction,
                rows=pair,
            )
            for level in (confidence, bonferroni)
        )
        comparisons[name] = cmp
        table = row_differences(pair, cmp.n)
        p_values.append(
            one_sided_p(
                sign * np.asarray(cmp.differences),
                threshold,
                correction,
                None if table is None else sign * table,
            )
        )
    adjusted = holm(p_values) if names else []
    decisions = {}
    for name, p, p_adj in zip(names, p_values, adjusted):
        gain, low, high = comparisons[name].improvement
        accepted = p_adj < alpha
        what = "gain" if test == "superiority" else "change"
        bound = f"{what} {gain:+.4g} [{low:+.4g}, {high:+.4g}] {metric}"
        adjusted = adjusted_intervals[name].improvement
        if len(names) > 1:
            bound += f" ([{adjusted[1]:+.4g}, {adjusted[2]:+.4g}] adjusted for {len(names)})"
        holm_note = f"Holm p={p_adj:.3g}" if len(names) > 1 else f"p={p:.3g}"
        cmp = comparisons[name]
        exact = cmp.n > 1 and no_spread(cmp.differences)
        if cmp.row_groups and (cmp.row_share > 0 or not exact):
            holm_note += f" (test rows {cmp.row_share:.0%} of the variance)"
        elif exact:
            holm_note += " (the seeds agree exactly: sign test)"
        if test == "superiority":
            verdict = (
                "better beyond noise"
                if accepted
                else "not shown to be better"
                if gain > threshold
                else "no better"
            )
            rule = f"needs > {threshold:+.4g}" if threshold else "needs > 0"
        else:
            verdict = "within the margin" if accepted else "may lose more than the margin"
            rule = f"margin {margin:.4g}"
        reason = (
            f"{'accepted' if accepted else 'rejected'}: {verdict}; {bound}, {rule}, "
            f"{holm_note} vs α={alpha:.3g}"
        )
        decisions[name] = Decision(
            accepted,
            test,
            metric,
            gain,
            low,
            high,
            threshold,
            p,
            p_adj,
            alpha,
            comparisons[name].n,
            reason,
            adjusted[1] if len(names) > 1 else None,
            adjusted[2] if len(names) > 1 else None,
        )
    return decisions


def pareto_front(points: Mapping[str, Sequence[float]]) -> list[str]:
    """Names of the points no other point dominates; every objective is to be minimised."""
    names = list(points)
    front = []
    for a in names:
        pa = points[a]
        dominated = any(
            all(x <= y for x, y in zip(points[b], pa)) and any(x < y for x, y in zip(points[b], pa))
            for b in names
            if b != a
        )
        if not dominated:
            front.append(a)
    return front
