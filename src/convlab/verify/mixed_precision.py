"""A layer in one precision against nn.Conv2d in another: the notebook's comparison, judged fairly.

The comparison that started the NumPy user's doubt: their float64 layer against a float32 `nn.Conv2d`
on a batch of 11, 7 -> 17 channels, 30x30, kernel 7, stride 3, padding 2, with `np.allclose` at its
defaults (rtol 1e-5, atol 1e-8), which said "Failure! The outputs do not match" for a correct layer:
each output is a sum of 7*7*7 = 343 products that float32 rounds, and atol 1e-8 is far below that
rounding. Here the same comparison is judged at the tolerance of the lower precision involved
(`convlab.verify.tolerance`), and np.allclose's answer is reported beside it, so the difference shows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from convlab.verify.cases import ConvCase, conv_case
from convlab.verify.tolerance import Comparison, compare, dtype_name

NOTEBOOK_CASE = conv_case((11, 7, 30, 30), 17, 7, stride=3, padding=2)


@dataclass(frozen=True)
class MixedComparison:
    """The layer's output in `layer_dtype` against nn.Conv2d's in `reference_dtype`, on the same values."""

    label: str
    case: ConvCase
    layer_dtype: torch.dtype
    reference_dtype: torch.dtype
    judged_at: torch.dtype  # the lower precision of the two
    comparison: Comparison  # judged at judged_at's tolerance
    allclose: bool  # np.allclose(layer, nn.Conv2d) at its default rtol and atol

    @property
    def correct(self) -> bool:
        return self.comparison.passed

    def line(self) -> str:
        c = self.comparison
        verdict = "CORRECT" if self.correct else f"WRONG ({c.note})"
        return (
            f"{self.label} in {dtype_name(self.layer_dtype)} vs nn.Conv2d in "
            f"{dtype_name(self.reference_dtype)}, [{self.case.name}]: "
            f"max abs difference {c.max_abs:.1e}, relative {c.max_rel:.1e}; "
            f"np.allclose at its defaults (rtol 1e-05, atol 1e-08): {self.allclose}; "
            f"judged at the {dtype_name(self.judged_at)} tolerance (rtol = 4 * K * eps = {c.rtol:.1e}, "
            f"K = {self.case.forward_reduction()}): {verdict}"
        )


def against_nn_conv2d(
    label: str,
    layer_cls: type[nn.Module],
    case: ConvCase = NOTEBOOK_CASE,
    layer_dtype: torch.dtype = torch.float64,
    reference_dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> MixedComparison:
    """Build nn.Conv2d in `reference_dtype` (its own init), copy its weights into the layer in
    `layer_dtype`, run both on the same input (drawn in the lower precision, so both see equal values)
    and compare the outputs at the lower precision's tolerance."""
    lower = (
        reference_dtype if torch.finfo(reference_dtype).eps > torch.finfo(layer_dtype).eps else layer_dtype
    )
    torch.manual_seed(seed)
    reference = nn.Conv2d(**case.conv_kwargs(), dtype=reference_dtype)
    layer = layer_cls(**case.conv_kwargs(), dtype=layer_dtype)
    with torch.no_grad():
        layer.weight.copy_(reference.weight)
        layer.bias.copy_(reference.bias)
        x = torch.randn(case.input_shape, generator=torch.Generator().manual_seed(seed), dtype=lower)
        got = layer(x.to(layer_dtype))
        want = reference(x.to(reference_dtype))
    allclose = bool(np.allclose(got.double().numpy(), want.double().numpy()))
    comparison = compare(want, got.double(), case.forward_reduction(), judged_at=lower)
    return MixedComparison(label, case, layer_dtype, reference_dtype, lower, comparison, allclose)
