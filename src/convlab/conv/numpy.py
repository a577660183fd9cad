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

and how NumPy code becomes a PyTorch citizen. Each product is a custom operator
(`torch.library.custom_op`): `convlab::numpy_conv2d`, `convlab::numpy_conv2d_input_grad`
(dx) and `convlab::numpy_conv2d_weight_grad` (dW). What the registration buys:

- `register_fake` states each output's shape and dtype without running NumPy, so
  `torch.compile(fullgraph=True)` and `torch.export` trace the layer, each NumPy call
  one opaque node in the graph (a plain call would break the graph: the compiler
  cannot look inside NumPy);
- `register_autograd` gives each operator its gradient, written with the other two
  operators (the gradient of a convolution is made of convolutions), so the
  operators alone are differentiable to any order; `torch.library.opcheck` checks
  the registrations.

The layer passes the three operators to `convlab.conv.functional.conv2d`, which adds
forward-mode AD and the vmap rule torch.func needs (custom operators have neither).

NumPy has no bfloat16, and its float16 einsum accumulates in float16: both half
types are computed in float32 and the result rounded to the input's dtype, as
`nn.Conv2d` accumulates them in float32 on a CPU. Complex numbers work (the
conjugates of PyTorch's convention are taken by `conv2d`). Tensors go to the host
as NumPy arrays and back to the input's device: on a GPU this layer copies every
activation and gradient through host memory (and warns once that it does).

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

from convlab.conv.base import Conv2dBase
from convlab.conv.functional import ConvKernels, Geometry, conv2d

# dtypes NumPy computes in float32 (it lacks bfloat16, and float16 sums would stay in float16)
COMPUTED_IN_FLOAT32 = (torch.bfloat16, torch.float16)


def to_numpy(t: Tensor) -> np.ndarray:
    """t on the host as a NumPy array (conjugate and negative views resolved; half types as float32)."""
    t = t.detach().cpu().resolve_conj().resolve_neg()
    return (t.float() if t.dtype in COMPUTED_IN_FLOAT32 else t).numpy()


def from_numpy(a: np.ndarray, like: Tensor) -> Tensor:
    """a as a tensor of like's dtype on like's device, in memory of its own."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)


def patches(
    x: np.ndarray, kernel_size: list[int], stride: list[int], dilation: list[int], groups: int
) -> np.ndarray:
    """x (N, C_in, H_pad, W_pad) -> windows (N, G, C_in/G, H_out, W_out, kH, kW), a view."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    windows = sliding_window_view(x, span, axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    n, c = x.shape[:2]
    return windows.reshape(n, groups, c // groups, *windows.shape[2:])


def output_size(size: list[int], kernel_size: list[int], stride: list[int], dilation: list[int]) -> list[int]:
    """[H_out, W_out] of a valid convolution of an [H, W] input."""
    return [
        (n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(size, kernel_size, stride, dilation, strict=True)
    ]


# ---- the three operators: NumPy inside, PyTorch tensors outside ----


@torch.library.custom_op("convlab::numpy_conv2d", mutates_args=())
def numpy_conv2d(
    x: Tensor, weight: Tensor, bias: Tensor | None, stride: list[int], dilation: list[int], groups: int
) -> Tensor:
    """x (N, C_in, H, W), weight (C_out, C_in/G, kH, kW), bias (C_out,) or None
    -> (N, C_out, H_out, W_out)."""
    c_out, g = weight.shape[0], groups
    w = to_numpy(weight).reshape(g, c_out // g, *weight.shape[1:])  # (G, O/G, C/G, kH, kW)
    windows = patches(to_numpy(x), list(weight.shape[2:]), stride, dilation, g)
    out = np.einsum("ngchwij,gocij->ngohw", windows, w)
    out = out.reshape(x.shape[0], c_out, *out.shape[3:])
    if bias is not None:
        out = out + to_numpy(bias).reshape(1, -1, 1, 1)
    return from_numpy(out, x)


@numpy_conv2d.register_fake
def _(x, weight, bias, stride, dilation, groups):
    h_out, w_out = output_size(list(x.shape[2:]), list(weight.shape[2:]), stride, dilation)
    return x.new_empty(x.shape[0], weight.shape[0], h_out, w_out)


@torch.library.custom_op("convlab::numpy_conv2d_input_grad", mutates_args=())
def numpy_conv2d_input_grad(
    dy: Tensor, weight: Tensor, input_size: list[int], stride: list[int], dilation: list[int], groups: int
) -> Tensor:
    """dy (N, C_out, H_out, W_out), weight (C_out, C_in/G, kH, kW)
    -> dx (N, C_in, H, W), (H, W) = input_size."""
    g, (kh, kw), (sh, sw), (dh, dw) = groups, weight.shape[2:], stride, dilation
    n, c_out, h_out, w_out = dy.shape
    dout = to_numpy(dy).reshape(n, g, c_out // g, h_out, w_out)  # (N, G, O/G, H_out, W_out)
    w = to_numpy(weight).reshape(g, c_out // g, *weight.shape[1:])  # (G, O/G, C/G, kH, kW)
    dx = np.zeros((n, g, w.shape[2], *input_size), dtype=np.result_type(dout, w))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (h_out - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (w_out - 1) + 1, sw)
            dx[..., rows, cols] += np.einsum("ngohw,goc->ngchw", dout, w[..., i, j])
    return from_numpy(dx.reshape(n, g * w.shape[2], *input_size), dy)


@numpy_conv2d_input_grad.register_fake
def _(dy, weight, input_size, stride, dilation, groups):
    return dy.new_empty(dy.shape[0], weight.shape[1] * groups, *input_size)


@torch.library.custom_op("convlab::numpy_conv2d_weight_grad", mutates_args=())
def numpy_conv2d_weight_grad(
    x: Tensor, dy: Tensor, kernel_size: list[int], stride: list[int], dilation: list[int], groups: int
) -> Tensor:
    """x (N, C_in, H, W), dy (N, C_out, H_out, W_out) -> dW (C_out, C_in/G, kH, kW), summed over n."""
    g, (n, c_out, h_out, w_out) = groups, dy.shape
    dout = to_numpy(dy).reshape(n, g, c_out // g, h_out, w_out)
    dw = np.einsum("ngohw,ngchwij->gocij", dout, patches(to_numpy(x), kernel_size, stride, dilation, g))
    return from_numpy(dw.reshape(c_out, x.shape[1] // g, *kernel_size), x)


@numpy_conv2d_weight_grad.register_fake
def _(x, dy, kernel_size, stride, dilation, groups):
    return x.new_empty(dy.shape[1], x.shape[1] // groups, *kernel_size)


# ---- their gradients, made of the same three operators (see convlab.conv.functional's table) ----

_ops = torch.ops.convlab


def _save_inputs(ctx, inputs, output) -> None:
    ctx.inputs = inputs
    ctx.save_for_backward(*inputs[:2])


def _conv2d_backward(ctx, dy: Tensor):
    x, weight = ctx.saved_tensors
    _, _, bias, stride, dilation, groups = ctx.inputs
    dx = _ops.numpy_conv2d_input_grad(dy, weight.conj(), list(x.shape[2:]), stride, dilation, groups)
    dw = _ops.numpy_conv2d_weight_grad(x.conj(), dy, list(weight.shape[2:]), stride, dilation, groups)
    db = None if bias is None else dy.sum(dim=(0, 2, 3))
    return dx, dw, db, None, None, None


def _input_grad_backward(ctx, v: Tensor):
    dy, weight = ctx.saved_tensors
    _, _, _, stride, dilation, groups = ctx.inputs
    d_dy = _ops.numpy_conv2d(v, weight.conj(), None, stride, dilation, groups)
    d_weight = _ops.numpy_conv2d_weight_grad(v, dy.conj(), list(weight.shape[2:]), stride, dilation, groups)
    return d_dy, d_weight, None, None, None, None


def _weight_grad_backward(ctx, v: Tensor):
    x, dy = ctx.saved_tensors
    _, _, _, stride, dilation, groups = ctx.inputs
    d_x = _ops.numpy_conv2d_input_grad(dy.conj(), v, list(x.shape[2:]), stride, dilation, groups)
    d_dy = _ops.numpy_conv2d(x.conj(), v, None, stride, dilation, groups)
    return d_x, d_dy, None, None, None, None


numpy_conv2d.register_autograd(_conv2d_backward, setup_context=_save_inputs)
numpy_conv2d_input_grad.register_autograd(_input_grad_backward, setup_context=_save_inputs)
numpy_conv2d_weight_grad.register_autograd(_weight_grad_backward, setup_context=_save_inputs)


@functools.cache
def warn_host_round_trip(device_type: str) -> None:
    """Once per device type: this layer cannot compute on an accelerator."""
    warnings.warn(
        f"NumpyConv2d computes in NumPy on the host: with {device_type} tensors every forward and backward "
        "copies activations, weights and gradients to host memory and the result back to the device.",
        UserWarning,
        stacklevel=2,
    )


class NumpyKernels(ConvKernels):
    """The three NumPy operators, as `convlab.conv.functional.conv2d` takes them."""

    name = "numpy"

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, g: Geometry) -> Tensor:
        return _ops.numpy_conv2d(x, weight, bias, list(g.stride), list(g.dilation), g.groups)

    def input_grad(self, dy: Tensor, weight: Tensor, size: tuple[int, int], g: Geometry) -> Tensor:
        return _ops.numpy_conv2d_input_grad(
            dy, weight, list(size), list(g.stride), list(g.dilation), g.groups
        )

    def weight_grad(self, x: Tensor, dy: Tensor, g: Geometry) -> Tensor:
        return _ops.numpy_conv2d_weight_grad(
            x, dy, list(g.kernel_size), list(g.stride), list(g.dilation), g.groups
        )


class NumpyConv2d(Conv2dBase):
    """Forward and hand-derived backward in NumPy, registered as PyTorch operators."""

    kernels = NumpyKernels()

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        if x.device.type != "cpu":
            warn_host_round_trip(x.device.type)
        return conv2d(x, weight, bias, self.kernels, self.geometry())
