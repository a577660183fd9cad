"""`fast`: im2col + matrix multiply with a backward by hand, engineered to keep up with `nn.Conv2d` on a CPU.

Teaches: the mathematics is `manual`'s (cols = im2col(x), out = W @ cols + b,
dW = dout @ cols^T, db = sum(dout), dx = col2im(W^T @ dout)); what decides the
speed is everything around it. Each point was measured with `python -m convlab.bench`
(README, "Speed"):

1. Two ways to multiply, chosen by K = C_in/G * kH * kW, the length of each dot
   product. Long ones (conv2: 250) are arithmetic-bound: the columns of a chunk
   of images form one matrix (K, images * pixels) and each product is a single
   2-D GEMM on oneDNN, the library `nn.Conv2d` itself calls on a CPU
   (`torch.matmul` calls MKL, whose float32 GEMM takes a path half as fast on
   AMD CPUs: the comparison would be between two BLAS libraries, not two
   convolutions). Short ones (conv1: 25) are memory-bound: there the columns
   stay image by image (images, K, pixels) and one batched product writes the
   output straight in NCHW order, saving the two layout copies the single
   matrix needs (output and output gradient).
2. im2col is one strided copy, in runs of W_out numbers. Where output rows
   are short (conv2: 8) it is two: shift the columns (all kW shifts at once),
   then the rows (all kH shifts), each in long runs. col2im, the way back, is
   always those two steps in reverse: kH + kW additions, not kH * kW.
3. The batch goes in chunks whose columns fit in the cache: the products read
   them while they are hot, and memory holds one chunk's columns, not the
   kH * kW copies of the whole batch that `unfold` keeps for its backward.
4. Memory is reused from call to call: each layer keeps a buffer for its
   columns, and temporaries live in scratch buffers. A fresh multi-megabyte
   tensor can cost page faults (the C allocator hands freed memory back to the
   OS), at the reference shapes more than the copies that fill it; the bench
   and train.py switch that off for every layer (`convlab.training.allocator`).
5. A batch that fits in one chunk leaves its columns in the buffer for the
   backward; a larger one has them recomputed chunk by chunk from x (only x
   and W are saved, as in `nn.Conv2d`). dx is computed only when x needs a
   gradient: in the reference network's first layer it never does.

Cost: the arithmetic of `nn.Conv2d`'s im2col path plus two copies of the input
per pass: 1.2-1.3 times `nn.Conv2d` at the reference shapes and the strided
bench layer, 1.5 times on the wide one, 2.5 times on the depthwise one (README,
"Speed"): oneDNN's direct kernels never build the column matrix.
Not for concurrent use of one layer by several threads' autograd.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import MutableMapping

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from convlab.conv.base import Conv2dBase, output_size

# Columns per chunk, tuned on a CPU with 2 MiB of L2 cache per core: each reference layer's batch of 64
# is one chunk; a 64-channel 3x3 layer on 32x32 images goes one image (2.4 MB of columns) at a time.
CHUNK_BYTES = 4 << 20
# Dot products of at most this length use batched per-image products instead of one 2-D GEMM.
SHORT_K = 32
# Output rows shorter than this are gathered in two steps (im2col); longer ones in one copy.
SHORT_ROW = 16
# oneDNN's inner product, X @ W^T: X (M, K) contiguous, W (N, K) any strided view. None without oneDNN.
_ONEDNN_LINEAR = torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None


class _Scratch(threading.local):
    """Memory reused from call to call, one set per thread: `shared` by slot name, `columns` per layer."""

    def __init__(self) -> None:
        self.shared: dict[str, Tensor] = {}
        self.columns: weakref.WeakKeyDictionary[nn.Module, Tensor] = weakref.WeakKeyDictionary()


_SCRATCH = _Scratch()


def reuse(store: MutableMapping, key, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of `shape` in the memory `store[key]` holds, grown when too small."""
    numel, buffer = math.prod(shape), store.get(key)
    # Memory made under inference mode (Lightning's validation and test) cannot serve autograd later.
    stale = buffer is None or (buffer.is_inference() and not torch.is_inference_mode_enabled())
    if stale or buffer.numel() < numel or (buffer.dtype, buffer.device) != (like.dtype, like.device):
        buffer = store[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buffer[:numel].view(shape)


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """(..., M, K) @ (..., K, N) -> (..., M, N); oneDNN's inner product for float32 (1, M, K) @ (1, K, N)
    on the CPU, torch.matmul for everything else."""
    if (
        _ONEDNN_LINEAR is not None
        and a.is_cpu
        and a.dtype == torch.float32
        and a.dim() == b.dim() == 3
        and a.shape[0] == b.shape[0] == 1
    ):
        return _ONEDNN_LINEAR(a[0].contiguous(), b[0].t(), None, "none", [], "").unsqueeze(0)
    return torch.matmul(a, b)


class _Geometry:
    """Kernel, stride, dilation and groups of a layer, and the output size they give an input."""

    def __init__(self, layer: Conv2dBase, x: Tensor) -> None:
        (self.kh, self.kw), (self.sh, self.sw), (self.dh, self.dw) = (
            layer.kernel_size,
            layer.stride,
            layer.dilation,
        )
        self.channels, self.groups = x.shape[1], layer.groups
        self.h_out = output_size(x.shape[2], self.kh, self.sh, self.dh)
        self.w_out = output_size(x.shape[3], self.kw, self.sw, self.dw)
        self.pixels = self.h_out * self.w_out
        self.k = self.channels // self.groups * self.kh * self.kw  # length of each dot product
        self.per_image = self.k <= SHORT_K

    def rows(self, i: int) -> slice:
        """Input rows that kernel row i sees, one per output row."""
        return slice(i * self.dh, i * self.dh + self.sh * (self.h_out - 1) + 1, self.sh)

    def columns(self, j: int) -> slice:
        """Input columns that kernel column j sees, one per output column."""
        return slice(j * self.dw, j * self.dw + self.sw * (self.w_out - 1) + 1, self.sw)

    def chunks(self, batch: int) -> list[slice]:
        """Slices of the batch whose columns take about CHUNK_BYTES (at 4 bytes a number), 1 image or more."""
        image_bytes = self.groups * self.k * self.pixels * 4
        step = max(1, CHUNK_BYTES // max(1, image_bytes))
        return [slice(start, min(batch, start + step)) for start in range(0, batch, step)]

    def layouts(self, columns: Tensor, images: int) -> tuple[Tensor, Tensor]:
        """Two views of a chunk's columns, flat in `columns`: the matrix the products take, and the
        (C, kH, kW, images, H_out, W_out) view im2col writes and col2im reads.

        per image: (images, G, K, pixels); else one matrix: (G, K, images * pixels).
        """
        c, kh, kw, ho, wo = self.channels, self.kh, self.kw, self.h_out, self.w_out
        if self.per_image:
            taps = columns.view(images, c, kh, kw, ho, wo).permute(1, 2, 3, 0, 4, 5)
            return columns.view(images, self.groups, self.k, self.pixels), taps
        return columns.view(self.groups, self.k, images * self.pixels), columns.view(
            c, kh, kw, images, ho, wo
        )


def windows(t: Tensor, dim: int, kernel: int, stride: int, dilation: int) -> Tensor:
    """A view of t: `dim` indexes output positions, a new last dim the `kernel` inputs each one reads."""
    view = t.unfold(dim, dilation * (kernel - 1) + 1, stride)
    return view if dilation == 1 else view[..., ::dilation]


def im2col(x: Tensor, g: _Geometry, taps: Tensor) -> None:
    """Writes the columns of x (m, C, H, W) into taps, a (C, kH, kW, m, H_out, W_out) view."""
    m, c, h, _ = x.shape
    if g.w_out >= SHORT_ROW:
        # taps[c, i, j, n, y', x'] = x[n, c, y' * sH + i * dH, x' * sW + j * dW]: one copy, in runs of W_out.
        taps.copy_(windows(windows(x, 2, g.kh, g.sh, g.dh), 3, g.kw, g.sw, g.dw).permute(1, 4, 5, 0, 2, 3))
        return
    # Short rows: step 1, the kW column shifts: shifted[c, j, n, y, x'] = x[n, c, y, x' * sW + j * dW],
    shifted = reuse(_SCRATCH.shared, "im2col", (c, g.kw, m, h, g.w_out), x)
    shifted.copy_(windows(x, 3, g.kw, g.sw, g.dw).permute(1, 4, 0, 2, 3))
    # step 2, the kH row shifts: taps[c, i, j, n, y', x'] = shifted[c, j, n, y' * sH + i * dH, x'].
    taps.copy_(windows(shifted, 3, g.kh, g.sh, g.dh).permute(0, 5, 1, 2, 3, 4))


def col2im(taps: Tensor, g: _Geometry, dx: Tensor) -> None:
    """Adds column gradients, a (C, kH, kW, m, H_out, W_out) view, back into dx (m, C, H, W).

    The adjoint of `im2col`, its two steps in reverse: every column entry goes back to the
    input pixel it was copied from, and where windows overlap their gradients add up.
    """
    m, c, h, _ = dx.shape
    shifted = reuse(_SCRATCH.shared, "col2im", (c, g.kw, m, h, g.w_out), dx).zero_()
    for i in range(g.kh):
        shifted[:, :, :, g.rows(i)] += taps[:, i]
    dx_by_channel = dx.transpose(0, 1)  # (C, m, H, W) view
    for j in range(g.kw):
        dx_by_channel[:, :, :, g.columns(j)] += shifted[:, j]


class _FastConvFunction(torch.autograd.Function):
    """Valid convolution of a padded input, chunk by chunk, with an explicit backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: FastConv2d) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/G, kH, kW) -> (N, C_out, H_out, W_out)."""
        g = _Geometry(layer, x)
        n, c_out = x.shape[0], weight.shape[0]
        filters = weight.view(g.groups, c_out // g.groups, g.k)  # (G, C_out/G, K)
        out = x.new_empty(n, g.groups, c_out // g.groups, g.pixels)
        parts = g.chunks(n)
        for part in parts:
            images = part.stop - part.start
            columns = reuse(_SCRATCH.columns, layer, (g.groups * g.k * images * g.pixels,), x)
            cols, taps = g.layouts(columns, images)
            im2col(x[part], g, taps)
            if g.per_image:
                torch.matmul(filters, cols, out=out[part])
                if bias is not None:
                    out[part] += bias.view(1, g.groups, -1, 1)
            else:
                # (G, C_out/G, images * pixels) -> (images, G, C_out/G, pixels), NCHW order, + bias.
                y = matmul(filters, cols).unflatten(2, (images, g.pixels)).permute(2, 0, 1, 3)
                if bias is None:
                    out[part] = y
                else:
                    torch.add(y, bias.view(1, g.groups, -1, 1), out=out[part])
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.layer, ctx.has_bias = g, layer, bias is not None
        # One chunk leaves all the columns in the layer's buffer: the backward uses them unless
        # another forward of this layer has overwritten them since, which the version tells.
        # Under inference mode there is no backward, and inference tensors keep no version.
        keep = len(parts) == 1 and not torch.is_inference_mode_enabled()
        ctx.cols = cols if keep else None
        ctx.cols_version = cols._version if keep else None
        return out.view(n, c_out, g.h_out, g.w_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        """grad_out (N, C_out, H_out, W_out) -> dx (N, C_in, H_pad, W_pad), dW, db, None."""
        x, weight = ctx.saved_tensors
        g, (need_x, need_w, need_b) = ctx.geometry, ctx.needs_input_grad[:3]
        c_out = weight.shape[0]
        filters = weight.view(g.groups, c_out // g.groups, g.k)  # (G, C_out/G, K)
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.zeros_like(filters) if need_w else None  # (G, C_out/G, K)
        for part in g.chunks(x.shape[0]):
            images = part.stop - part.start
            if g.per_image:
                dout = grad_out[part].reshape(images, g.groups, c_out // g.groups, g.pixels)
            else:  # as a matrix (G, C_out/G, images * pixels), its columns ordered as im2col's
                shape = (g.groups, c_out // g.groups, images, g.h_out, g.w_out)
                dout = reuse(_SCRATCH.shared, "dout", shape, x)
                dout.copy_(grad_out[part].unflatten(1, shape[:2]).permute(1, 2, 0, 3, 4))
                dout = dout.flatten(2)
            if need_w:
                cols = ctx.cols
                if cols is None or cols._version != ctx.cols_version:
                    columns = reuse(_SCRATCH.columns, ctx.layer, (g.groups * g.k * images * g.pixels,), x)
                    cols, taps = g.layouts(columns, images)
                    im2col(x[part], g, taps)
                partial = matmul(dout, cols.transpose(-1, -2))
                grad_w += partial.sum(0) if g.per_image else partial
            if need_x:
                dcols = matmul(filters.transpose(1, 2), dout)
                col2im(g.layouts(dcols, images)[1], g, grad_x[part])
        grad_b = grad_out.sum(dim=(0, 2, 3)) if ctx.has_bias and need_b else None
        return grad_x, None if grad_w is None else grad_w.view_as(weight), grad_b, None


class FastConv2d(Conv2dBase):
    """im2col + GEMM, the product chosen by shape (oneDNN or batched), backward by hand."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        return _FastConvFunction.apply(x, weight, bias, self)
