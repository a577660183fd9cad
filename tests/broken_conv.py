"""Deliberately broken conv layers: right forward, wrong weight gradient. Tests register them by hand."""

from torch import Tensor

from convlab.conv.unfold import UnfoldConv2d


class ZeroWeightGradConv2d(UnfoldConv2d):
    """The weight gradient is all zeros: the conv weights never train (biases still do)."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # weight * 0 keeps the weight in the graph, so its gradient is a zero tensor rather than None.
        return super()._conv(x, weight.detach() + weight * 0, bias)


class HalfWeightGradConv2d(UnfoldConv2d):
    """The weight gradient is half the true one: still learns, but not the way nn.Conv2d does."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # 0.5 * w + 0.5 * w is exactly w in floating point; only the weight's share of the gradient halves.
        return super()._conv(x, weight.detach() * 0.5 + weight * 0.5, bias)
