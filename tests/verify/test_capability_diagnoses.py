"""Diagnoses, the autograd rows and the cost line, each on a layer built to show one defect."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from broken_conv import ZeroWeightGradConv2d
from torch import Tensor

from convlab.conv import resolve_conv
from convlab.conv.unfold import UnfoldConv2d
from convlab.verify.autograd_checks import compiled, double_backward, forward_ad, vmapped
from convlab.verify.capability import FAILS, PASSES
from convlab.verify.cases import conv_case
from convlab.verify.checks import check_case
from convlab.verify.cost import Cost, fit_exponent
from convlab.verify.diagnose import batch_independence, describe_init, gradients, output_dtype


class DetachedWeight(UnfoldConv2d):
    """Computes with a detached copy of its weight: the weight never receives a gradient."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return super()._conv(x, weight.detach(), bias)


class BatchMean(UnfoldConv2d):
    """Subtracts the batch mean of its output: each image's output depends on the others."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = super()._conv(x, weight, bias)
        return out - out.mean(dim=0, keepdim=True)


class ModifiesSavedInput(UnfoldConv2d):
    """Adds to a tensor after the convolution saved it for backward: autograd rejects it."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        y = x * 1
        out = F.conv2d(y, weight, bias, self.stride, 0, self.dilation, self.groups)
        y.add_(1)
        return out


class _FirstOrderGrad(torch.autograd.Function):
    """F.conv2d with a backward on detached saved tensors: under create_graph its gradients carry a graph
    through grad_out only, so a second derivative comes back without the terms through x and W."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        x, weight = (t.detach() for t in ctx.saved_tensors)
        dx = torch.nn.grad.conv2d_input(x.shape, weight, grad)
        dw = torch.nn.grad.conv2d_weight(x, weight.shape, grad)
        return dx, dw


class SilentSecondOrder(UnfoldConv2d):
    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        out = _FirstOrderGrad.apply(x, weight)
        return out if bias is None else out + bias.view(1, -1, 1, 1)


def test_zero_and_absent_gradients() -> None:
    zero = {d.aspect: d for d in gradients(ZeroWeightGradConv2d, torch.float64)}
    assert zero["weight gradient"].finding == "all zeros" and zero["weight gradient"].problem
    absent = {d.aspect: d for d in gradients(DetachedWeight, torch.float64)}
    assert absent["weight gradient"].finding == "None: it receives no gradient"
    assert ".detach()" in absent["weight gradient"].hint
    assert [d.problem for d in gradients(UnfoldConv2d, torch.float64)] == [False]


def test_batch_dependence() -> None:
    found = batch_independence(BatchMean, torch.float64)
    assert found.problem and "depend on other images" in found.hint
    assert not batch_independence(UnfoldConv2d, torch.float64).problem


def test_output_dtype_of_a_correct_layer() -> None:
    assert not output_dtype(UnfoldConv2d).problem


def test_rejected_in_place_write_is_a_failure_with_its_hint() -> None:
    result = check_case(
        "inplace", resolve_conv(ModifiesSavedInput), conv_case((2, 2, 5, 5), 3, 3), torch.float64
    )
    assert result.failed
    assert (
        "modified by an inplace operation" in result.problem and "clone() before modifying" in result.problem
    )


@pytest.mark.parametrize(
    "draw, expected",
    [
        (lambda: torch.rand(8, 3, 3, 3), "looks like torch.rand"),
        (lambda: torch.randn(8, 3, 3, 3), "looks like torch.randn"),
        (lambda: torch.nn.Conv2d(3, 8, 3).weight, "like nn.Conv2d's"),
    ],
)
def test_init_is_described(draw, expected: str) -> None:
    torch.manual_seed(0)
    found = describe_init(draw(), fan_in=27)
    assert expected in found.finding
    assert found.problem == (expected != "like nn.Conv2d's")


def test_double_backward_silently_lost_is_a_failure() -> None:
    row = double_backward(SilentSecondOrder, torch.float64)
    assert row.status == FAILS, row.detail
    assert double_backward(UnfoldConv2d, torch.float64).status == PASSES


def test_vmap_of_nn_conv2d_passes() -> None:
    assert vmapped(torch.nn.Conv2d, torch.float64).status == PASSES


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("check", [compiled, double_backward, forward_ad, vmapped])
def test_nn_conv2d_passes_every_autograd_check_in_both_dtypes(check, dtype: torch.dtype) -> None:
    """The control: a check that fails nn.Conv2d itself (a float64 reference that shared its input
    tensor with the layer under test once made torch.compile's dx None) would blame every layer."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. reading .grad of a tensor that is no leaf
        row = check(torch.nn.Conv2d, dtype)
    assert row.status == PASSES, row.detail


def test_growth_exponent_and_the_superlinear_explanation() -> None:
    assert math.isclose(fit_exponent({1: 1.0, 2: 4.0, 4: 16.0}), 2.0)
    assert math.isclose(fit_exponent({2: 0.1, 4: 0.2, 8: 0.4}), 1.0)
    quadratic = Cost({1: 0.001, 2: 0.004, 4: 0.016}, 2.0)
    assert quadratic.superlinear and "in-place write per output element" in quadratic.line()
    assert "1 ms/image at batch 1" in quadratic.line()
    linear = Cost({1: 0.001, 2: 0.002}, 1.0)
    assert not linear.superlinear and "(linear" in linear.line()
