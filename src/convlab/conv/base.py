"""Everything a Conv2d does except the convolution itself.

`Conv2dBase` is the shared half of every hand-written layer in this package: it
takes `nn.Conv2d`'s constructor, validates arguments with the exception types
and messages `nn.Conv2d` uses, owns `weight` and `bias` initialised exactly as
`nn.Conv2d.reset_parameters` does (same RNG calls in the same order, so a fixed
seed gives identical tensors), checks the input the way `F.conv2d` does, applies
every padding (zeros, 'same', reflect, replicate, circular), and handles
unbatched input. A subclass implements one method:

    _conv(x, weight, bias) -> out
        x:      (N, C_in, H_pad, W_pad)  already padded, so the convolution is "valid"
        weight: (C_out, C_in / groups, kH, kW)
        bias:   (C_out,) or None
        out:    (N, C_out, H_out, W_out) with H_out = (H_pad - dH*(kH-1) - 1) // sH + 1

using `self.stride`, `self.dilation` and `self.groups`. For inputs where a subclass's
`pads_zeros_in_conv(x)` says so, `_conv` gets x without its zero padding instead and adds
the zeros `zero_padding_left_to_conv(x)` names itself (the other padding modes arrive applied).

What `F.conv2d` does around the arithmetic, `forward` does for every subclass: a
non-tensor input is a TypeError; under `torch.autocast` the floating-point operands
are cast to the autocast dtype (conv2d is on autocast's lower-precision list) and
`_conv` runs in that dtype with autocast off; an input with zero channels gives an
output with zero channels, and gradients of zeros, as `F.conv2d`'s does; and the
output is channels-last when the input or the weight is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.conv.functional import Geometry

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("same", "valid")


def _pair(value: int | Iterable[int]) -> tuple[int, ...]:
    """(v, v) for one number, the values as a tuple for a sequence (its length is checked at call time)."""
    return tuple(value) if isinstance(value, Iterable) else (value, value)


def output_size(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Output length of a valid (already padded) convolution along one axis."""
    return (size - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding that keeps the length at stride 1; extra goes after, as in F.conv2d."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def nn_conv2d_init_(weight: Tensor, bias: Tensor | None) -> None:
    """Draws weight (C_out, C_in/groups, kH, kW) and bias (C_out,) in place exactly as
    `nn.Conv2d.reset_parameters` does: the same calls in the same order, so one seed gives the same
    tensors. kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as is the bias."""
    with torch.no_grad():
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if bias is not None:
            fan_in = math.prod(weight.shape[1:])  # C_in/groups * kH * kW, as nn.init counts it
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(bias, -bound, bound)


class Conv2dBase(nn.Module):
    """Drop-in for `nn.Conv2d` whose computation is left to a subclass's `_conv`."""

    __constants__ = ["stride", "padding", "dilation", "groups", "padding_mode"]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        factory_kwargs = {"device": device, "dtype": dtype}
        if groups <= 0:
            raise ValueError(f"groups must be a positive integer, but got groups={groups}")
        if in_channels % groups != 0:
            raise ValueError(f"in_channels must be divisible by groups, but got {in_channels=} and {groups=}")
        if out_channels % groups != 0:
            raise ValueError(
                f"out_channels must be divisible by groups, but got {out_channels=} and {groups=}"
            )
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.dilation = _pair(dilation)
        if isinstance(padding, str):
            if padding not in PADDING_STRINGS:
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of {set(PADDING_STRINGS)}"
                )
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(
                    f"padding='same' is not supported for strided convolutions, but got stride={self.stride}"
                )
            self.padding = padding
        else:
            self.padding = _pair(padding)
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {set(PADDING_MODES)}, but got padding_mode={padding_mode!r}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.groups = groups
        self.padding_mode = padding_mode
        # nn.Conv2d's attributes for code that inspects a convolution (a Conv2d is never transposed).
        self.transposed = False
        self.output_padding = (0, 0)
        self.weight = nn.Parameter(
            torch.empty((out_channels, in_channels // groups, *self.kernel_size), **factory_kwargs)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **factory_kwargs))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def _padding_per_side(self) -> tuple[int, int, int, int]:
        """(left, right, top, bottom), the order F.pad takes for the last two dims."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":
            top, bottom = same_padding(self.kernel_size[0], self.dilation[0])
            left, right = same_padding(self.kernel_size[1], self.dilation[1])
            return (left, right, top, bottom)
        ph, pw = self.padding
        return (pw, pw, ph, ph)

    def reset_parameters(self) -> None:
        nn_conv2d_init_(self.weight, self.bias)

    def extra_repr(self) -> str:
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.kernel_size):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += ", padding_mode={padding_mode}"
        return s.format(**self.__dict__)

    def _check_arguments(self) -> None:
        """The checks F.conv2d makes at call time, not at construction (RuntimeError there too)."""
        sizes = {"kernel_size": self.kernel_size, "stride": self.stride, "dilation": self.dilation}
        if not isinstance(self.padding, str):
            sizes["padding"] = self.padding
        for name, value in sizes.items():
            if len(value) != 2:
                raise RuntimeError(
                    f"expected {name} to be a single integer value or a list of 2 values to match the "
                    f"convolution dimensions, but got {name}={list(value)}"
                )
        if any(s <= 0 for s in self.stride):
            raise RuntimeError(f"non-positive stride is not supported, but got stride={self.stride}")
        if any(d <= 0 for d in self.dilation):
            raise RuntimeError(f"dilation should be greater than zero, but got {list(self.dilation)}")
        # Non-zero modes go through F.pad, which crops on negative padding, in nn.Conv2d too.
        if self.padding_mode == "zeros" and any(p < 0 for p in self._padding_per_side()):
            raise RuntimeError(f"negative padding is not supported, but got padding={self.padding}")
        if any(k <= 0 for k in self.kernel_size):
            raise RuntimeError(
                "kernel size should be greater than zero, but got kernel_height: "
                f"{self.kernel_size[0]} kernel_width: {self.kernel_size[1]}"
            )
        if self.out_channels <= 0:
            raise RuntimeError(
                f"Given groups={self.groups}, expected weight to be at least 1 at dimension 0, "
                f"but got weight of size {list(self.weight.shape)} instead"
            )

    def geometry(self) -> Geometry:
        """Kernel size, stride, dilation and groups, as `convlab.conv.functional` takes them."""
        return Geometry(self.kernel_size, self.stride, self.dilation, self.groups)

    def _check_input(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> None:
        """x: (N, C_in, H, W) after unsqueezing unbatched input; weight and bias as `_conv` will get them."""
        if x.shape[1] != self.in_channels:
            raise RuntimeError(
                f"Given groups={self.groups}, weight of size {list(weight.shape)}, "
                f"expected input{list(x.shape)} to have {self.in_channels} channels, "
                f"but got {x.shape[1]} channels instead"
            )
        for tensor, name in ((weight, "weight"), (bias, "bias")):
            if tensor is not None and x.dtype != tensor.dtype:
                raise RuntimeError(
                    f"Input type ({x.dtype}) and {name} type ({tensor.dtype}) should be the same"
                )

    def _checked_settings(self) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
        """((left, right, top, bottom) padding, (dilated kH, dilated kW)) after `_check_arguments`.

        The checks run once per distinct setting, not once per call: the settings they passed are kept
        with their results and compared (a tuple equality) on every call, so changing `stride`,
        `padding` or any other setting on a live layer is checked again at the next call. Under
        `torch.compile` nothing is kept (the compiler traces the checks as constants).
        """
        settings = (
            self.kernel_size, self.stride, self.padding, self.dilation, self.groups, self.padding_mode,
            self.out_channels,
        )  # fmt: skip
        if torch.compiler.is_compiling():
            self._check_arguments()
            return self._padding_per_side(), self._dilated_kernel()
        kept = self.__dict__.get("_settings_checked")
        if kept is None or kept[0] != settings:
            self._check_arguments()
            # Plain tuples only: a list kept here could change in place and still compare equal.
            frozen = tuple(tuple(v) if isinstance(v, list) else v for v in settings)
            kept = (frozen, self._padding_per_side(), self._dilated_kernel())
            # Past nn.Module.__setattr__: a plain attribute, not a parameter, buffer or submodule.
            self.__dict__["_settings_checked"] = kept
        return kept[1], kept[2]

    def _dilated_kernel(self) -> tuple[int, int]:
        """(dH * (kH - 1) + 1, dW * (kW - 1) + 1): the extent of the kernel on the padded input."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation, strict=True))

    @staticmethod
    def _check_kernel_fits(height: int, width: int, dilated: tuple[int, int]) -> None:
        """height, width: of the input as `_conv` sees it, its own zero padding included."""
        if height < dilated[0] or width < dilated[1]:
            raise RuntimeError(
                f"Calculated padded input size per channel: ({height} x {width}). "
                f"Kernel size: ({dilated[0]} x {dilated[1]}). "
                "Kernel size can't be greater than actual input size"
            )

    def pads_zeros_in_conv(self, x: Tensor) -> bool:
        """Whether `_conv` adds x's zero padding itself rather than receive a padded copy: never here.
        A subclass may say yes by device or dtype (not by size: x may come padded or not)."""
        return False

    def zero_padding_left_to_conv(self, x: Tensor) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) zeros `_conv` adds to x itself: none unless `pads_zeros_in_conv(x)`."""
        if self.padding_mode == "zeros" and self.pads_zeros_in_conv(x):
            return self._padding_per_side()
        return (0, 0, 0, 0)

    def padded_size(self, x: Tensor) -> tuple[int, int]:
        """(H_pad, W_pad) of x (N, C, H, W) as `_conv` receives it, with the zeros it adds itself."""
        left, right, top, bottom = self.zero_padding_left_to_conv(x)
        return x.shape[2] + top + bottom, x.shape[3] + left + right

    def valid_output_shape(self, x: Tensor) -> tuple[int, int]:
        """(H_out, W_out) of the convolution of x as `_conv` receives it (see `padded_size`)."""
        height, width = self.padded_size(x)
        return (
            output_size(height, self.kernel_size[0], self.stride[0], self.dilation[0]),
            output_size(width, self.kernel_size[1], self.stride[1], self.dilation[1]),
        )

    def forward(self, input: Tensor) -> Tensor:
        """(N, C_in, H, W) -> (N, C_out, H_out, W_out); unbatched (C_in, H, W) -> (C_out, H_out, W_out)."""
        if not isinstance(input, Tensor):
            raise TypeError(
                f"{type(self).__name__}: expected input to be a Tensor, but got {type(input).__name__}"
            )
        if input.dim() not in (3, 4):
            raise RuntimeError(
                "Expected 3D (unbatched) or 4D (batched) input to conv2d, "
                f"but got input of size: {list(input.shape)}"
            )
        pad, dilated = self._checked_settings()
        unbatched = input.dim() == 3
        x = input.unsqueeze(0) if unbatched else input
        weight, bias = self.weight, self.bias
        autocast_dtype = _autocast_dtype(x)
        if autocast_dtype is not None:
            x, weight, bias = (_autocast(t, autocast_dtype) for t in (x, weight, bias))
        self._check_input(x, weight, bias)
        own = self.zero_padding_left_to_conv(x)  # the zeros `_conv` adds itself, if any
        if any(pad) and not any(own):
            x = F.pad(x, pad, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        self._check_kernel_fits(x.shape[2] + own[2] + own[3], x.shape[3] + own[0] + own[1], dilated)
        if x.shape[1] == 0:
            out = self._no_channels(x, weight, bias)
        else:
            if x.numel() == 0 and x.shape[0] != 0:
                raise RuntimeError(
                    "Only zero batch or zero channel inputs are supported, "
                    f"but got input shape: {list(input.shape)}"
                )
            # Autocast has done its part (the casts above): the kernels compute in that dtype.
            off = (
                torch.autocast(x.device.type, enabled=False) if autocast_dtype is not None else nullcontext()
            )
            with off:
                out = self._conv(x, weight, bias)
        if unbatched:
            return out.squeeze(0)
        # nn.Conv2d hands the output back channels-last when its input or weight is (same values either way).
        if _is_channels_last(input) or _is_channels_last(weight):
            return out.contiguous(memory_format=torch.channels_last)
        return out

    def _no_channels(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, 0, H_pad, W_pad) -> (N, 0, H_out, W_out), as F.conv2d gives it, with zero gradients for
        x, weight and bias (a graph that reaches them, so that they get zeros and not None)."""
        anchor = sum(t.sum() for t in (x, weight, bias) if t is not None) * 0
        return x.new_zeros((x.shape[0], 0, *self.valid_output_shape(x))) + anchor

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _conv")


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast gives a conv2d on x's device, None where autocast is off."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return None


def _autocast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """t cast as autocast casts an operand of conv2d: floating point other than float64 only."""
    if t is not None and t.is_floating_point() and t.dtype != torch.float64:
        return t.to(dtype)
    return t


def _is_channels_last(t: Tensor) -> bool:
    """Whether a 4-D tensor is stored channels-last (and not also plain contiguous, as with one channel)."""
    try:
        return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    except RuntimeError:
        # Inside torch.func.vmap a tensor cannot be asked about memory formats; the layout of a
        # vmapped output is not observable either, so the plain one serves.
        return False
