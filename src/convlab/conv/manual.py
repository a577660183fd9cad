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

Cost: the same GEMMs as autograd would run, minus autograd's bookkeeping for
unfold/view/matmul: one saved column matrix, three GEMMs and one fold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from convlab.conv.base import Conv2dBase
from convlab.conv.unfold import im2col


class _ManualConvFunction(torch.autograd.Function):
    """Valid convolution of a padded input, with an explicit backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: ManualConv2d):
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/G, kH, kW) -> (N, C_out, H_out, W_out)."""
        h_out, w_out = layer.valid_output_shape(x)
        cols = im2col(x, layer.kernel_size, layer.stride, layer.dilation, layer.groups)
        filters = weight.view(layer.groups, layer.out_channels // layer.groups, cols.shape[2])
        out = (filters @ cols).view(x.shape[0], layer.out_channels, h_out, w_out)
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1)
        ctx.save_for_backward(cols, weight)
        ctx.layer, ctx.input_size, ctx.has_bias = layer, x.shape[2:], bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        """grad_out (N, C_out, H_out, W_out) -> dx (N, C_in, H_pad, W_pad), dW, db, None."""
        cols, weight = ctx.saved_tensors
        layer = ctx.layer
        n, groups, out_per_group = (
            grad_out.shape[0],
            layer.groups,
            layer.out_channels // layer.groups,
        )
        n_cols, n_pixels = cols.shape[2], cols.shape[3]
        dout = grad_out.reshape(n, groups, out_per_group, n_pixels)  # (N, G, O/G, L)
        filters = weight.view(groups, out_per_group, n_cols)  # (G, O/G, K)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dcols = filters.transpose(1, 2) @ dout  # (N, G, K, L)
            grad_x = F.fold(
                dcols.reshape(n, groups * n_cols, n_pixels),
                ctx.input_size,
                layer.kernel_size,
                dilation=layer.dilation,
                stride=layer.stride,
            )
        if ctx.needs_input_grad[1]:
            # One (O/G, L) @ (L, K) product per image and group, summed over the batch.
            grad_w = (dout @ cols.transpose(2, 3)).sum(0).view_as(weight)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(dim=(0, 2, 3))
        return grad_x, grad_w, grad_b, None


class ManualConv2d(Conv2dBase):
    """im2col + matmul forward, hand-derived col2im / matmul backward."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        return _ManualConvFunction.apply(x, weight, bias, self)
