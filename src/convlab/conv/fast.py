"""`fast`: im2col + matrix multiply with a backward by hand, engineered to keep up with `nn.Conv2d` on a CPU.

Teaches: the mathematics is `manual`'s (cols = im2col(x), out = W @ cols + b,
dW = dout @ cols^T, db = sum(dout), dx = col2im(W^T @ dout)); what decides the
speed is everything around it. Each point below was measured with
`python -m convlab.bench` (README, "Speed"):

1. The matrix multiplies run on oneDNN, the library `nn.Conv2d` itself calls on
   a CPU. `torch.matmul` calls MKL, whose float32 GEMM takes a path about half
   as fast on AMD CPUs; the comparison would otherwise be between two BLAS
   libraries, not two convolutions. (float32 on the CPU, one group; anything
   else goes to `torch.matmul`.)
2. The columns are one matrix (C_in/G * kH * kW, images * H_out * W_out), so
   each of the three products is a single 2-D GEMM over the whole chunk: no
   batch of small GEMMs, no weight expanded per image.
3. im2col and col2im are separable: shift the columns (kW copies), then the
   rows (kH copies). Two copies with long contiguous runs instead of one with
   runs of W_out numbers; the way back is kH + kW additions, not kH * kW.
4. The batch goes in chunks whose columns fit in the L2 cache: the GEMM reads
   them while they are hot, and memory stays one chunk's worth, not the kH * kW
   copies of the whole batch that `unfold` keeps for its backward.
5. Temporaries live in scratch memory reused from call to call. A fresh
   multi-megabyte tensor costs page faults (the C allocator hands freed memory
   back to the OS), which at the reference shapes cost more than the copies.
6. The backward recomputes the columns from x (only x and W are saved, as in
   `nn.Conv2d`), and computes dx only when x needs a gradient: in the
   reference network's first layer it never does.

Cost: the same arithmetic as `nn.Conv2d`'s im2col path, plus two cheap copies
of the input per pass; within a few tens of percent of `nn.Conv2d` either way,
shape by shape (see the bench).
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


class _Scratch(threading.local):
    """Memory reused from call to call, one set per thread: `shared` by slot name, `columns` per layer."""

    def __init__(self) -> None:
        self.shared: dict[str, Tensor] = {}
        self.columns: weakref.WeakKeyDictionary[nn.Module, Tensor] = weakref.WeakKeyDictionary()


_SCRATCH = _Scratch()


def reuse(store: MutableMapping, key, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of `shape` in the memory `store[key]` holds, grown when too small."""
    numel, buffer = math.prod(shape), store.get(key)
    if buffer is None or buffer.numel() < numel or (buffer.dtype, buffer.device) != (like.dtype, like.device):
        buffer = store[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buffer[:numel].view(shape)


# oneDNN's inner product, X @ W^T: X (M, K) contiguous, W (N, K) any strided view. None without oneDNN.
_ONEDNN_LINEAR = torch.ops.mkldnn._linear_pointwise.default if torch.backends.mkldnn.is_available() else None


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """(G, M, K) @ (G, K, N) -> (G, M, N); oneDNN's inner product where it applies, else torch.matmul."""
    if a.is_cpu and a.dtype == torch.float32 and a.shape[0] == 1 and _ONEDNN_LINEAR is not None:
        return _ONEDNN_LINEAR(a[0].contiguous(), b[0].t(), None, "none", [], "").unsqueeze(0)
    return torch.matmul(a, b)


class _Geometry:
    """Kernel, stride, dilation and groups of a layer, and the output size they give an input."""

    def __init__(self, layer: Conv2dBase, height: int, width: int) -> None:
        (self.kh, self.kw), (self.sh, self.sw), (self.dh, self.dw) = (
            layer.kernel_size,
            layer.stride,
            layer.dilation,
        )
        self.groups = layer.groups
        self.h_out = output_size(height, self.kh, self.sh, self.dh)
        self.w_out = output_size(width, self.kw, self.sw, self.dw)

    def rows(self, i: int) -> slice:
        """Input rows that kernel row i sees, one per output row."""
        return slice(i * self.dh, i * self.dh + self.sh * (self.h_out - 1) + 1, self.sh)

    def columns(self, j: int) -> slice:
        """Input columns that kernel column j sees, one per output column."""
        return slice(j * self.dw, j * self.dw + self.sw * (self.w_out - 1) + 1, self.sw)


def windows(t: Tensor, dim: int, kernel: int, stride: int, dilation: int) -> Tensor:
    """A view of t: `dim` indexes output positions, a new last dim the `kernel` inputs each one reads."""
    view = t.unfold(dim, dilation * (kernel - 1) + 1, stride)
    return view if dilation == 1 else view[..., ::dilation]


def im2col(x: Tensor, g: _Geometry, cols: Tensor) -> Tensor:
    """x (m, C, H, W) -> columns (G, C/G * kH * kW, m * H_out * W_out), written into `cols`.

    cols: any tensor of C * kH * kW * m * H_out * W_out elements.
    """
    m, c, h, _ = x.shape
    # Step 1, the kW column shifts: shifted[c, j, n, y, x'] = x[n, c, y, x' * sW + j * dW].
    shifted = reuse(_SCRATCH.shared, "im2col", (c, g.kw, m, h, g.w_out), x)
    shifted.copy_(windows(x, 3, g.kw, g.sw, g.dw).permute(1, 4, 0, 2, 3))
    # Step 2, the kH row shifts: cols[c, i, j, n, y', x'] = shifted[c, j, n, y' * sH + i * dH, x'].
    cols = cols.view(c, g.kh, g.kw, m, g.h_out, g.w_out)
    cols.copy_(windows(shifted, 3, g.kh, g.sh, g.dh).permute(0, 5, 1, 2, 3, 4))
    return cols.view(g.groups, c // g.groups * g.kh * g.kw, m * g.h_out * g.w_out)


def col2im(dcols: Tensor, g: _Geometry, dx: Tensor) -> None:
    """Adds the column gradients (G, C/G * kH * kW, m * H_out * W_out) back into dx (m, C, H, W).

    The adjoint of `im2col`, its two steps in reverse: every column entry goes back to the
    input pixel it was copied from, and where windows overlap their gradients add up.
    """
    m, c, h, _ = dx.shape
    per_tap = dcols.view(c, g.kh, g.kw, m, g.h_out, g.w_out)
    shifted = reuse(_SCRATCH.shared, "col2im", (c, g.kw, m, h, g.w_out), dx).zero_()
    for i in range(g.kh):
        shifted[:, :, :, g.rows(i)] += per_tap[:, i]
    dx_by_channel = dx.transpose(0, 1)  # (C, m, H, W) view
    for j in range(g.kw):
        dx_by_channel[:, :, :, g.columns(j)] += shifted[:, j]


def chunks(x: Tensor, g: _Geometry) -> list[slice]:
    """Slices of the batch x (N, C, H, W) whose columns take about CHUNK_BYTES, at least one image each."""
    batch, image_bytes = x.shape[0], x.shape[1] * g.kh * g.kw * g.h_out * g.w_out * x.element_size()
    step = max(1, CHUNK_BYTES // max(1, image_bytes))
    return [slice(start, min(batch, start + step)) for start in range(0, batch, step)]


def column_buffer(layer: nn.Module, x: Tensor, g: _Geometry, images: int) -> Tensor:
    """This layer's own memory for the columns of `images` images of x, kept from call to call."""
    return reuse(_SCRATCH.columns, layer, (x.shape[1] * g.kh * g.kw * images * g.h_out * g.w_out,), x)


class _FastConvFunction(torch.autograd.Function):
    """Valid convolution of a padded input, chunk by chunk, with an explicit backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, layer: FastConv2d) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/G, kH, kW) -> (N, C_out, H_out, W_out)."""
        g = _Geometry(layer, x.shape[2], x.shape[3])
        n, c_out, pixels = x.shape[0], weight.shape[0], g.h_out * g.w_out
        filters = weight.view(g.groups, c_out // g.groups, -1)  # (G, C_out/G, K)
        out = x.new_empty(n, c_out, pixels)
        parts = chunks(x, g)
        for part in parts:
            images = part.stop - part.start
            cols = im2col(x[part], g, column_buffer(layer, x, g, images))
            # (C_out, images * pixels) -> (images, C_out, pixels), the bias added on the way.
            y = matmul(filters, cols).view(c_out, images, pixels).transpose(0, 1)
            if bias is None:
                out[part] = y
            else:
                torch.add(y, bias.view(1, c_out, 1), out=out[part])
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.layer, ctx.has_bias = g, layer, bias is not None
        # One chunk leaves all the columns in the layer's buffer: the backward uses them unless
        # another forward of this layer has overwritten them since, which the version tells.
        ctx.cols = cols if len(parts) == 1 else None
        ctx.cols_version = cols._version if len(parts) == 1 else None
        return out.view(n, c_out, g.h_out, g.w_out)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        """grad_out (N, C_out, H_out, W_out) -> dx (N, C_in, H_pad, W_pad), dW, db, None."""
        x, weight = ctx.saved_tensors
        g, (need_x, need_w, need_b) = ctx.geometry, ctx.needs_input_grad[:3]
        c_out, pixels = weight.shape[0], g.h_out * g.w_out
        filters = weight.view(g.groups, c_out // g.groups, -1)  # (G, C_out/G, K)
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = None
        for part in chunks(x, g):
            images = part.stop - part.start
            # dout as a matrix (G, C_out/G, images * pixels), its columns ordered as im2col's.
            dout = reuse(_SCRATCH.shared, "dout", (c_out, images, g.h_out, g.w_out), x)
            dout.copy_(grad_out[part].transpose(0, 1))
            dout = dout.view(g.groups, c_out // g.groups, images * pixels)
            if need_w:
                cols = ctx.cols
                if cols is None or cols._version != ctx.cols_version:
                    cols = im2col(x[part], g, column_buffer(ctx.layer, x, g, images))
                partial = matmul(dout, cols.transpose(1, 2))  # (G, C_out/G, K)
                grad_w = partial if grad_w is None else grad_w + partial
            if need_x:
                col2im(matmul(filters.transpose(1, 2), dout), g, grad_x[part])
        if need_w and grad_w is None:  # an empty batch
            grad_w = torch.zeros_like(filters)
        grad_b = grad_out.sum(dim=(0, 2, 3)) if ctx.has_bias and need_b else None
        return grad_x, None if grad_w is None else grad_w.view_as(weight), grad_b, None


class FastConv2d(Conv2dBase):
    """im2col + GEMM in cache-sized chunks on oneDNN, backward by hand."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        return _FastConvFunction.apply(x, weight, bias, self)
