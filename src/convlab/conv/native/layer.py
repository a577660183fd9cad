"""`native`: the convolution as small matrix products in C, compiled at first use; the fastest layer here.

Teaches: what a compiled kernel buys that PyTorch operations cannot. The arithmetic is
`manual`'s (out = W @ im2col(x) + b, dW = dout @ im2col(x)^T, dx = col2im(W^T @ dout));
`fast` shows that in PyTorch the copies around the products, not the products, cost the
time. Here one image's columns are built, multiplied and dropped while they sit in
the CPU's cache, by a kernel of about 390 lines of C (`native_kernels.c`, which
explains each choice), shared out over PyTorch's own threads. Zero padding too is
added there, image by image, rather than by a padded copy of the batch. At the
reference network's shapes that makes it faster than `nn.Conv2d` forward + backward
(README, "Speed").

Where it runs: float32 and float64 on the CPU. Other devices and dtypes (CUDA, half
precision) take `fast`'s path, which this class inherits. The first call compiles the
kernel (about a second; `convlab.conv.native.build` says how, and what to do without a
C compiler); later processes load it from a cache.
Not for concurrent use of one layer by several threads' autograd (the scratch memory is per thread).
"""

from __future__ import annotations

import ctypes
import threading

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from convlab.conv.base import Conv2dBase
from convlab.conv.fast import FastConv2d, reuse
from convlab.conv.native.build import C_TYPES, Shape, library


class _Workspace(threading.local):
    """Scratch memory for the kernels, reused from call to call, one per thread."""

    def __init__(self) -> None:
        self.store: dict[str, Tensor] = {}


_WORKSPACE = _Workspace()


def pointer(t: Tensor | None) -> int | None:
    """The address of a contiguous tensor's first element, None for None (NULL in C)."""
    return None if t is None else t.data_ptr()


def kernel_shape(layer: Conv2dBase, x: Tensor, c_out: int) -> Shape:
    """Sizes of the convolution of x (N, C_in, H, W) by `layer`'s kernel, zero padding included."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    n, c_in, h_in, w_in = x.shape
    (h, w), (h_out, w_out) = layer.padded_size(x), layer.valid_output_shape(x)
    left, _, top, _ = layer.zero_padding_left_to_conv(x)
    return Shape(
        n=n, c_in=c_in, h=h, w=w, c_out=c_out, kh=kh, kw=kw, sh=sh, sw=sw, dh=dh, dw=dw, groups=layer.groups,
        h_out=h_out, w_out=w_out, h_in=h_in, w_in=w_in, top=top, left=left,
    )  # fmt: skip


def workspace(lib: ctypes.CDLL, shape: Shape, threads: int, like: Tensor) -> Tensor:
    """A flat scratch tensor as large as the kernels ask for."""
    return reuse(_WORKSPACE.store, "workspace", (lib.native_workspace(shape, threads),), like)


class _NativeConvFunction(torch.autograd.Function):
    """Valid convolution of a padded input by the C kernels, forward and backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: NativeConv2d) -> Tensor:
        """x (N, C_in, H, W) without its zero padding, weight (C_out, C_in/G, kH, kW), bias (C_out,)
        or None -> (N, C_out, H_out, W_out)."""
        x, weight = x.contiguous(), weight.contiguous()
        bias = None if bias is None else bias.contiguous()
        lib, shape = library(x.dtype), kernel_shape(layer, x, weight.shape[0])
        threads = lib.native_threads(torch.get_num_threads())
        out = x.new_empty(shape.n, shape.c_out, shape.h_out, shape.w_out)
        scratch = workspace(lib, shape, threads, x)
        lib.native_forward(
            shape, pointer(x), pointer(weight), pointer(bias), pointer(out), pointer(scratch), threads
        )
        ctx.save_for_backward(x, weight)
        ctx.shape, ctx.has_bias = shape, bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        """grad_out (N, C_out, H_out, W_out) -> dx (N, C_in, H, W), dW, db, None."""
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_out, lib, shape = grad_out.contiguous(), library(x.dtype), ctx.shape
        threads = lib.native_threads(torch.get_num_threads())
        # With padding the kernels write every number of dx (from the padded copy's inside), else add to it.
        padded = (shape.h, shape.w) != (shape.h_in, shape.w_in)
        grad_x = (torch.empty_like if padded else torch.zeros_like)(x) if need_x else None
        grad_w = torch.empty_like(weight) if need_w else None
        if need_x or need_w:
            scratch = workspace(lib, shape, threads, x)
            lib.native_backward(
                shape, pointer(x), pointer(weight), pointer(grad_out), pointer(grad_x), pointer(grad_w),
                pointer(scratch), threads,
            )  # fmt: skip
        grad_b = grad_out.sum(dim=(0, 2, 3)) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b, None


class NativeConv2d(FastConv2d):
    """C kernels for float32 and float64 on the CPU; `fast`'s PyTorch path for other devices and dtypes.

    The kernels add zero padding one image at a time (`pads_zeros_in_conv`); `fast`'s path gets its
    input padded by Conv2dBase, as every other layer here does.
    """

    def pads_zeros_in_conv(self, x: Tensor) -> bool:
        """Yes where the C kernels run: float32 and float64 on the CPU."""
        return x.device.type == "cpu" and x.dtype in C_TYPES

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H, W), without its zero padding where the kernels run, weight (C_out, C_in/groups,
        kH, kW) -> (N, C_out, H_out, W_out)."""
        if self.pads_zeros_in_conv(x):
            return _NativeConvFunction.apply(x, weight, bias, self)
        return super()._conv(x, weight, bias)
