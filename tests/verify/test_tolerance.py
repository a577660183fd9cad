"""The tolerance rule and the comparison that explains dtype-only mismatches."""

from __future__ import annotations

import torch

from convlab.verify.tolerance import SAFETY, compare, tolerance


def _reference(*shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_rule_is_safety_times_reduction_times_eps() -> None:
    assert tolerance(torch.float32, 50) == SAFETY * 50 * torch.finfo(torch.float32).eps
    assert tolerance(torch.float64, 0) == SAFETY * torch.finfo(torch.float64).eps


def test_float64_rounding_passes_and_a_real_error_fails() -> None:
    expected = _reference(4, 5)
    assert compare(expected * (1 + 1e-15), expected, reduction=9).passed
    wrong = expected.clone()
    wrong[0, 0] += 1e-3
    result = compare(wrong, expected, reduction=9)
    assert not result.passed
    assert "a real error" in result.note


def test_relative_error_is_measured_against_the_largest_reference_value() -> None:
    expected = torch.tensor([1e-20, 1.0], dtype=torch.float64)
    actual = expected + torch.tensor([1e-17, 0.0], dtype=torch.float64)  # huge elementwise, tiny vs the scale
    result = compare(actual, expected, reduction=1)
    assert result.passed
    assert result.max_rel == result.max_abs


def test_float32_result_at_float64_tolerance_is_explained_as_the_allclose_trap() -> None:
    expected = _reference(3, 4)
    result = compare(expected.float(), expected, reduction=9, judged_at=torch.float64)
    assert not result.passed
    assert "passes at the float32 tolerance" in result.note
    assert "np.allclose trap" in result.note
    assert f"{tolerance(torch.float32, 9):.1e}" in result.note
    assert compare(expected.float(), expected, reduction=9).passed  # judged at its own dtype


def test_float64_result_with_float32_accuracy_is_explained() -> None:
    expected = _reference(3, 4)
    result = compare(expected.float().double(), expected, reduction=9)
    assert not result.passed
    assert "only float32-accurate" in result.note


def test_shape_mismatch_non_finite_and_empty() -> None:
    expected = _reference(2, 3)
    assert "shape" in compare(expected.T, expected, reduction=1).note
    broken = expected.clone()
    broken[0, 0] = float("nan")
    assert not compare(broken, expected, reduction=1).passed
    empty = torch.empty(0, 3, dtype=torch.float64)
    assert compare(empty, empty, reduction=1).passed
