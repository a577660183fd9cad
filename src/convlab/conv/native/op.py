"""`native`'s C kernels as PyTorch operators, and the autograd that makes them a full citizen.

Two operators, registered with `torch.library.custom_op`:

    convlab::native_conv2d(x, weight, bias, stride, padding, dilation, groups) -> out
    convlab::native_conv2d_backward(grad_out, x, weight, stride, padding, dilation, groups,
                                    need_x, need_w) -> (grad_x, grad_w)

    x (N, C_in, H_in, W_in), weight (C_out, C_in/G, kH, kW), bias (C_out,) or None,
    out / grad_out (N, C_out, H_out, W_out); padding: (left, right, top, bottom) zeros added to x;
    grad_x like x and grad_w like weight, or empty (0,) where need_x / need_w is False.

What the registration buys: a ctypes call is opaque to PyTorch, so the compiler breaks its graph
around it, `torch.export` cannot trace it, and transforms (vmap) cannot see inside. A custom
operator is one node with a declared schema: `register_fake` gives its output's shape without
running C, so `torch.compile(fullgraph=True)` and `torch.export` trace it; `register_autograd`
gives its gradient; `register_vmap` says how a batch of calls becomes one (the images of every
call folded into one batch where they are independent, one call per element otherwise). The
library checks the registrations with `torch.library.opcheck`.

The backward is itself made of convolutions (dx = conv_transpose(dY, W), dW = conv(X, dY)), so its
own gradient is written with these two operators again: gradients of any order, each a C call.

`conv2d` is what the layer calls. Eagerly it goes through two `torch.autograd.Function`s
(with `setup_context`, a `jvp` for forward-mode AD and the operators' vmap rules), which torch.func's
transforms (grad, vjp, jacrev, jvp, per-sample gradients) require; under `torch.compile` or
`torch.export` it is the bare operator, whose autograd the compiler takes from the registration
(the compiler does not trace an autograd.Function with a custom jvp).
Outside torch.func's transforms each Function runs as its classic-form twin (`convlab.conv.eager_apply`),
which skips the per-call binding of arguments that the setup_context form costs.

Every tensor is checked before the C kernel sees it: device (CPU), dtype (float32/float64, all
alike), sizes (consistent, and small enough for the kernel's indexing); then made contiguous. The
checks' verdict and the kernel's sizes are remembered per distinct call (`plan`), and an eager call
with ordinary CPU tensors goes from the autograd.Function straight to the operator's implementation:
the dispatcher's round trip through the custom op's layers and the checks are a fixed cost per call that
small layers (the reference network's) feel. The price: a `TorchDispatchMode` over plain CPU tensors
(e.g. `make_fx(tracing_mode="real")`) sees the aten ops of the Function's bookkeeping, not this
operator; fake, functional and subclass tensors, compile and export go through the operator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from convlab.conv.eager_apply import apply
from convlab.conv.native.build import C_TYPES, Shape, library

# Numbers the workspace and any tensor may hold: offsets of 8-byte numbers stay far inside a long.
MAX_NUMBERS = 1 << 56


class _Workspace(threading.local):
    """Scratch memory for the kernels, reused from call to call, one per thread."""

    def __init__(self) -> None:
        self.buffer: Tensor | None = None


_WORKSPACE = _Workspace()


def workspace(numbers: int, like: Tensor) -> Tensor:
    """A flat uninitialised tensor of `numbers` elements of like's dtype, reused while large enough."""
    buffer = _WORKSPACE.buffer
    # Memory made under inference mode cannot serve outside it; the kernels fill what they read.
    stale = buffer is None or (buffer.is_inference() and not torch.is_inference_mode_enabled())
    if stale or buffer.numel() < numbers or buffer.dtype != like.dtype:
        buffer = _WORKSPACE.buffer = torch.empty(numbers, dtype=like.dtype)
    return buffer[:numbers]


def output_size(size: int, before: int, after: int, kernel: int, stride: int, dilation: int) -> int:
    """Output length along one axis of a convolution of `size` numbers padded by `before` and `after`."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1


def check_geometry(
    stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int
) -> None:
    """RuntimeError unless stride, dilation (2, positive), padding (4, non-negative) and groups (positive)
    are valid."""
    if len(stride) != 2 or len(dilation) != 2 or len(padding) != 4:
        raise RuntimeError(
            "native_conv2d: expected 2 strides, 4 paddings and 2 dilations, "
            f"got {stride}, {padding}, {dilation}"
        )
    if min(stride) <= 0 or min(dilation) <= 0 or min(padding) < 0 or groups <= 0:
        raise RuntimeError(
            f"native_conv2d: stride and dilation must be positive, padding non-negative and groups positive, "
            f"got stride={list(stride)}, padding={list(padding)}, dilation={list(dilation)}, groups={groups}"
        )


def check_tensors(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    *,
    run: bool,
) -> Shape:
    """The kernels' Shape for these arguments, after checking every one; RuntimeError naming the first
    problem. `run`: for the C kernel (CPU, float32/float64); else for shapes only (fake tensors)."""
    check_geometry(stride, padding, dilation, groups)
    if x.dim() != 4 or weight.dim() != 4:
        raise RuntimeError(
            f"native_conv2d: expected a 4-D input and weight, got input of size {list(x.shape)} "
            f"and weight of size {list(weight.shape)}"
        )
    tensors = {"input": x, "weight": weight} | ({} if bias is None else {"bias": bias})
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1 or (run and any(d.type != "cpu" for d in devices.values())):
        raise RuntimeError(
            "native_conv2d: expected all tensors on the CPU (the C kernel's device), but got "
            + ", ".join(f"{name} on {device}" for name, device in devices.items())
        )
    dtypes = {name: t.dtype for name, t in tensors.items()}
    if len(set(dtypes.values())) > 1 or x.dtype not in C_TYPES:
        raise RuntimeError(
            "native_conv2d: the C kernel computes in float32 or float64, all tensors alike, but got "
            + ", ".join(f"{name} {dtype}" for name, dtype in dtypes.items())
        )
    n, c_in, h_in, w_in = x.shape
    c_out, per_group, kh, kw = weight.shape
    if c_in != per_group * groups or c_out % groups != 0 or min(kh, kw) <= 0:
        raise RuntimeError(
            f"native_conv2d: weight of size {list(weight.shape)} does not fit input of size {list(x.shape)} "
            f"with groups={groups} (expected ({c_out}, {c_in}/{groups}, kH, kW), C_out divisible by groups)"
        )
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise RuntimeError(f"native_conv2d: expected bias of size [{c_out}], got {list(bias.shape)}")
    (sh, sw), (dh, dw), (left, right, top, bottom) = stride, dilation, padding
    h_out = output_size(h_in, top, bottom, kh, sh, dh)
    w_out = output_size(w_in, left, right, kw, sw, dw)
    if h_out <= 0 or w_out <= 0:
        raise RuntimeError(
            f"native_conv2d: padded input ({h_in + top + bottom} x {w_in + left + right}) is smaller than "
            f"the dilated kernel ({dh * (kh - 1) + 1} x {dw * (kw - 1) + 1})"
        )
    sizes = dict(
        n=n, c_in=c_in, h=h_in + top + bottom, w=w_in + left + right, c_out=c_out, kh=kh, kw=kw, sh=sh, sw=sw,
        dh=dh, dw=dw, groups=groups, h_out=h_out, w_out=w_out, h_in=h_in, w_in=w_in, top=top, left=left,
    )  # fmt: skip
    # In Python's integers, before any size becomes a C long.
    if (numbers := workspace_bound(sizes)) > MAX_NUMBERS:
        raise RuntimeError(
            f"native_conv2d: a convolution of input {list(x.shape)} by weight {list(weight.shape)} needs "
            f"about {numbers} numbers of tensors and workspace, more than the C kernel can index"
        )
    return Shape(**sizes)


def workspace_bound(sizes: dict[str, int], threads: int = 1024) -> int:
    """An upper bound (exact integers, no overflow) on the numbers any tensor or the kernel's workspace
    holds, and so on every index the kernel computes: the area kernels.c lays out per thread, with
    one band's row length bounded by max(COLUMN_NUMBERS, W) + a vector."""
    s = sizes
    k = s["c_in"] // s["groups"] * s["kh"] * s["kw"]
    m, ld = s["c_out"] // s["groups"], max(1 << 20, s["w"]) + 64
    padded = s["c_in"] * s["h"] * s["w"]
    area = 2 * padded + (2 * k + 2 * m + 16) * ld + s["c_out"] * (k + 16) + 64
    tensors = s["n"] * max(padded, s["c_out"] * s["h_out"] * s["w_out"])
    return max(threads * area + s["c_out"] * k, tensors)


def empty_case(shape: Shape) -> bool:
    """Nothing for the kernel to compute: no images, channels or outputs."""
    return min(shape.n, shape.c_in, shape.c_out) == 0


class _Plan(NamedTuple):
    """What the kernel needs besides the tensors: its sizes, the threads to ask for, its workspace size."""

    shape: Shape
    threads: int
    numbers: int


_PLANS: dict[tuple, _Plan] = {}
# Distinct calls remembered; past this many (sizes varying from call to call) the memory starts afresh.
PLANS_KEPT = 256


def plan(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> _Plan:
    """check_tensors(run=True)'s Shape with the threads and workspace the kernel takes for it.

    Remembered per distinct call: the key holds everything the checks and sizes depend on (sizes, dtypes
    and devices of the tensors, the settings, torch's thread count), so a remembered plan is what
    checking anew would give, at the cost of one dictionary look-up. A call that fails a check is
    never remembered, and raises every time. Concrete tensors only (fake ones may have symbolic sizes).
    """
    key = (
        x.shape, x.dtype, x.device, weight.shape, weight.dtype, weight.device,
        None if bias is None else (bias.shape, bias.dtype, bias.device),
        tuple(stride), tuple(padding), tuple(dilation), groups, torch.get_num_threads(),
    )  # fmt: skip
    found = _PLANS.get(key)
    if found is not None:
        return found
    shape = check_tensors(x, weight, bias, stride, padding, dilation, groups, run=True)
    threads = numbers = 0
    if not empty_case(shape):
        lib = library(x.dtype)
        threads = lib.native_threads(key[-1], shape.n)
        numbers = lib.native_workspace(shape, threads)
        if not 0 <= numbers <= MAX_NUMBERS:
            raise RuntimeError(
                f"native_conv2d: this convolution needs more workspace than the C kernel indexes ({shape})"
            )
    if len(_PLANS) >= PLANS_KEPT:
        _PLANS.clear()
    found = _PLANS[key] = _Plan(shape, threads, numbers)
    return found


def pointer(t: Tensor | None) -> int | None:
    """The address of a contiguous tensor's first element, None for None (NULL in C)."""
    return None if t is None else t.data_ptr()


def run_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """conv2d(x zero-padded by `padding`, weight) + bias by the C kernel, every tensor checked first (`plan`);
    shapes in the module docstring. The implementation of the operator `convlab::native_conv2d`."""
    shape, threads, numbers = plan(x, weight, bias, stride, padding, dilation, groups)
    if empty_case(shape):
        out = x.new_zeros(shape.n, shape.c_out, shape.h_out, shape.w_out)
        return out if bias is None else out + bias.view(-1, 1, 1)
    x, weight = x.contiguous(), weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    out = x.new_empty(shape.n, shape.c_out, shape.h_out, shape.w_out)
    scratch = workspace(numbers, x)
    library(x.dtype).native_forward(
        shape, pointer(x), pointer(weight), pointer(bias), pointer(out), pointer(scratch), threads
    )
    return out


# The operator is the function itself: its annotations give the schema, and the autograd.Functions
# below can still call it without the dispatcher.
native_conv2d = torch.library.custom_op("convlab::native_conv2d", run_forward, mutates_args=())


@native_conv2d.register_fake
def _native_conv2d_fake(x, weight, bias, stride, padding, dilation, groups):
    shape = check_tensors(x, weight, bias, stride, padding, dilation, groups, run=False)
    return x.new_empty(shape.n, shape.c_out, shape.h_out, shape.w_out)


def _check_grad_out(grad_out: Tensor, x: Tensor, shape: Shape) -> None:
    expected = (shape.n, shape.c_out, shape.h_out, shape.w_out)
    if tuple(grad_out.shape) != expected or grad_out.device != x.device or grad_out.dtype != x.dtype:
        raise RuntimeError(
            f"native_conv2d_backward: expected grad_out of size {list(expected)}, {x.dtype} on {x.device}, "
            f"got size {list(grad_out.shape)}, {grad_out.dtype} on {grad_out.device}"
        )


def run_backward(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    need_x: bool,
    need_w: bool,
) -> tuple[Tensor, Tensor]:
    """(grad_x, grad_w) of native_conv2d by the C kernel, every tensor checked first; an empty (0,) tensor
    for one not needed. The implementation of the operator `convlab::native_conv2d_backward`."""
    shape, threads, numbers = plan(x, weight, None, stride, padding, dilation, groups)
    _check_grad_out(grad_out, x, shape)
    if not (need_x or need_w):
        return x.new_empty(0), weight.new_empty(0)
    if empty_case(shape):
        return (torch.zeros_like(x) if need_x else x.new_empty(0)), (
            torch.zeros_like(weight) if need_w else weight.new_empty(0)
        )
    x, weight, grad_out = x.contiguous(), weight.contiguous(), grad_out.contiguous()
    # The kernel writes every number of both gradients.
    grad_x = torch.empty_like(x) if need_x else None
    grad_w = torch.empty_like(weight) if need_w else None
    library(x.dtype).native_backward(
        shape, pointer(x), pointer(weight), pointer(grad_out), pointer(grad_x), pointer(grad_w),
        pointer(workspace(numbers, x)), threads,
    )  # fmt: skip
    return (x.new_empty(0) if grad_x is None else grad_x), (weight.new_empty(0) if grad_w is None else grad_w)


native_conv2d_backward = torch.library.custom_op(
    "convlab::native_conv2d_backward", run_backward, mutates_args=()
)


@native_conv2d_backward.register_fake
def _native_conv2d_backward_fake(grad_out, x, weight, stride, padding, dilation, groups, need_x, need_w):
    shape = check_tensors(x, weight, None, stride, padding, dilation, groups, run=False)
    _check_grad_out(grad_out, x, shape)
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (
        torch.empty_like(weight) if need_w else weight.new_empty(0)
    )


# Autograd of the operators. Each gradient is written with the operators themselves, and the operators
# are linear in each tensor argument, so every order of derivative is again these two C calls.


def _conv_setup(ctx, inputs, output) -> None:
    x, weight, bias, *geometry = inputs
    ctx.save_for_backward(x, weight)
    ctx.geometry, ctx.has_bias = tuple(geometry), bias is not None


def _conv_backward(ctx, grad_out: Tensor):
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    grad_x = grad_w = None
    if need_x or need_w:
        grad_x, grad_w = native_conv2d_backward(grad_out, x, weight, *ctx.geometry, need_x, need_w)
    grad_b = grad_out.sum(dim=(0, 2, 3)) if ctx.has_bias and need_b else None
    return grad_x if need_x else None, grad_w if need_w else None, grad_b, None, None, None, None


def _backward_setup(ctx, inputs, output) -> None:
    grad_out, x, weight, *geometry, need_x, need_w = inputs
    ctx.save_for_backward(grad_out, x, weight)
    ctx.geometry, ctx.computed = tuple(geometry), (need_x, need_w)


def _second_order(
    geometry, computed, saved, wanted, gg_x: Tensor | None, gg_w: Tensor | None, conv, backward
):
    """Gradients of the backward's (grad_x, grad_w) with respect to (grad_out, x, weight), given the
    gradients gg_x, gg_w flowing into them; `conv` and `backward` compute the operators (through autograd
    or not). grad_x = Dx(grad_out, weight), grad_w = Dw(x, grad_out), both bilinear:
        d grad_out = conv(gg_x, weight) + conv(x, gg_w),
        d x = Dx(grad_out, gg_w),  d weight = Dw(gg_x, grad_out).
    """
    grad_out, x, weight = saved
    gg_x = gg_x if computed[0] else None
    gg_w = gg_w if computed[1] else None
    d_grad_out = d_x = d_w = None
    if wanted[0]:
        terms = [conv(gg_x, weight, None, *geometry)] if gg_x is not None else []
        terms += [conv(x, gg_w, None, *geometry)] if gg_w is not None else []
        d_grad_out = sum(terms[1:], terms[0]) if terms else None
    if wanted[1] and gg_w is not None:
        d_x = backward(grad_out, x, gg_w, *geometry, True, False)[0]
    if wanted[2] and gg_x is not None:
        d_w = backward(grad_out, gg_x, weight, *geometry, False, True)[1]
    return d_grad_out, d_x, d_w


def _backward_backward(ctx, gg_x: Tensor | None, gg_w: Tensor | None):
    saved = ctx.saved_tensors
    wanted = ctx.needs_input_grad[:3]
    grads = _second_order(
        ctx.geometry, ctx.computed, saved, wanted, gg_x, gg_w, native_conv2d, native_conv2d_backward
    )
    return (*grads, None, None, None, None, None, None)


native_conv2d.register_autograd(_conv_backward, setup_context=_conv_setup)
native_conv2d_backward.register_autograd(_backward_backward, setup_context=_backward_setup)


# vmap: a batch of calls as one call where the images are independent, else one call per element.


def _each(info, in_dims, op: Callable, args: tuple):
    """op over the vmapped dimension one element at a time, outputs stacked along dim 0."""
    results = []
    for i in range(info.batch_size):
        element = (
            a.select(d, i) if isinstance(a, Tensor) and d is not None else a
            for a, d in zip(args, in_dims, strict=True)
        )
        results.append(op(*element))
    if isinstance(results[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*results, strict=True)), (0,) * len(results[0])
    return torch.stack(results), 0


def _images(t: Tensor, dim: int | None, batch: int) -> Tensor:
    """t (N, ...) vmapped along `dim` (None: shared) as (batch * N, ...)."""
    t = t.movedim(dim, 0) if dim is not None else t.expand(batch, *t.shape)
    return t.flatten(0, 1)


@native_conv2d.register_vmap
def _native_conv2d_vmap(info, in_dims, x, weight, bias, stride, padding, dilation, groups):
    x_dim, weight_dim, bias_dim = in_dims[:3]
    if weight_dim is None and bias_dim is None:  # each element's images with the same kernel: one batch
        out = native_conv2d(
            _images(x, x_dim, info.batch_size), weight, bias, stride, padding, dilation, groups
        )
        return out.unflatten(0, (info.batch_size, -1)), 0
    return _each(info, in_dims, native_conv2d, (x, weight, bias, stride, padding, dilation, groups))


@native_conv2d_backward.register_vmap
def _native_conv2d_backward_vmap(
    info, in_dims, grad_out, x, weight, stride, padding, dilation, groups, need_x, need_w
):
    args = (grad_out, x, weight, stride, padding, dilation, groups, need_x, need_w)
    if in_dims[2] is None and not need_w:  # dx image by image with the same kernel: one batch
        batch = info.batch_size
        grad_x, grad_w = native_conv2d_backward(
            _images(grad_out, in_dims[0], batch), _images(x, in_dims[1], batch), weight, *args[3:]
        )
        grad_x = grad_x.unflatten(0, (batch, -1)) if need_x else grad_x.expand(batch, 0)
        return (grad_x, grad_w.expand(batch, 0)), (0, 0)
    return _each(info, in_dims, native_conv2d_backward, args)


# The eager path: autograd.Functions, which torch.func's transforms and forward-mode AD require.


class _Geometry:
    """(stride, padding, dilation, groups) as one opaque argument: torch.func treats lists among an
    autograd.Function's inputs as pytrees of their own, and these are settings, not data."""

    def __init__(self, args: tuple) -> None:
        self.args = args


def _conv_function(x: Tensor, weight: Tensor, bias: Tensor | None, *geometry) -> Tensor:
    return apply(_Conv, x, weight, bias, _Geometry(geometry))


def _backward_function(
    grad_out: Tensor, x: Tensor, weight: Tensor, *geometry_and_needs
) -> tuple[Tensor, Tensor]:
    *geometry, need_x, need_w = geometry_and_needs
    return apply(_ConvBackward, grad_out, x, weight, _Geometry(tuple(geometry)), need_x, need_w)


def _plain(x: Tensor, weight: Tensor, other: Tensor | None) -> bool:
    """Whether these tensors may go to the kernel without the dispatcher: ordinary CPU tensors, not a
    subclass (fake, functional, a user's), which only the operator's registrations know how to handle."""
    return (
        type(x) in _PLAIN_TYPES and x.is_cpu and type(weight) in _PLAIN_TYPES and weight.is_cpu
        and (other is None or (type(other) in _PLAIN_TYPES and other.is_cpu))
    )  # fmt: skip


_PLAIN_TYPES = (Tensor, torch.nn.Parameter)


class _Conv(torch.autograd.Function):
    """native_conv2d with setup_context, a jvp and a vmap rule.

    The forward calls the operator's implementation directly: the dispatcher's round trip through the
    custom op's layers costs more than the kernel at small shapes, and an eager call with ordinary
    tensors gains nothing from it. The `vmap` rule (rather than a generated one) is what makes that
    safe: under torch.func's transforms the forward only ever meets tensors unwrapped of every transform.
    """

    @staticmethod
    def forward(x, weight, bias, geometry):
        if _plain(x, weight, bias):
            return run_forward(x, weight, bias, *geometry.args)
        return native_conv2d(x, weight, bias, *geometry.args)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _conv_setup(ctx, (*inputs[:3], *inputs[3].args), output)
        ctx.save_for_forward(*inputs[:2])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = None
        if grad_out is not None and (need_x or need_w):
            grad_x, grad_w = _backward_function(grad_out, x, weight, *ctx.geometry, need_x, need_w)
        grad_b = grad_out.sum(dim=(0, 2, 3)) if grad_out is not None and ctx.has_bias and need_b else None
        return grad_x if need_x else None, grad_w if need_w else None, grad_b, None

    @staticmethod
    def jvp(ctx, t_x, t_weight, t_bias, *_):
        """The convolution is linear in x and in weight: d out = conv(t_x, W) + conv(x, t_W) + t_b."""
        x, weight = ctx.saved_tensors
        terms = [_conv_function(t_x, weight, None, *ctx.geometry)] if t_x is not None else []
        terms += [_conv_function(x, t_weight, None, *ctx.geometry)] if t_weight is not None else []
        terms += [t_bias.view(-1, 1, 1)] if t_bias is not None else []
        if not terms:
            return None
        return sum(terms[1:], terms[0]).expand(_output_shape(x, weight, ctx.geometry))

    @staticmethod
    def vmap(info, in_dims, x, weight, bias, geometry):
        """The operator's rule, through this Function again so that outer transforms see its autograd."""
        x_dim, weight_dim, bias_dim = in_dims[:3]
        if weight_dim is None and bias_dim is None:  # each element's images with the same kernel: one batch
            out = _Conv.apply(_images(x, x_dim, info.batch_size), weight, bias, geometry)
            return out.unflatten(0, (info.batch_size, -1)), 0
        return _each(info, in_dims, _Conv.apply, (x, weight, bias, geometry))


def _output_shape(x: Tensor, weight: Tensor, geometry) -> tuple[int, ...]:
    (sh, sw), (left, right, top, bottom), (dh, dw), _ = geometry
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    return n, c_out, output_size(h, top, bottom, kh, sh, dh), output_size(w, left, right, kw, sw, dw)


class _ConvBackward(torch.autograd.Function):
    """native_conv2d_backward with setup_context, a jvp and a vmap rule; the forward as `_Conv`'s."""

    @staticmethod
    def forward(grad_out, x, weight, geometry, need_x, need_w):
        if _plain(x, weight, grad_out):
            return run_backward(grad_out, x, weight, *geometry.args, need_x, need_w)
        return native_conv2d_backward(grad_out, x, weight, *geometry.args, need_x, need_w)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _backward_setup(ctx, (*inputs[:3], *inputs[3].args, *inputs[4:]), output)
        ctx.save_for_forward(*inputs[:3])
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, gg_x, gg_w):
        grads = _second_order(
            ctx.geometry, ctx.computed, ctx.saved_tensors, ctx.needs_input_grad[:3], gg_x, gg_w,
            _conv_function, _backward_function,
        )  # fmt: skip
        return (*grads, None, None, None)

    @staticmethod
    def jvp(ctx, t_grad_out, t_x, t_weight, *_):
        """Bilinear: d grad_x = Dx(t_dY, W) + Dx(dY, t_W), d grad_w = Dw(t_x, dY) + Dw(x, t_dY)."""
        grad_out, x, weight = ctx.saved_tensors
        need_x, need_w = ctx.computed

        def dx(dy: Tensor | None, w: Tensor | None) -> Tensor | None:
            if dy is None or w is None:
                return None
            return _backward_function(dy, x, w, *ctx.geometry, True, False)[0]

        def dw(xx: Tensor | None, dy: Tensor | None) -> Tensor | None:
            if xx is None or dy is None:
                return None
            return _backward_function(dy, xx, weight, *ctx.geometry, False, True)[1]

        t_grad_x = _sum([dx(t_grad_out, weight), dx(grad_out, t_weight)], x) if need_x else x.new_empty(0)
        t_grad_w = _sum([dw(t_x, grad_out), dw(x, t_grad_out)], weight) if need_w else weight.new_empty(0)
        return t_grad_x, t_grad_w

    @staticmethod
    def vmap(info, in_dims, grad_out, x, weight, geometry, need_x, need_w):
        """The operator's rule, through this Function again."""
        args = (grad_out, x, weight, geometry, need_x, need_w)
        if in_dims[2] is None and not need_w:  # dx image by image with the same kernel: one batch
            batch = info.batch_size
            grad_x, grad_w = _ConvBackward.apply(
                _images(grad_out, in_dims[0], batch), _images(x, in_dims[1], batch), weight, *args[3:]
            )
            grad_x = grad_x.unflatten(0, (batch, -1)) if need_x else grad_x.expand(batch, 0)
            return (grad_x, grad_w.expand(batch, 0)), (0, 0)
        return _each(info, in_dims, _ConvBackward.apply, args)


def _sum(terms: list[Tensor | None], like: Tensor) -> Tensor:
    """The sum of the terms that are there; zeros like `like` where none is."""
    present = [t for t in terms if t is not None]
    return sum(present[1:], present[0]) if present else torch.zeros_like(like)


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> Tensor:
    """native_conv2d with every autograd feature: the bare operator under the compiler, else `_Conv`."""
    geometry = (list(stride), list(padding), list(dilation), groups)
    if torch.compiler.is_compiling():
        return native_conv2d(x, weight, bias, *geometry)
    return _conv_function(x, weight, bias, *geometry)
