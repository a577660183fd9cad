"""Welch difference and t intervals against hand-computed values and scipy's own t-test."""

import math

import pytest
from scipy import stats as scipy_stats

from convlab.learn.stats import mean_interval, summarize, welch_difference


def test_summarize_uses_sample_std():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3)
    assert math.isnan(summarize([5.0]).std)
    with pytest.raises(ValueError):
        summarize([])


def test_mean_interval_matches_t_quantile_by_hand():
    # mean 2, s = 1, n = 3: half width t_{0.975, 2} / sqrt(3) = 4.302653 / 1.732051
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2 - 2.484138, abs=1e-6)
    assert high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert mean_interval([1.0]) is None


def test_welch_difference_matches_scipy_and_satterthwaite_df():
    a, b = [0.97, 0.96, 0.98, 0.975], [0.88, 0.90, 0.86]
    diff = welch_difference(a, b)
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert diff.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert diff.estimate == pytest.approx(0.97125 - 0.88)
    va, vb = summarize(a).std ** 2 / 4, summarize(b).std ** 2 / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (diff.low, diff.high) == pytest.approx((diff.estimate - half, diff.estimate + half))


def test_welch_difference_equal_spread_by_hand():
    # sd 1 in both groups of 3: se = sqrt(2/3), df = 4, t_{0.975, 4} = 2.776445
    diff = welch_difference([10.0, 11.0, 12.0], [1.0, 2.0, 3.0])
    assert diff.estimate == 9.0
    assert diff.low == pytest.approx(9 - 2.776445 * math.sqrt(2 / 3), abs=1e-5)
    assert diff.high == pytest.approx(9 + 2.776445 * math.sqrt(2 / 3), abs=1e-5)


def test_welch_difference_without_spread_or_seeds():
    assert welch_difference([1.0], [0.0, 0.1]).low is None
    exact = welch_difference([0.5, 0.5], [0.5, 0.5])
    assert (exact.low, exact.high, exact.p_value) == (0.0, 0.0, 1.0)
