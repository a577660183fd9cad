"""`fast`: im2col + matrix multiply with a backward by hand, engineered to keep up with `nn.Conv2d` on a CPU.

Teaches: the mathematics is `manual`'s (cols = im2col(x), out = W @ cols + b,
dW = dout @ cols^T, db = sum(dout), dx = col2im(W^T @ dout)); what decides the
speed is everything around it:

1. Two ways to multiply, chosen by K = C_in/G * kH * kW, the length of each dot
   product. Long ones are arithmetic-bound: the columns of a chunk of images form
   one matrix (K, images * pixels) and each product is a single 2-D GEMM on
   oneDNN, the library `nn.Conv2d` itself calls on a CPU (`torch.matmul` calls
   MKL, whose float32 GEMM takes a slower path on some CPUs: the comparison would
   then be between two BLAS libraries, not two convolutions). Short ones are
   memory-bound: there the columns stay image by image (images, K, pixels) and
   one batched product writes the output straight in NCHW order, saving the two
   layout copies the single matrix needs (output and output gradient).
2. im2col is one strided copy, in runs of W_out numbers. Where output rows are
   short it is two: shift the columns (all kW shifts at once), then the rows (all
   kH shifts), each in long runs. col2im, the way back, is always those two steps
   in reverse: kH + kW additions, not kH * kW.
3. The batch goes in chunks whose columns fit in the cache: the products read
   them while they are hot, and memory holds one chunk's columns, not the
   kH * kW copies of the whole batch that `unfold` keeps for its backward.
   On a GPU, where each chunk is a round of kernel launches, chunks are sized
   only to bound memory (DEVICE_CHUNK_BYTES).
4. Memory is reused from call to call: each layer keeps a buffer for its
   columns, and temporaries live in scratch buffers. A fresh multi-megabyte
   tensor can cost page faults (the C allocator hands freed memory back to the
   OS), more than the copies that fill it.
5. A batch that fits in one chunk leaves its columns in the layer's buffer, and
   the weight gradient of that same input reads them instead of building them
   again; otherwise they are rebuilt chunk by chunk from x (only x and W are
   saved, as in `nn.Conv2d`).

The three products plug into `convlab.conv.functional.conv2d`, so the backward is
itself differentiable and torch.func's transforms and forward-mode AD run these
kernels. Under `torch.compile` and `torch.export` (`torch.compiler.is_compiling()`)
points 4 and 5 step aside: the compiler plans memory itself and cannot trace
per-thread buffers, so every temporary is a fresh tensor and the columns are
rebuilt; the arithmetic and its order are the same.

Cost: the arithmetic of `nn.Conv2d`'s im2col path plus two copies of the input
per pass; slowest against `nn.Conv2d` where oneDNN's direct kernels never build a
column matrix (depthwise layers). `docs/speed.md` has the bench's figures.
Not for concurrent use of one layer by several threads' autograd.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, MutableMapping

import torch
from torch import Tensor

from convlab.conv.base import Conv2dBase
from convlab.conv.functional import ConvKernels, Geometry, conv2d

# Columns per chunk, sized for a CPU with 2 MiB of L2 cache per core: a 64-channel 3x3 layer on
# 32x32 images goes one image (2.4 MB of columns) at a time.
CHUNK_BYTES = 4 << 20
# On a GPU chunks only bound memory: there is no per-core cache to fit, and every chunk is a round of
# kernel launches, so a batch that small chunks would split into a hundred goes in one.
DEVICE_CHUNK_BYTES = 1 << 30
# Dot products of at most this length use batched per-image products instead of one 2-D GEMM.
SHORT_K = 32
# Output rows shorter than this are gathered in two steps (im2col_into); longer ones in one copy.
SHORT_ROW = 16


def _find_onednn_linear() -> Callable[..., Tensor] | None:
    """oneDNN's inner product X @ W^T (X (M, K) contiguous, W (N, K) any strided view), if this build
    of PyTorch has it and it gives torch.matmul's answer; None otherwise.

    The operator, `torch.ops.mkldnn._linear_pointwise`, is private to PyTorch (it is what
    `nn.Linear` lowers to under oneDNN fusion): it may change or vanish in any release, so it is
    looked up and tried once here, and every product falls back to `torch.matmul` without it.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._linear_pointwise.default
        a, b = torch.randn(3, 5), torch.randn(4, 5)
        if torch.allclose(op(a, b, None, "none", [], ""), a @ b.t(), rtol=1e-4, atol=1e-5):
            return op
    except (AttributeError, RuntimeError, TypeError):
        pass
    return None


# None where oneDNN's inner product is unavailable: `matmul` then uses torch.matmul throughout.
ONEDNN_LINEAR = _find_onednn_linear()


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """(..., M, K) @ (..., K, N) -> (..., M, N); oneDNN's inner product for float32 (1, M, K) @ (1, K, N)
    on the CPU where available, torch.matmul for everything else."""
    if (
        ONEDNN_LINEAR is not None
        and not torch.compiler.is_compiling()
        and a.is_cpu
        and a.dtype == torch.float32
        and a.dim() == b.dim() == 3
        and a.shape[0] == b.shape[0] == 1
    ):
        return ONEDNN_LINEAR(a[0].contiguous(), b[0].t(), None, "none", [], "").unsqueeze(0)
    return torch.matmul(a, b)


class _Columns:
    """A layer's column buffer, and whose columns it holds: those of `source` (one chunk) or nobody's."""

    def __init__(self) -> None:
        self.memory: dict[str, Tensor] = {}
        self.buffer: Tensor | None = None  # the columns last written, flat
        self.source: weakref.ref[Tensor] | None = None
        self.geometry: Geometry | None = None


class _Scratch(threading.local):
    """Memory reused from call to call, one set per thread: `shared` by slot name, `columns` per layer."""

    def __init__(self) -> None:
        self.shared: dict[str, Tensor] = {}
        self.columns: weakref.WeakKeyDictionary[FastKernels, _Columns] = weakref.WeakKeyDictionary()


_SCRATCH = _Scratch()


def reuse(store: MutableMapping, key, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised tensor of `shape` in the memory `store[key]` holds, grown when too small;
    a fresh one while compiling (the compiler plans memory itself)."""
    if torch.compiler.is_compiling():
        return like.new_empty(shape)
    numel, buffer = math.prod(shape), store.get(key)
    # Memory made under inference mode (Lightning's validation and test) cannot serve autograd later.
    stale = buffer is None or (buffer.is_inference() and not torch.is_inference_mode_enabled())
    if stale or buffer.numel() < numel or (buffer.dtype, buffer.device) != (like.dtype, like.device):
        buffer = store[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
    return buffer[:numel].view(shape)


class _Plan:
    """How one call lays out its work: output size, the length of each dot product, chunks, layouts."""

    def __init__(self, g: Geometry, x_shape: tuple[int, ...], device: torch.device) -> None:
        self.chunk_bytes = CHUNK_BYTES if device.type == "cpu" else DEVICE_CHUNK_BYTES
        (self.kh, self.kw), (self.sh, self.sw), (self.dh, self.dw) = g.kernel_size, g.stride, g.dilation
        self.channels, self.groups = x_shape[1], g.groups
        self.h_out, self.w_out = g.output_size(x_shape[2:])
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
        """Slices of the batch whose columns take about chunk_bytes (at 4 bytes a number), 1 image or more."""
        image_bytes = self.groups * self.k * self.pixels * 4
        step = max(1, self.chunk_bytes // max(1, image_bytes))
        return [slice(start, min(batch, start + step)) for start in range(0, batch, step)]

    def numbers(self, images: int) -> int:
        """Numbers in the columns of `images` images."""
        return self.groups * self.k * images * self.pixels

    def layouts(self, columns: Tensor, images: int) -> tuple[Tensor, Tensor]:
        """Two views of a chunk's columns, flat in `columns`: the matrix the products take, and the
        (C, kH, kW, images, H_out, W_out) view im2col_into writes and col2im_add reads.

        per image: (images, G, K, pixels); else one matrix: (G, K, images * pixels).
        """
        c, kh, kw, ho, wo = self.channels, self.kh, self.kw, self.h_out, self.w_out
        if self.per_image:
            taps = columns.view(images, c, kh, kw, ho, wo).permute(1, 2, 3, 0, 4, 5)
            return columns.view(images, self.groups, self.k, self.pixels), taps
        return columns.view(self.groups, self.k, images * self.pixels), columns.view(
            c, kh, kw, images, ho, wo
        )

    def output_matrix(self, dy: Tensor) -> Tensor:
        """A chunk of dy (images, O, H_out, W_out) in the products' layout: per image (images, G, O/G,
        pixels), a view; else (G, O/G, images * pixels), its columns ordered as im2col_into's, a copy."""
        images, o = dy.shape[:2]
        if self.per_image:
            return dy.reshape(images, self.groups, o // self.groups, self.pixels)
        shape = (self.groups, o // self.groups, images, self.h_out, self.w_out)
        dout = reuse(_SCRATCH.shared, "dout", shape, dy)
        dout.copy_(dy.unflatten(1, shape[:2]).permute(1, 2, 0, 3, 4))
        return dout.flatten(2)


def windows(t: Tensor, dim: int, kernel: int, stride: int, dilation: int) -> Tensor:
    """A view of t: `dim` indexes output positions, a new last dim the `kernel` inputs each one reads."""
    view = t.unfold(dim, dilation * (kernel - 1) + 1, stride)
    return view if dilation == 1 else view[..., ::dilation]


def im2col_into(x: Tensor, p: _Plan, taps: Tensor) -> None:
    """Writes the columns of x (m, C, H, W) into taps, a (C, kH, kW, m, H_out, W_out) view; returns nothing.

    (`convlab.conv.unfold.im2col` returns a fresh column matrix instead; this one fills a buffer.)
    """
    m, c, h, _ = x.shape
    if p.w_out >= SHORT_ROW:
        # taps[c, i, j, n, y', x'] = x[n, c, y' * sH + i * dH, x' * sW + j * dW]: one copy, in runs of W_out.
        taps.copy_(windows(windows(x, 2, p.kh, p.sh, p.dh), 3, p.kw, p.sw, p.dw).permute(1, 4, 5, 0, 2, 3))
        return
    # Short rows: step 1, the kW column shifts: shifted[c, j, n, y, x'] = x[n, c, y, x' * sW + j * dW],
    shifted = reuse(_SCRATCH.shared, "im2col", (c, p.kw, m, h, p.w_out), x)
    shifted.copy_(windows(x, 3, p.kw, p.sw, p.dw).permute(1, 4, 0, 2, 3))
    # step 2, the kH row shifts: taps[c, i, j, n, y', x'] = shifted[c, j, n, y' * sH + i * dH, x'].
    taps.copy_(windows(shifted, 3, p.kh, p.sh, p.dh).permute(0, 5, 1, 2, 3, 4))


def col2im_add(taps: Tensor, p: _Plan, dx: Tensor) -> None:
    """Adds column gradients, a (C, kH, kW, m, H_out, W_out) view, into dx (m, C, H, W).

    The adjoint of `im2col_into`, its two steps in reverse: every column entry goes back to the
    input pixel it was copied from, and where windows overlap their gradients add up.
    """
    m, c, h, _ = dx.shape
    shifted = reuse(_SCRATCH.shared, "col2im", (c, p.kw, m, h, p.w_out), dx).zero_()
    for i in range(p.kh):
        shifted[:, :, :, p.rows(i)] += taps[:, i]
    dx_by_channel = dx.transpose(0, 1)  # (C, m, H, W) view
    for j in range(p.kw):
        dx_by_channel[:, :, :, p.columns(j)] += shifted[:, j]


class FastKernels(ConvKernels):
    """fast's three products; one instance per layer, the key of that layer's column buffer."""

    name = "fast"

    def _columns(self, x: Tensor, p: _Plan, images: int) -> tuple[_Columns | None, Tensor]:
        """This layer's column record (None while compiling) and room for `images` images' columns."""
        if torch.compiler.is_compiling():
            return None, x.new_empty(p.numbers(images))
        record = _SCRATCH.columns.setdefault(self, _Columns())
        record.source = None  # about to be overwritten
        record.buffer = reuse(record.memory, "columns", (p.numbers(images),), x)
        return record, record.buffer

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, g: Geometry) -> Tensor:
        """x (N, C, H, W), weight (O, C/G, kH, kW), bias (O,) or None -> (N, O, H_out, W_out)."""
        p = _Plan(g, x.shape, x.device)
        n, c_out = x.shape[0], weight.shape[0]
        # reshape, not view: a weight may be stored in any layout (expanded, channels-last).
        filters = weight.reshape(g.groups, c_out // g.groups, p.k)  # (G, C_out/G, K)
        out = x.new_empty(n, g.groups, c_out // g.groups, p.pixels)
        parts, record, compiling = p.chunks(n), None, torch.compiler.is_compiling()
        for part in parts:
            images = part.stop - part.start
            record, columns = self._columns(x, p, images)
            cols, taps = p.layouts(columns, images)
            im2col_into(x[part], p, taps)
            if p.per_image:  # one batched product, straight into the output in NCHW order
                y = torch.matmul(filters, cols) if compiling else torch.matmul(filters, cols, out=out[part])
            else:
                # (G, C_out/G, images * pixels) -> (images, G, C_out/G, pixels), NCHW order.
                y = matmul(filters, cols).unflatten(2, (images, p.pixels)).permute(2, 0, 1, 3)
            if compiling:  # out= has no autograd, and torch.export traces this forward with grad on
                out[part] = y if bias is None else y + bias.view(1, g.groups, -1, 1)
            elif bias is not None:
                torch.add(y, bias.view(1, g.groups, -1, 1), out=out[part])
            elif not p.per_image:
                out[part] = y
        # One chunk leaves all of x's columns in the buffer, for the weight gradient of this same x.
        # Under inference mode there is no backward.
        if len(parts) == 1 and record is not None and not torch.is_inference_mode_enabled():
            record.source, record.geometry = weakref.ref(x), g
        return out.view(n, c_out, p.h_out, p.w_out)

    def input_grad(self, dy: Tensor, weight: Tensor, size: tuple[int, int], g: Geometry) -> Tensor:
        """dy (N, O, H_out, W_out), weight (O, C/G, kH, kW) -> dx (N, C, H, W)."""
        n, c_out = dy.shape[:2]
        p = _Plan(g, (n, weight.shape[1] * g.groups, *size), dy.device)
        filters = weight.reshape(g.groups, c_out // g.groups, p.k)  # (G, C_out/G, K)
        dx = dy.new_zeros(n, p.channels, *size)
        for part in p.chunks(n):
            dcols = matmul(filters.transpose(1, 2), p.output_matrix(dy[part]))
            col2im_add(p.layouts(dcols, part.stop - part.start)[1], p, dx[part])
        return dx

    def weight_grad(self, x: Tensor, dy: Tensor, g: Geometry) -> Tensor:
        """x (N, C, H, W), dy (N, O, H_out, W_out) -> dW (O, C/G, kH, kW)."""
        p = _Plan(g, x.shape, x.device)
        c_out = dy.shape[1]
        dw = x.new_zeros(g.groups, c_out // g.groups, p.k)  # (G, C_out/G, K)
        kept = None if torch.compiler.is_compiling() else _SCRATCH.columns.get(self)
        for part in p.chunks(x.shape[0]):
            images = part.stop - part.start
            if kept is not None and kept.source is not None and kept.source() is x and kept.geometry == g:
                cols = p.layouts(kept.buffer, images)[0]  # the forward's columns of this x
            else:
                cols, taps = p.layouts(self._columns(x, p, images)[1], images)
                im2col_into(x[part], p, taps)
            partial = matmul(p.output_matrix(dy[part]), cols.transpose(-1, -2))
            dw += partial.sum(0) if p.per_image else partial
        return dw.view(c_out, p.channels // g.groups, *g.kernel_size)


class FastConv2d(Conv2dBase):
    """im2col + GEMM, the product chosen by shape (oneDNN or batched), backward by hand."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.kernels = FastKernels()

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        return conv2d(x, weight, bias, self.kernels, self.geometry())
