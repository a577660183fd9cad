"""A hand-written convolution at autograd parity: three products, each the others' derivative.

Teaches: the gradient of a convolution is made of convolutions. With y = conv(x, W),

    dx = input_grad(dy, W)      the transposed convolution of dy by W      (N, C_in, H, W)
    dW = weight_grad(x, dy)     the convolution of x by dy, summed over n  (C_out, C_in/G, kH, kW)

and all three products are bilinear, so the derivative of each is again one of the three:

    product                 cotangent v   gradient to its first operand     to its second operand
    conv(x, W)              v = dy        input_grad(v, W*)                 weight_grad(x*, v)
    input_grad(dy, W)       v = ddx       conv(v, W*)                       weight_grad(v, dy*)
    weight_grad(x, dy)      v = ddW       input_grad(dy*, v)                conv(x*, v)

(* is the complex conjugate, PyTorch's convention for complex gradients; a no-op on real tensors.)
A layer that supplies the three products as plain tensor code (`ConvKernels`) gets from
`conv2d` a convolution that autograd can differentiate any number of times: gradient
penalties (WGAN-GP, R1), MAML-style meta-gradients and `gradgradcheck` see the layer's own
arithmetic at every order. Forward-mode AD needs no new product either: a bilinear map's
tangent is conv(x_t, W) + conv(x, W_t) + b_t.

Each product is a `torch.autograd.Function` in the form PyTorch's extension docs describe:
`forward` without ctx and a separate `setup_context` (what torch.func requires), `jvp` for
forward-mode AD, and a `vmap` rule. vmap needs no batched kernel: a batch over inputs is
folded into the convolution's own batch dimension N, and a batch over parameters into its
groups (B independent convolutions of G groups are one convolution of B * G groups). So
`torch.func.vmap`, `grad`, `vjp`, `jvp`, `jacrev`, `jacfwd` and per-sample gradients run the
layer's kernels, unchanged, on plain tensors.
Outside those transforms each product runs as its classic-form twin (`convlab.conv.eager_apply`):
the same forward, context, backward and jvp, without the setup_context form's cost per call.

Shapes (N batch, C channels, O = C_out, G groups, valid convolution: padding arrives applied):
    x (N, C, H, W), weight (O, C/G, kH, kW), bias (O,) or None, dy (N, O, H_out, W_out).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from convlab.conv.eager_apply import apply


@dataclass(frozen=True)
class Geometry:
    """Kernel size, stride, dilation and groups of a valid convolution (padding arrives applied)."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def output_size(self, size: tuple[int, ...]) -> tuple[int, int]:
        """(H_out, W_out) of an (H, W) input."""
        h, w = (
            (n - d * (k - 1) - 1) // s + 1
            for n, k, s, d in zip(size, self.kernel_size, self.stride, self.dilation, strict=True)
        )
        return h, w


class ConvKernels:
    """The three products a hand-written layer supplies: plain tensor code, called without autograd.

    Every method must take any batch size (including 0), any groups and every dtype the layer
    accepts; `conv2d` calls them on real and, for complex tensors, on conjugated operands.
    `name` is the layer's registered name, used in error messages.
    """

    name = "conv"

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, g: Geometry) -> Tensor:
        """x (N, C, H, W), weight (O, C/G, kH, kW), bias (O,) or None -> y (N, O, H_out, W_out)."""
        raise NotImplementedError

    def input_grad(self, dy: Tensor, weight: Tensor, size: tuple[int, int], g: Geometry) -> Tensor:
        """dy (N, O, H_out, W_out), weight (O, C/G, kH, kW) -> dx (N, C, H, W), (H, W) = size."""
        raise NotImplementedError

    def weight_grad(self, x: Tensor, dy: Tensor, g: Geometry) -> Tensor:
        """x (N, C, H, W), dy (N, O, H_out, W_out) -> dW (O, C/G, kH, kW), summed over the batch."""
        raise NotImplementedError


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, kernels: ConvKernels, g: Geometry) -> Tensor:
    """y (N, O, H_out, W_out) = kernels' valid convolution of x by weight, plus bias: differentiable
    to any order, in reverse and forward mode, and under torch.func transforms."""
    if torch.compiler.is_compiling():
        return _ConvCore.apply(x, weight, bias, kernels, g)
    return apply(_Conv, x, weight, bias, kernels, g)


def conv2d_input_grad(
    dy: Tensor, weight: Tensor, size: tuple[int, int], kernels: ConvKernels, g: Geometry
) -> Tensor:
    """dx (N, C, H, W) = the transposed convolution of dy (N, O, H_out, W_out) by weight; differentiable."""
    if torch.compiler.is_compiling():
        return _InputGradCore.apply(dy, weight, tuple(size), kernels, g)
    return apply(_InputGrad, dy, weight, tuple(size), kernels, g)


def conv2d_weight_grad(x: Tensor, dy: Tensor, kernels: ConvKernels, g: Geometry) -> Tensor:
    """dW (O, C/G, kH, kW) = the convolution of x (N, C, H, W) by dy (N, O, H_out, W_out); differentiable."""
    if torch.compiler.is_compiling():
        return _WeightGradCore.apply(x, dy, kernels, g)
    return apply(_WeightGrad, x, dy, kernels, g)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """a + b, where None stands for a zero tangent."""
    if a is None:
        return b
    return a if b is None else a + b


# The vmap rules. A vmapped call arrives with each tensor's batch dimension B at in_dims (None:
# not batched). B copies of a convolution with G groups are one convolution with B * G groups
# once the B copies sit side by side in the channel dimension.


def _batched_first(t: Tensor, bdim: int | None, size: int) -> Tensor:
    """t with its vmap dimension first; an unbatched t expanded to `size` copies."""
    return t.movedim(bdim, 0) if bdim is not None else t.expand(size, *t.shape)


def _into_channels(t: Tensor, bdim: int | None, size: int) -> Tensor:
    """(B, N, C, H, W) at bdim -> (N, B * C, H, W), the B copies as B more groups."""
    t = _batched_first(t, bdim, size)
    return t.transpose(0, 1).flatten(1, 2)


def _into_filters(t: Tensor, bdim: int | None, size: int) -> Tensor:
    """(B, O, ...) at bdim -> (B * O, ...): weights or bias of B copies, one after another."""
    return _batched_first(t, bdim, size).flatten(0, 1)


# Each product is two classes: the core (forward, setup_context, backward) is what torch.compile and
# torch.export trace (Dynamo refuses an autograd.Function that defines jvp); the eager class adds
# jvp and the vmap rule, which forward-mode AD and torch.func need.


class _ConvCore(torch.autograd.Function):
    """y = conv(x, weight) + bias by the layer's kernels."""

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None, kernels: ConvKernels, g: Geometry) -> Tensor:
        return kernels.conv(x, weight, bias, g)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, bias, kernels, g = inputs
        ctx.save_for_backward(x, weight)
        ctx.save_for_forward(x, weight)
        ctx.kernels, ctx.g, ctx.has_bias = kernels, g, bias is not None

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight = ctx.saved_tensors
        kernels, g = ctx.kernels, ctx.g
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = conv2d_input_grad(dy, weight.conj(), x.shape[2:], kernels, g)
        if ctx.needs_input_grad[1]:
            dw = conv2d_weight_grad(x.conj(), dy, kernels, g)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(dim=(0, 2, 3))
        return dx, dw, db, None, None


class _Conv(_ConvCore):
    """`_ConvCore` with forward-mode AD and a vmap rule."""

    @staticmethod
    def jvp(ctx, x_t: Tensor | None, w_t: Tensor | None, b_t: Tensor | None, *_) -> Tensor:
        x, weight = ctx.saved_tensors
        kernels, g = ctx.kernels, ctx.g
        y_t = None
        if x_t is not None:
            y_t = conv2d(x_t, weight, None, kernels, g)
        if w_t is not None:
            y_t = _add(y_t, conv2d(x, w_t, None, kernels, g))
        if y_t is None:
            y_t = x.new_zeros(x.shape[0], weight.shape[0], *g.output_size(x.shape[2:]))
        return y_t if b_t is None else y_t + b_t.view(1, -1, 1, 1)

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, kernels, g):
        x_dim, w_dim, b_dim = in_dims[:3]
        size = info.batch_size
        if w_dim is None and b_dim is None:  # a batch of inputs: B * N images
            y = conv2d(_batched_first(x, x_dim, size).flatten(0, 1), weight, bias, kernels, g)
            return y.unflatten(0, (size, -1)), 0
        x = _into_channels(x, x_dim, size)
        weight = _into_filters(weight, w_dim, size)
        bias = None if bias is None else _into_filters(bias, b_dim, size)
        y = conv2d(x, weight, bias, kernels, replace(g, groups=g.groups * size))
        return y.unflatten(1, (size, -1)).movedim(1, 0), 0


class _InputGradCore(torch.autograd.Function):
    """dx = input_grad(dy, weight) by the layer's kernels."""

    @staticmethod
    def forward(
        dy: Tensor, weight: Tensor, size: tuple[int, int], kernels: ConvKernels, g: Geometry
    ) -> Tensor:
        return kernels.input_grad(dy, weight, size, g)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        dy, weight, size, kernels, g = inputs
        ctx.save_for_backward(dy, weight)
        ctx.save_for_forward(dy, weight)
        ctx.size, ctx.kernels, ctx.g = size, kernels, g

    @staticmethod
    def backward(ctx, v: Tensor):
        dy, weight = ctx.saved_tensors
        kernels, g = ctx.kernels, ctx.g
        d_dy = d_weight = None
        if ctx.needs_input_grad[0]:
            d_dy = conv2d(v, weight.conj(), None, kernels, g)
        if ctx.needs_input_grad[1]:
            d_weight = conv2d_weight_grad(v, dy.conj(), kernels, g)
        return d_dy, d_weight, None, None, None


class _InputGrad(_InputGradCore):
    """`_InputGradCore` with forward-mode AD and a vmap rule."""

    @staticmethod
    def jvp(ctx, dy_t: Tensor | None, w_t: Tensor | None, *_) -> Tensor:
        dy, weight = ctx.saved_tensors
        kernels, g, size = ctx.kernels, ctx.g, ctx.size
        t = None
        if dy_t is not None:
            t = conv2d_input_grad(dy_t, weight, size, kernels, g)
        if w_t is not None:
            t = _add(t, conv2d_input_grad(dy, w_t, size, kernels, g))
        if t is None:
            t = dy.new_zeros(dy.shape[0], weight.shape[1] * g.groups, *size)
        return t

    @staticmethod
    def vmap(info, in_dims, dy, weight, size, kernels, g):
        dy_dim, w_dim = in_dims[:2]
        n = info.batch_size
        if w_dim is None:
            dx = conv2d_input_grad(_batched_first(dy, dy_dim, n).flatten(0, 1), weight, size, kernels, g)
            return dx.unflatten(0, (n, -1)), 0
        dy = _into_channels(dy, dy_dim, n)
        weight = _into_filters(weight, w_dim, n)
        dx = conv2d_input_grad(dy, weight, size, kernels, replace(g, groups=g.groups * n))
        return dx.unflatten(1, (n, -1)).movedim(1, 0), 0


class _WeightGradCore(torch.autograd.Function):
    """dW = weight_grad(x, dy) by the layer's kernels."""

    @staticmethod
    def forward(x: Tensor, dy: Tensor, kernels: ConvKernels, g: Geometry) -> Tensor:
        return kernels.weight_grad(x, dy, g)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, dy, kernels, g = inputs
        ctx.save_for_backward(x, dy)
        ctx.save_for_forward(x, dy)
        ctx.kernels, ctx.g = kernels, g

    @staticmethod
    def backward(ctx, v: Tensor):
        x, dy = ctx.saved_tensors
        kernels, g = ctx.kernels, ctx.g
        d_x = d_dy = None
        if ctx.needs_input_grad[0]:
            d_x = conv2d_input_grad(dy.conj(), v, x.shape[2:], kernels, g)
        if ctx.needs_input_grad[1]:
            d_dy = conv2d(x.conj(), v, None, kernels, g)
        return d_x, d_dy, None, None


class _WeightGrad(_WeightGradCore):
    """`_WeightGradCore` with forward-mode AD and a vmap rule."""

    @staticmethod
    def jvp(ctx, x_t: Tensor | None, dy_t: Tensor | None, *_) -> Tensor:
        x, dy = ctx.saved_tensors
        kernels, g = ctx.kernels, ctx.g
        t = None
        if x_t is not None:
            t = conv2d_weight_grad(x_t, dy, kernels, g)
        if dy_t is not None:
            t = _add(t, conv2d_weight_grad(x, dy_t, kernels, g))
        if t is None:
            t = x.new_zeros(dy.shape[1], x.shape[1] // g.groups, *g.kernel_size)
        return t

    @staticmethod
    def vmap(info, in_dims, x, dy, kernels, g):
        x_dim, dy_dim = in_dims[:2]
        n = info.batch_size
        x = _into_channels(x, x_dim, n)
        dy = _into_channels(dy, dy_dim, n)
        dw = conv2d_weight_grad(x, dy, kernels, replace(g, groups=g.groups * n))
        return dw.unflatten(0, (n, -1)), 0
