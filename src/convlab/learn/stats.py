"""The few statistics the does-it-learn report needs, over a handful of seeds.

With 3 to 10 seeds per cell, normal approximations and bootstraps are both too
optimistic; Student-t intervals are the honest small-sample choice:

- `mean_interval`: two-sided t confidence interval of one mean
  (mean +- t_{1-a/2, n-1} * s / sqrt(n)).
- `welch_difference`: difference of two means with unequal variances (Welch's
  t-test), its p-value and the Welch-Satterthwaite t confidence interval.

Both need n >= 2 per group (a standard deviation); with fewer they return no
interval, and the caller must say so instead of inventing one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation (ddof=1; nan when n < 2) of n values."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) with its Welch confidence interval; low/high/p are None when n < 2 in a group."""

    estimate: float
    low: float | None
    high: float | None
    p_value: float | None
    n_a: int
    n_b: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sample std and count; an empty sequence is an error, not a silent nan."""
    if not values:
        raise ValueError("cannot summarize zero values")
    n = len(values)
    mean = math.fsum(values) / n
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return Summary(mean, std, n)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Two-sided Student-t interval for the mean; None when n < 2."""
    s = summarize(values)
    if s.n < 2:
        return None
    half = scipy_stats.t.ppf(0.5 + confidence / 2, s.n - 1) * s.std / math.sqrt(s.n)
    return s.mean - half, s.mean + half


def welch_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """mean(a) - mean(b), Welch's two-sided p-value and Welch-Satterthwaite t interval."""
    sa, sb = summarize(a), summarize(b)
    estimate = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return Difference(estimate, None, None, None, sa.n, sb.n)
    var_a, var_b = sa.std**2 / sa.n, sb.std**2 / sb.n
    se = math.sqrt(var_a + var_b)
    if se == 0.0:
        # Identical values within each group: no spread to test against, the difference is exact.
        return Difference(estimate, estimate, estimate, 0.0 if estimate else 1.0, sa.n, sb.n)
    df = (var_a + var_b) ** 2 / (var_a**2 / (sa.n - 1) + var_b**2 / (sb.n - 1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, df) * se
    p_value = 2 * scipy_stats.t.sf(abs(estimate) / se, df)
    return Difference(estimate, estimate - half, estimate + half, float(p_value), sa.n, sb.n)
