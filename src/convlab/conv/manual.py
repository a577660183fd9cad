"""`manual`: the `unfold` forward with a backward pass derived and written by hand.

Teaches: the three gradients of a convolution, with cols = im2col(x) of shape
(N, G, K, L), K = C_in/G * kH * kW, L = H_out * W_out, W as (G, C_out/G, K):

    out     = W @ cols + b                         (N, G, C_out/G, L)
    dW      = sum_n  dout @ cols^T                 (G, C_out/G, K)
    db      = sum over n and pixels of dout        (C_out,)
    dcols   = W^T @ dout                           (N, G, K, L)
    dx      = col2im(dcols) = F.fold(dcols)        every patch's gradient added back
                                                   where the patch came from

col2im (`F.fold`) is the adjoint of im2col: overlapping patches sum their
gradients into the input pixel they share. That sum is exactly the "sliding
window" that autograd handles for the `vanilla` layer.

The three products go to `convlab.conv.functional.conv2d`, which makes each the
derivative of the others: the hand-written backward is itself differentiable
(double backward, gradient penalties), and forward-mode AD and torch.func
transforms run it too. Every step is a PyTorch operation, so `torch.compile`
and `torch.export` trace it.

Cost: the GEMMs autograd would run for `unfold`, without its bookkeeping: three
GEMMs, one fold, and im2col twice (forward, and again for dW): x is saved for the
backward, not its kH * kW times larger column matrix.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from convlab.conv.base import Conv2dBase
from convlab.conv.functional import ConvKernels, Geometry, conv2d
from convlab.conv.unfold import im2col


class ManualKernels(ConvKernels):
    """im2col + matmul forward; matmul + col2im (`F.fold`) for dx; matmul for dW."""

    name = "manual"

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, g: Geometry) -> Tensor:
        """x (N, C, H, W), weight (O, C/G, kH, kW), bias (O,) or None -> (N, O, H_out, W_out)."""
        cols = im2col(x, g.kernel_size, g.stride, g.dilation, g.groups)  # (N, G, K, L)
        filters = weight.reshape(g.groups, weight.shape[0] // g.groups, cols.shape[2])  # (G, O/G, K)
        out = (filters @ cols).reshape(x.shape[0], weight.shape[0], *g.output_size(x.shape[2:]))
        return out if bias is None else out + bias.view(1, -1, 1, 1)

    def input_grad(self, dy: Tensor, weight: Tensor, size: tuple[int, int], g: Geometry) -> Tensor:
        """dy (N, O, H_out, W_out), weight (O, C/G, kH, kW) -> dx (N, C, H, W)."""
        n, o, h_out, w_out = dy.shape
        dout = dy.reshape(n, g.groups, o // g.groups, h_out * w_out)  # (N, G, O/G, L)
        filters = weight.reshape(g.groups, o // g.groups, weight[0].numel())  # (G, O/G, K)
        dcols = filters.transpose(1, 2) @ dout  # (N, G, K, L)
        return F.fold(
            dcols.reshape(n, g.groups * filters.shape[2], h_out * w_out),
            size,
            g.kernel_size,
            dilation=g.dilation,
            stride=g.stride,
        )

    def weight_grad(self, x: Tensor, dy: Tensor, g: Geometry) -> Tensor:
        """x (N, C, H, W), dy (N, O, H_out, W_out) -> dW (O, C/G, kH, kW)."""
        n, o, h_out, w_out = dy.shape
        cols = im2col(x, g.kernel_size, g.stride, g.dilation, g.groups)  # (N, G, K, L)
        dout = dy.reshape(n, g.groups, o // g.groups, h_out * w_out)  # (N, G, O/G, L)
        # One (O/G, L) @ (L, K) product per image and group, summed over the batch.
        dw = (dout @ cols.transpose(2, 3)).sum(0)  # (G, O/G, K)
        return dw.reshape(o, x.shape[1] // g.groups, *g.kernel_size)


class ManualConv2d(Conv2dBase):
    """im2col + matmul forward, hand-derived col2im / matmul backward."""

    kernels = ManualKernels()

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        return conv2d(x, weight, bias, self.kernels, self.geometry())
