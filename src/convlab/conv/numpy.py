"""`numpy`: forward and backward in NumPy, the textbook assignment, inside a real network.

Teaches: the layer as CS231n's `conv_forward` / `conv_backward` write it, with
no autograd at all. `sliding_window_view` gives every receptive field as a view
(no copy), one `einsum` contracts patches with filters, and the backward is
derived by hand:

    windows  (N, G, C_in/G, H_out, W_out, kH, kW)   patch of each output pixel
    out      = einsum(windows, W)                   (N, G, C_out/G, H_out, W_out)
    dW       = einsum(dout, windows)                (G, C_out/G, C_in/G, kH, kW)
    db       = dout summed over n, h, w             (C_out,)
    dx       = for each kernel tap (i, j): add W[..., i, j]^T dout into the input
               pixels that tap touched (the sliding-window sum, one strided slice
               per tap)

A `torch.autograd.Function` wraps it so it trains inside the MNIST network.
Tensors go to the host as NumPy arrays and back to the input's device: on a GPU
this layer copies every activation and gradient through host memory
(and warns once that it does).

Cost: NumPy's einsum is single-threaded BLAS at best; a few times slower than
`unfold` on the CPU, plus the copies.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor
from torch.autograd.function import once_differentiable

from convlab.conv.base import Conv2dBase


def patches(x: np.ndarray, layer: Conv2dBase) -> np.ndarray:
    """x (N, C_in, H_pad, W_pad) -> windows (N, G, C_in/G, H_out, W_out, kH, kW), a view."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    windows = sliding_window_view(x, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c = x.shape[:2]
    return windows.reshape(n, layer.groups, c // layer.groups, *windows.shape[2:])


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@functools.cache
def warn_host_round_trip(device_type: str) -> None:
    """Once per device type: this layer cannot compute on an accelerator."""
    warnings.warn(
        f"NumpyConv2d computes in NumPy on the host: with {device_type} tensors every forward and backward "
        "copies activations, weights and gradients to host memory and the result back to the device.",
        UserWarning,
        stacklevel=2,
    )


class _NumpyConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: NumpyConv2d):
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/G, kH, kW) -> (N, C_out, H_out, W_out)."""
        g = layer.groups
        w = to_numpy(weight).reshape(g, layer.out_channels // g, *weight.shape[1:])  # (G, O/G, C/G, kH, kW)
        out = np.einsum("ngchwij,gocij->ngohw", patches(to_numpy(x), layer), w)
        out = out.reshape(x.shape[0], layer.out_channels, *out.shape[3:])
        if bias is not None:
            out = out + to_numpy(bias).reshape(1, -1, 1, 1)
        ctx.save_for_backward(x, weight)
        ctx.layer, ctx.has_bias = layer, bias is not None
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)

    @staticmethod
    @once_differentiable  # NumPy is invisible to autograd: a second derivative must raise, not be 0
    def backward(ctx, grad_out: Tensor):
        """grad_out (N, C_out, H_out, W_out) -> dx (N, C_in, H_pad, W_pad), dW, db, None."""
        x, weight = ctx.saved_tensors
        layer = ctx.layer
        g, (kh, kw), (sh, sw), (dh, dw) = (
            layer.groups,
            layer.kernel_size,
            layer.stride,
            layer.dilation,
        )
        n, _, h_out, w_out = grad_out.shape
        dout = to_numpy(grad_out).reshape(
            n, g, layer.out_channels // g, h_out, w_out
        )  # (N, G, O/G, H_out, W_out)
        w = to_numpy(weight).reshape(g, layer.out_channels // g, *weight.shape[1:])
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            dx = np.zeros((n, g, w.shape[2], *x.shape[2:]), dtype=dout.dtype)
            for i in range(kh):
                for j in range(kw):
                    rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
                    cols = slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw)
                    dx[..., rows, cols] += np.einsum("ngohw,goc->ngchw", dout, w[..., i, j])
            grad_x = torch.from_numpy(dx.reshape(x.shape)).to(x.device)
        if ctx.needs_input_grad[1]:
            dw_np = np.einsum("ngohw,ngchwij->gocij", dout, patches(to_numpy(x), layer))
            grad_w = torch.from_numpy(np.ascontiguousarray(dw_np).reshape(weight.shape))
            grad_w = grad_w.to(weight.device)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = torch.from_numpy(dout.sum(axis=(0, 3, 4)).reshape(-1)).to(weight.device)
        return grad_x, grad_w, grad_b, None


class NumpyConv2d(Conv2dBase):
    """Forward and hand-derived backward in NumPy, wrapped for autograd."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        if x.device.type != "cpu":
            warn_host_round_trip(x.device.type)
        return _NumpyConvFunction.apply(x, weight, bias, self)
