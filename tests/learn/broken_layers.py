"""Conv layers with one known defect each, and valid layers that differ from nn.Conv2d on purpose.

Fixtures for the learn tests (not collected: no test_ prefix). Every layer is `unfold`'s
mathematics with one change, so whatever a test sees comes from that change alone:

    ZeroWeightGradConv2d          right forward, weight gradient all zeros: the conv weights never train
    SignFlippedWeightGradConv2d   right forward, weight gradient negated: the weights move uphill
    ZeroInputGradConv2d           right forward and weight gradient, input gradient zero: layers before
                                  it starve
    OutputIgnoresWeightsConv2d    convolves a frozen copy of its initial weights; the parameter still gets
                                  the gradient it would have, so it moves, but the output never sees it
    RandInitConv2d                correct, with `torch.rand` init (every weight and bias positive in [0, 1)):
                                  activations explode, the network does not train at Adam's usual rate
    FlippedKernelConv2d           a true convolution (kernel flipped), valid: it learns, just not the
                                  same weights as nn.Conv2d's cross-correlation

`BROKEN_LAYERS` names them as the report and sweeps label them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from convlab.conv.unfold import UnfoldConv2d


class ZeroWeightGradConv2d(UnfoldConv2d):
    """The weight gradient is all zeros: the conv weights never train (biases still do)."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # weight * 0 keeps the weight in the graph, so its gradient is a zero tensor rather than None.
        return super()._conv(x, weight.detach() + weight * 0, bias)


class SignFlippedWeightGradConv2d(UnfoldConv2d):
    """Forward exact; the weight gradient is the true one negated (2w - w has value w, gradient -1)."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return super()._conv(x, 2 * weight.detach() - weight, bias)


class ZeroInputGradConv2d(UnfoldConv2d):
    """Forward and weight gradient exact; the gradient to the input is zero, so layers before it get none."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return super()._conv(x.detach() + x * 0, weight, bias)


class OutputIgnoresWeightsConv2d(UnfoldConv2d):
    """Convolves `frozen_weight`, a buffer copied from the weight at construction and never updated.

    The parameter receives the gradient of the convolution it would have computed, so it trains and
    drifts like a real weight; re-drawing it (reset_parameters) leaves the output unchanged.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("frozen_weight", self.weight.detach().clone())

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        live = super()._conv(x, weight, None)
        # value: conv with the frozen copy; gradient: that of the live conv.
        return super()._conv(x, self.frozen_weight, bias) + (live - live.detach())


class RandInitConv2d(UnfoldConv2d):
    """Correct mathematics, the learner's init: weight and bias from `torch.rand`, all in [0, 1)."""

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(torch.rand_like(self.weight))
            if self.bias is not None:
                self.bias.copy_(torch.rand_like(self.bias))


class FlippedKernelConv2d(UnfoldConv2d):
    """A true convolution: the kernel flipped in both spatial axes before the cross-correlation."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return super()._conv(x, weight.flip(-2, -1), bias)


BROKEN_LAYERS: dict[str, type[nn.Module]] = {
    "zero_weight_grad": ZeroWeightGradConv2d,
    "sign_flipped_grad": SignFlippedWeightGradConv2d,
    "zero_input_grad": ZeroInputGradConv2d,
    "output_ignores_weights": OutputIgnoresWeightsConv2d,
    "rand_init": RandInitConv2d,
    "flipped_kernel": FlippedKernelConv2d,
}
