"""How close is close enough: a dtype-aware comparison of a result with a float64 reference.

The rule. A convolution output (and each of its gradients) is a sum of K products.
Rounding in a length-K sum of products can reach about K * eps / 2 of the sum of
the magnitudes of its terms (the textbook worst-case bound), where eps is
`torch.finfo(dtype).eps`: 2.2e-16 for float64, 1.2e-7 for float32. So a result
computed in `dtype` passes when

    rel = max|actual - expected| / max|expected|  <=  rtol = SAFETY * K * eps(dtype)

`rel` is measured against the largest reference value, not element by element,
because outputs near zero (cancellation) legitimately carry an error on the
scale of the whole tensor. SAFETY = 4 (8x the bound) absorbs the ratio of the
summed term magnitudes to the largest output and the reference's own rounding.
A bug (wrong index, missing term, wrong padding) gives rel of order 1, many
orders of magnitude above any rtol here.

The np.allclose trap: judging a float32 result at a float64 tolerance (or with
np.allclose's 1e-8) fails a correct layer. `compare` recognises it: when a
result fails at its tolerance but passes at the tolerance of the lower precision
involved (the result's own dtype, or float32 inside a float64 computation), the
note says so and names the tolerance that fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

SAFETY = 4
# The dtypes the tools run layers in, by the names their command lines take.
DTYPES = {"float64": torch.float64, "float32": torch.float32}
# A result judged at float64 is also tried at float32's tolerance: the lower precision
# a float64 pipeline most often slips into (float32 weights, NumPy or torch defaults).
LOWER_PRECISION = {torch.float64: torch.float32}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def tolerance(dtype: torch.dtype, reduction: int) -> float:
    """rtol for a result computed in `dtype` whose elements are sums of `reduction` products."""
    return SAFETY * max(reduction, 1) * torch.finfo(dtype).eps


@dataclass(frozen=True)
class Comparison:
    """One tensor against its reference: errors, the tolerance it was judged at, and why it failed.

    note: '' when it passed; otherwise the same words for every tensor of one check
    failing for the same reason, so that a report can group them.
    """

    max_abs: float
    max_rel: float
    rtol: float
    passed: bool
    note: str = ""


def _errors(actual: Tensor, expected: Tensor) -> tuple[float, float]:
    """(max abs error, max abs error / max |expected|), both computed in float64; 0 for empty tensors."""
    if expected.numel() == 0:
        return 0.0, 0.0
    diff = (actual.detach().double() - expected.detach().double()).abs().max().item()
    scale = expected.detach().double().abs().max().item()
    return diff, diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))


def _failure_note(actual_dtype: torch.dtype, judged_at: torch.dtype, max_rel: float, reduction: int) -> str:
    """Why a result failed: a precision lower than `judged_at` that it fits, or a real error."""
    judged, rtol = dtype_name(judged_at), tolerance(judged_at, reduction)
    lower = actual_dtype if actual_dtype.itemsize < judged_at.itemsize else LOWER_PRECISION.get(judged_at)
    if lower is None:
        return f"larger than rounding in {judged} explains (rtol {rtol:.1e}): a real error"
    low, fits = dtype_name(lower), tolerance(lower, reduction)
    if max_rel > fits:
        return f"larger than rounding explains, even at the {low} tolerance (rtol {fits:.1e}): a real error"
    if actual_dtype == lower:
        cause = f"the result is {low}, judged at the {judged} tolerance (the np.allclose trap)"
    else:
        actual = dtype_name(actual_dtype)
        cause = f"the result is {actual} but only {low}-accurate: part of it is computed in {low}"
    eps = torch.finfo(lower).eps
    return (
        f"fails at the {judged} tolerance (rtol {rtol:.1e}) but passes at the {low} tolerance, "
        f"so dtype alone explains it: {cause}. The tolerance that fits: "
        f"rtol = {SAFETY} * K * eps({low}) = {SAFETY} * {max(reduction, 1)} * {eps:.1e} = {fits:.1e}"
    )


def compare(
    actual: Tensor, expected: Tensor, reduction: int, judged_at: torch.dtype | None = None
) -> Comparison:
    """Judge `actual` against a (float64) `expected` of the same shape.

    reduction: K, the number of products summed into each element (sets the tolerance).
    judged_at: the dtype whose tolerance applies; default `actual.dtype`.
    """
    judged_at = judged_at or actual.dtype
    rtol = tolerance(judged_at, reduction)
    if actual.shape != expected.shape:
        note = f"shape {list(actual.shape)} != expected {list(expected.shape)}"
        return Comparison(float("inf"), float("inf"), rtol, False, note)
    max_abs, max_rel = _errors(actual, expected)
    if not torch.isfinite(actual).all():
        return Comparison(max_abs, max_rel, rtol, False, "non-finite values in the result")
    if max_rel <= rtol:
        return Comparison(max_abs, max_rel, rtol, True)
    return Comparison(
        max_abs, max_rel, rtol, False, _failure_note(actual.dtype, judged_at, max_rel, reduction)
    )
