"""Confidence intervals over seeds and paired comparisons between candidates.

With the usual handful of seeds (3–10) the t-interval is the honest default: it widens for
small n where a normal interval would overclaim. The bootstrap (BCa, from SciPy) is offered
for skewed per-seed scores; with so few seeds it tends to be too narrow, so it is an option,
not the default. Paired comparisons difference the two candidates seed by seed (same seed →
same split, same data order), which removes the between-seed variance both share.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

from tidian.exceptions import bad_value

CI_METHODS = ("t", "bootstrap")


@dataclass(frozen=True)
class Summary:
    """Per-seed values with their mean, standard deviation and confidence interval."""

    values: tuple[float, ...]
    mean: float
    std: float
    low: float
    high: float
    confidence: float
    method: str

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.half_width:.2g}"

    def to_dict(self) -> dict:
        return {
            "values": list(self.values),
            "mean": self.mean,
            "std": self.std,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "method": self.method,
        }


def _check(confidence: float, method: str) -> None:
    if not (isinstance(confidence, float | int) and 0 < confidence < 1):
        raise bad_value("confidence", "a probability in (0, 1)", confidence)
    if method not in CI_METHODS:
        raise bad_value("ci method", f"one of {CI_METHODS}", method)


def variance_factor(n: int, correction: float = 0.0) -> float:
    """The factor on σ² in the variance of a mean of ``n`` scores: 1/n for independent scores;
    1/n + ρ for cross-validation units whose training sets overlap, ρ = n_test / n_train
    (Nadeau & Bengio's corrected resampled t-test, 2003 — the plain t over CV folds is too
    confident because the folds' scores are correlated)."""
    return 1.0 / n + correction


@dataclass(frozen=True)
class MeanVariance:
    """The variance of a mean over seeds (and, when the seeds share their test rows, over
    those rows too), its degrees of freedom, and the part that the rows contribute."""

    variance: float
    df: float
    rows: float = 0.0  # the test rows' part of ``variance``
    groups: int = 0  # row groups it was estimated from (0: seeds alone)

    @property
    def row_share(self) -> float:
        return self.rows / self.variance if self.variance > 0 else 0.0


def mean_variance(
    values: Sequence[float], correction: float = 0.0, rows: Any = None
) -> MeanVariance:
    """The variance of the mean of per-seed ``values`` (σ²/n, or Nadeau & Bengio's corrected
    factor with ``correction``) plus, with ``rows`` — an (n seeds × G row groups) table of
    jackknife pseudo-values (``metrics.row_pseudo_values``) of the same quantity, every seed
    scored on the same test rows — the part that comes from which rows the test set holds.

    Seeds and rows are crossed: the score of seed s on group g is μ + a_s + b_g + e_sg, and the
    mean's variance is σ_a²/S + σ_b²/G + σ_e²/(S·G). The per-seed variance estimates the first
    and last terms; two-way ANOVA of the table gives the middle one, (MS_rows − MS_residual) /
    (S·G), cut at zero so that counting rows never shrinks the seeds' variance. Degrees of
    freedom: Welch–Satterthwaite (seeds' n − 1 when the rows add nothing). Written here because
    SciPy and statsmodels have two-way ANOVA tables but not this variance component of a mean.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    seeds = float(x.var(ddof=1) * variance_factor(n, correction)) if n > 1 else math.nan
    if rows is None or n < 2:
        return MeanVariance(seeds, max(n - 1, 1))
    table = np.asarray(rows, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != n or table.shape[1] < 2:
        raise bad_value("rows", f"{n} seeds × at least 2 row groups", table.shape)
    s, g = table.shape
    grand = table.mean()
    by_row = table.mean(axis=0)
    residual = table - table.mean(axis=1, keepdims=True) - by_row + grand
    ms_rows = s * float(((by_row - grand) ** 2).sum()) / (g - 1)
    ms_res = float((residual**2).sum()) / ((s - 1) * (g - 1))
    if not ms_rows > ms_res:
        return MeanVariance(seeds, n - 1, 0.0, g)
    part = (ms_rows - ms_res) / (s * g)
    df_part = (ms_rows - ms_res) ** 2 / (ms_rows**2 / (g - 1) + ms_res**2 / ((s - 1) * (g - 1)))
    total = seeds + part
    df = total**2 / (seeds**2 / (n - 1) + part**2 / df_part)
    return MeanVariance(total, float(df), part, g)


def confidence_interval(
    values: Sequence[float],
    confidence: float = 0.95,
    method: str = "t",
    *,
    seed: int = 0,
    correction: float = 0.0,
    rows: Any = None,
) -> tuple[float, float]:
    """Interval for the mean of ``values``. A single value gives (nan, nan): no spread is known.
    ``correction``: ρ of :func:`variance_factor` when the values are cross-validation units;
    ``rows``: the values' pseudo-values over test-row groups (:func:`mean_variance`)."""
    _check(confidence, method)
    if (correction or rows is not None) and method != "t":
        raise bad_value(
            "ci",
            "'t' with cross-validation or test rows (their variance's t-interval)",
            method,
        )
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2 or not np.isfinite(x).all():
        return math.nan, math.nan
    mean = float(x.mean())
    spread = mean_variance(x, correction, rows)
    if no_spread(x) and not spread.rows:
        return mean, mean
    if method == "t":
        half = sps.t.ppf((1 + confidence) / 2, spread.df) * math.sqrt(spread.variance)
        return mean - float(half), mean + float(half)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on degenerate resamples; fall back below
        res = sps.bootstrap(
            (x,),
            np.mean,
            confidence_level=confidence,
            method="BCa",
            n_resamples=9999,
            rng=np.random.default_rng(seed),
        )
        low, high = res.confidence_interval
        if not (math.isfinite(low) and math.isfinite(high)):
            res = sps.bootstrap(
                (x,),
                np.mean,
                confidence_level=confidence,
                method="percentile",
                n_resamples=9999,
                rng=np.random.default_rng(seed),
            )
            low, high = res.confidence_interval
    return float(low), float(high)


def summarize(
    values: Sequence[float],
    confidence: float = 0.95,
    method: str = "t",
    correction: float = 0.0,
    bounds: tuple[float, float] | None = None,
) -> Summary:
    """Mean, spread and interval of ``values``. ``bounds``: the range the values lie in (an
    accuracy's [0, 1], ``metrics.bounds``); the interval is cut to it — the mean lies inside,
    so the cut interval covers it exactly as often, and never reads "accuracy 1.16"."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        raise bad_value("values", "at least one score", list(values))
    low, high = confidence_interval(x, confidence, method, correction=correction)
    if bounds is not None and math.isfinite(low):
        low, high = max(low, bounds[0]), min(high, bounds[1])
    std = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return Summary(
        tuple(float(v) for v in x), float(x.mean()), std, low, high, float(confidence), method
    )


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus baseline, seed by seed: the mean difference, its CI and p-values.

    ``improvement`` is the difference signed so that positive is better for this metric.
    """

    metric: str
    greater_is_better: bool
    differences: tuple[float, ...]
    mean: float
    low: float
    high: float
    confidence: float
    p_ttest: float
    p_wilcoxon: float
    # the test rows' share of the variance of ``mean`` and the row groups it came from (0: the
    # seeds' variance alone, as without rows or with cross-validation units)
    row_share: float = 0.0
    row_groups: int = 0

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def improvement(self) -> tuple[float, float, float]:
        """(mean, low, high) of the gain, oriented so that positive means better."""
        if self.greater_is_better:
            return self.mean, self.low, self.high
        return -self.mean, -self.high, -self.low

    def superior(self, min_effect: float = 0.0) -> bool:
        """The CI of the gain lies above ``min_effect``: the candidate is better, beyond noise."""
        return math.isfinite(self.low) and self.improvement[1] > min_effect

    def non_inferior(self, margin: float) -> bool:
        """The CI of the gain lies above ``-margin``: any loss is within the margin."""
        return math.isfinite(self.low) and self.improvement[1] > -margin

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "greater_is_better": self.greater_is_better,
            "differences": list(self.differences),
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "confidence": self.confidence,
            "p_ttest": self.p_ttest,
            "p_wilcoxon": self.p_wilcoxon,
            "row_share": self.row_share,
            "row_groups": self.row_groups,
        }


def paired_compare(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    metric: str = "",
    greater_is_better: bool = True,
    confidence: float = 0.95,
    method: str = "t",
    correction: float = 0.0,
    rows: tuple[Any, Any] | None = None,
) -> PairedComparison:
    """Compare two candidates scored on the same seeds (position i of each = seed i);
    ``correction``: ρ = n_test / n_train when the seeds are cross-validation units; ``rows``:
    (baseline's, candidate's) seeds × row-groups pseudo-values when every seed of both was
    scored on the same test rows, so that the interval counts the rows' sampling too."""
    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if len(a) != len(b):
        raise bad_value(
            "paired scores",
            "two sequences of the same length (one per seed)",
            f"{len(a)} and {len(b)} values",
        )
    d = b - a
    table = row_differences(rows, len(d))
    if table is not None:
        method = "t"  # the variance of seeds and rows together has a t-interval only
    low, high = confidence_interval(d, confidence, method, correction=correction, rows=table)
    spread = mean_variance(d, correction, table) if len(d) > 1 else MeanVariance(math.nan, 1)
    return PairedComparison(
        metric,
        greater_is_better,
        tuple(float(v) for v in d),
        float(d.mean()) if len(d) else math.nan,
        low,
        high,
        float(confidence),
        _p_ttest(d, correction, table),
        _p_wilcoxon(d),
        spread.row_share,
        spread.groups,
    )


def row_differences(rows: tuple[Any, Any] | None, n: int) -> np.ndarray | None:
    """Candidate minus baseline row-group pseudo-values (an n × G table), or None when either
    side has none or their shapes differ (then the seeds' variance is used alone)."""
    if rows is None or rows[0] is None or rows[1] is None:
        return None
    a, b = (np.asarray(r, dtype=np.float64) for r in rows)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] != n or a.shape[1] < 2:
        return None
    return b - a


def one_sided_p(
    d: Sequence[float], threshold: float = 0.0, correction: float = 0.0, rows: Any = None
) -> float:
    """p of H0: mean(d) ≤ ``threshold`` with the t of :func:`mean_variance`. No spread at all
    (seeds agree exactly and no rows say otherwise): the exact sign test, 0.5^n, never 0."""
    x = np.asarray(d, dtype=np.float64) - threshold
    if len(x) < 2:
        return 1.0
    spread = mean_variance(x, correction, rows)
    if no_spread(x) and not spread.rows:
        return sign_test_p(len(x)) if x[0] > 0 else 1.0
    return float(sps.t.sf(x.mean() / math.sqrt(spread.variance), spread.df))


def no_spread(x: Any) -> bool:
    """Whether values are all the same up to floating-point rounding: the differences of two
    accuracies on the same rows (``(k + 1)/67 - k/67``) differ in their last bits from seed to
    seed, and a t statistic over such a spread is a huge number from nothing."""
    x = np.asarray(x, dtype=np.float64)
    return bool(np.ptp(x) <= 1e-9 * np.abs(x).max()) if len(x) else True


def sign_test_p(n: int) -> float:
    """One-sided p of the exact sign test when all ``n`` paired differences lie on the claimed
    side: 0.5^n. What a gain whose seeds agree exactly (no spread, so no t statistic) has shown
    — never 0: the same one extra test row right on every seed is 3 seeds' agreement, not
    proof (the row sampling of the test set is not in a per-seed test at all)."""
    return 0.5**n


def _p_ttest(d: np.ndarray, correction: float = 0.0, rows: Any = None) -> float:
    """Two-sided p of the (corrected, row-counting) paired t-test; SciPy's own without either."""
    if len(d) < 2:
        return math.nan
    if not correction and rows is None and not no_spread(d):
        return float(sps.ttest_1samp(d, 0.0).pvalue)
    # twice the one-sided p on the side of the mean (no spread at all: the exact sign test)
    side = 1.0 if d.mean() >= 0 else -1.0
    return min(
        1.0, 2 * one_sided_p(side * d, 0.0, correction, None if rows is None else side * rows)
    )


def _p_wilcoxon(d: np.ndarray) -> float:
    if len(d) < 2 or not np.any(d):
        return math.nan if len(d) < 2 else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties warnings: p is still the right one
        return float(sps.wilcoxon(d).pvalue)
