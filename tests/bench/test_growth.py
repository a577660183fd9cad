"""Growth with the batch: exponent fit, the budget, the in-place-write count and the projection."""

from __future__ import annotations

import math

import pytest
import torch

from convlab.bench.growth import (
    BatchPoint,
    Growth,
    explanation,
    fit_exponent,
    inplace_writes,
    measure_growth,
)


def growth_of(times: dict[int, list[float]], **fields) -> Growth:
    points = [BatchPoint(b, t) for b, t in sorted(times.items())]
    k, low, high = fit_exponent(points)
    return Growth(points=points, exponent=k, exponent_low=low, exponent_high=high, **fields)


def test_exponent_of_exact_power_laws():
    for k in (1.0, 2.0, 0.5):
        points = [BatchPoint(b, [3.0 * b**k] * 3) for b in (1, 2, 4, 8)]
        fitted, low, high = fit_exponent(points)
        assert fitted == pytest.approx(k) and low == pytest.approx(k) and high == pytest.approx(k)
    assert fit_exponent([BatchPoint(1, [1.0])]) is None


def test_verdicts_need_the_whole_range_on_one_side():
    assert growth_of({1: [1.0, 1.0], 2: [2.0, 2.0], 4: [4.0, 4.0]}).verdict == "linear"
    assert growth_of({1: [1.0, 1.0], 2: [4.0, 4.0], 4: [16.0, 16.0]}).verdict == "superlinear"
    assert growth_of({1: [1.0, 1.0], 2: [1.2, 1.2], 4: [1.4, 1.4]}).verdict == "sublinear"
    # Quadratic medians but rounds spread over a factor 16: the range straddles linear.
    noisy = growth_of({1: [0.25, 1.0, 4.0], 2: [1.0, 4.0, 16.0]})
    assert noisy.exponent == pytest.approx(2.0) and noisy.exponent_low < 1 < noisy.exponent_high
    assert noisy.verdict == "unclear"


def test_measure_growth_doubles_the_batch_until_the_budget_is_spent():
    """A staged layer whose call takes 0.1 * batch^2 seconds (returned, not slept)."""
    told = []
    points = measure_growth(
        lambda batch: lambda: 0.1 * batch**2,
        max_batch=64,
        budget_s=12.0,
        repeats=3,
        on_point=lambda batch, calls, expected_s: told.append((batch, calls, expected_s)),
    )
    assert [p.batch for p in points] == [1, 2, 4]  # batch 8 would take 6.4 s a call: two do not fit
    assert all(len(p.times_s) >= 2 for p in points)
    assert [b for b, _, _ in told] == [1, 2, 4]
    assert told[2][2] == pytest.approx(1.6)  # batch 4 expected from batch 2's 0.4 s, grown quadratically
    fitted, _, _ = fit_exponent(points)
    assert fitted == pytest.approx(2.0)
    # A cheap layer stops at the training batch.
    assert (
        measure_growth(lambda batch: lambda: 1e-4 * batch, max_batch=8, budget_s=10, repeats=3)[-1].batch == 8
    )


def test_projection_grows_from_the_largest_batch_never_slower_than_linear():
    quadratic = growth_of({1: [1.0] * 3, 2: [4.0] * 3, 4: [16.0] * 3})
    assert quadratic.project(16)[1] == pytest.approx(256.0)
    sublinear = growth_of({1: [1.0] * 3, 2: [1.5] * 3, 4: [2.0] * 3})
    assert sublinear.project(16)[1] == pytest.approx(8.0)  # linear from batch 4
    assert sublinear.project(4) == pytest.approx((2.0, 2.0, 2.0))  # measured


def test_in_place_writes_are_costed_as_copies_at_the_target_batch():
    """The rest of the time grows linearly; the copies are nodes x one copy's time at that batch."""
    growth = growth_of({1: [1.0] * 2, 2: [2.0] * 2}, inplace_writes=100, output_elements=10)
    growth.copy_s = {2: 1e-3, 8: 4e-3}
    copies_at_2, copies_at_8 = 100 * 2 * 1e-3, 100 * 8 * 4e-3
    assert growth.project(8)[1] == pytest.approx((2.0 - copies_at_2) * 4 + copies_at_8)
    assert growth.inplace_bytes(8) == 100 * 8 * 10 * 8 * 4


def test_inplace_writes_counts_copy_slices_nodes():
    w = torch.randn(3, requires_grad=True)
    out = torch.zeros(5)
    for i in range(4):
        out[i] = w.sum() * i
    assert inplace_writes(out) == 4
    assert inplace_writes(torch.stack([w.sum() * i for i in range(4)])) == 0


def test_explanation_names_the_cause_and_the_fix_only_when_called_for():
    writes = growth_of({1: [1.0] * 2, 2: [4.0] * 2}, inplace_writes=5760, output_elements=5760)
    text = explanation("mine", {"conv1": writes}, batch=64)
    assert "5,760 `CopySlices` nodes" in text and "torch.stack" in text and "k = 2.00" in text
    gigabytes = 5760 * 64 * 5760 * 64 * 4 / 1e9
    assert f"{gigabytes:,.0f} GB" in text
    linear = growth_of({1: [1.0] * 2, 2: [2.0] * 2}, inplace_writes=0, output_elements=10)
    assert explanation("fine", {"conv1": linear}, batch=64) is None
    other = growth_of({1: [1.0] * 2, 2: [4.0] * 2}, inplace_writes=0, output_elements=10)
    assert "No in-place writes" in explanation("other", {"conv1": other}, batch=64)
    assert not math.isnan(writes.exponent)
