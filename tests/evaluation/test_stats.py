import math

import numpy as np
import pytest
from scipy import stats as sps

from tidian import ConfigError, confidence_interval, paired_compare, summarize
from tidian.evaluation.stats import mean_variance
from tidian.metrics import bounds


def test_t_interval_on_known_data():
    # mean 3, sample sd sqrt(2.5), t(0.975, 4) = 2.7764451…
    low, high = confidence_interval([1, 2, 3, 4, 5], 0.95)
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert low == pytest.approx(3 - half, rel=1e-12)
    assert high == pytest.approx(3 + half, rel=1e-12)
    low90, high90 = confidence_interval([1, 2, 3, 4, 5], 0.90)
    assert high90 - low90 < high - low


def test_t_interval_covers_the_mean_at_the_stated_rate():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        low, high = confidence_interval(rng.normal(1.0, 2.0, size=5), 0.95)
        hits += low <= 1.0 <= high
    assert 0.93 < hits / 2000 < 0.97


def test_degenerate_samples():
    assert all(math.isnan(v) for v in confidence_interval([0.7]))
    assert confidence_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    s = summarize([0.5])
    assert s.mean == 0.5 and math.isnan(s.std) and s.n == 1


def test_bootstrap_interval_contains_the_mean_and_is_seeded():
    values = [0.81, 0.84, 0.79, 0.88, 0.83, 0.80, 0.86, 0.82]
    low, high = confidence_interval(values, method="bootstrap")
    assert low < np.mean(values) < high
    assert (low, high) == confidence_interval(values, method="bootstrap")
    with pytest.raises(ConfigError, match="ci method"):
        confidence_interval(values, method="jackknife")
    with pytest.raises(ConfigError, match="confidence"):
        confidence_interval(values, confidence=95)


def test_paired_comparison_matches_scipy_and_orients_gains():
    base = [0.80, 0.82, 0.79, 0.85, 0.81]
    cand = [0.83, 0.84, 0.80, 0.88, 0.85]
    cmp = paired_compare(base, cand, metric="accuracy", greater_is_better=True)
    d = np.subtract(cand, base)
    assert cmp.mean == pytest.approx(d.mean())
    assert cmp.p_ttest == pytest.approx(sps.ttest_rel(cand, base).pvalue)
    assert cmp.p_wilcoxon == pytest.approx(sps.wilcoxon(d).pvalue)
    assert cmp.low > 0 and cmp.superior() and cmp.non_inferior(0.01)
    # the same numbers as a loss (lower is better): the candidate is worse
    loss = paired_compare(base, cand, metric="log_loss", greater_is_better=False)
    gain, _low, high = loss.improvement
    assert gain == pytest.approx(-d.mean()) and high < 0
    assert not loss.superior() and not loss.non_inferior(0.01) and loss.non_inferior(0.1)


def test_paired_comparison_edge_cases():
    same = paired_compare([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert same.mean == 0 and same.p_ttest == 1.0 and same.p_wilcoxon == 1.0
    assert not same.superior()
    with pytest.raises(ConfigError, match="same length"):
        paired_compare([1, 2], [1, 2, 3])


def test_an_accuracy_interval_stays_within_0_and_1():
    scores = [0.6, 1.0, 1.0]  # a t-interval of these reaches past 1
    assert summarize(scores).high > 1 and summarize([0.0, 0.0, 0.4]).low < 0
    kept = summarize(scores, bounds=bounds("accuracy"))
    assert (
        kept.high == 1.0
        and kept.low == summarize(scores).low
        and kept.mean == pytest.approx(2.6 / 3)
    )
    assert summarize([0.0, 0.0, 0.4], bounds=bounds("accuracy")).low == 0.0
    assert bounds("rmse") is None  # unbounded metrics keep their interval


def _crossed(rng, seeds, groups, sa, sb, se, mu=0.0):
    """Scores of a crossed design: μ + seed effect + row-group effect + interaction."""
    return (
        mu
        + rng.normal(0, sa, (seeds, 1))
        + rng.normal(0, sb, (1, groups))
        + rng.normal(0, se, (seeds, groups))
    )


def test_the_crossed_variance_estimates_seeds_and_rows_and_its_interval_covers():
    rng = np.random.default_rng(0)
    seeds, groups, sa, sb, se = 5, 50, 0.01, 0.05, 0.03
    truth = sa**2 / seeds + sb**2 / groups + se**2 / (seeds * groups)
    estimates, seed_only, hits, hits_seed_only = [], [], 0, 0
    for _ in range(2000):
        table = _crossed(rng, seeds, groups, sa, sb, se)
        per_seed = table.mean(axis=1)
        v = mean_variance(per_seed, rows=table)
        estimates.append(v.variance)
        seed_only.append(mean_variance(per_seed).variance)
        low, high = confidence_interval(per_seed, 0.95, rows=table)
        hits += low <= 0 <= high
        s_low, s_high = confidence_interval(per_seed, 0.95)
        hits_seed_only += s_low <= 0 <= s_high
    assert np.mean(estimates) == pytest.approx(truth, rel=0.05)
    # the seeds alone miss the rows' part: most of the variance here
    assert np.mean(seed_only) == pytest.approx(sa**2 / seeds + se**2 / (seeds * groups), rel=0.05)
    assert 0.93 <= hits / 2000 <= 0.97
    assert hits_seed_only / 2000 < 0.88  # 81% here: it claims 95%


def test_rows_never_shrink_the_seeds_variance_and_add_nothing_when_they_agree():
    rng = np.random.default_rng(1)
    per_seed = np.array([0.01, 0.03, -0.02])
    plain = mean_variance(per_seed)
    assert (
        plain.df == 2
        and plain.rows == 0
        and plain.variance == pytest.approx(per_seed.var(ddof=1) / 3)
    )
    # rows whose differences are noise around the seed means: no row part, the seeds' df
    noise = per_seed[:, None] + rng.normal(0, 0.01, (3, 40))
    v = mean_variance(per_seed, rows=noise)
    assert v.variance >= plain.variance
    # the same one extra row right on every seed: all the variance is the rows'
    one_row = np.zeros((3, 40))
    one_row[:, 7] = 1.0
    v = mean_variance(np.full(3, 1 / 40), rows=one_row)
    assert v.rows == v.variance == pytest.approx(np.var(one_row[0], ddof=1) / 40)
    assert v.row_share == 1.0 and v.df == pytest.approx(39)
    with pytest.raises(ConfigError, match="seeds × at least 2 row groups"):
        mean_variance(per_seed, rows=np.zeros((2, 40)))


def test_a_paired_comparison_counts_the_rows_when_both_sides_have_them():
    rng = np.random.default_rng(2)
    base = _crossed(rng, 4, 30, 0.01, 0.0, 0.02, mu=0.8)
    cand = base + _crossed(rng, 4, 30, 0.005, 0.06, 0.01, mu=0.02)
    plain = paired_compare(base.mean(1), cand.mean(1))
    crossed = paired_compare(base.mean(1), cand.mean(1), rows=(base, cand))
    assert crossed.mean == plain.mean and crossed.row_groups == 30
    assert crossed.high - crossed.low > plain.high - plain.low
    assert crossed.p_ttest > plain.p_ttest and crossed.row_share > 0.5
    # one side without rows: the seeds alone
    assert paired_compare(base.mean(1), cand.mean(1), rows=(None, cand)) == plain
