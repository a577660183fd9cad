"""The configurations `python -m convlab.verify` checks, and the F.conv2d reference they are checked against.

Shapes are small on purpose: the `vanilla` layer runs one Python iteration per
output pixel, and a bug shows on a 6x6 image as well as on a 224x224 one.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.utils import _pair

# nn.Conv2d's defaults, left out of a case's name.
DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "bias": True, "padding_mode": "zeros"}
SHORT = {"stride": "s", "padding": "p", "dilation": "d", "groups": "g"}


@dataclass(frozen=True)
class ConvCase:
    """One layer configuration and the input it is run on: (N, C_in, H, W), or (C_in, H, W) unbatched."""

    input_shape: tuple[int, ...]
    out_channels: int
    kernel_size: int | tuple[int, int]
    options: dict = field(default_factory=dict)  # any other nn.Conv2d keyword: stride, padding, ...
    quick: bool = False  # also in --quick's short grid

    @property
    def in_channels(self) -> int:
        return self.input_shape[-3]

    def conv_kwargs(self) -> dict:
        """Keyword arguments for nn.Conv2d or any registered layer."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            **DEFAULTS,
            **self.options,
        }

    @property
    def name(self) -> str:
        """e.g. '(2,3,6,6)->4 k=3 s=2 p=1 reflect': input shape, out channels, kernel, non-default options."""
        parts = [f"{_short(self.input_shape)}->{self.out_channels}", f"k={_short(self.kernel_size)}"]
        for key, value in self.options.items():
            if key == "bias":
                parts.append("bias" if value else "no-bias")
            elif key == "padding_mode":
                parts.append(value)
            else:
                parts.append(f"{SHORT[key]}={_short(value)}")
        return " ".join(parts)

    def forward_reduction(self) -> int:
        """K of the forward pass alone: each output sums C_in/G * kH * kW products."""
        return self.in_channels // self.conv_kwargs()["groups"] * math.prod(_pair(self.kernel_size))

    def reduction(self) -> int:
        """K for the tolerance: the longest sum in the forward or backward pass.

        out sums C_in/G * kH * kW products, dx up to C_out/G * kH * kW (times the
        copies a reflect/circular halo adds), dW and db N * H_out * W_out.
        """
        kw = self.conv_kwargs()
        taps = math.prod(_pair(self.kernel_size))
        halo_copies = 1 if kw["padding_mode"] == "zeros" else 4
        batch = self.input_shape[0] if len(self.input_shape) == 4 else 1
        h_out, w_out = output_shape(self)
        return max(
            self.in_channels // kw["groups"] * taps,
            self.out_channels // kw["groups"] * taps * halo_copies,
            max(batch, 1) * h_out * w_out,
        )


def _short(value) -> str:
    if isinstance(value, tuple):
        return "(" + ",".join(map(str, value)) + ")"
    return str(value)


def conv_case(
    shape: tuple[int, ...], out: int, kernel: int | tuple[int, int], quick: bool = False, **options
) -> ConvCase:
    return ConvCase(shape, out, kernel, options, quick)


def padding_per_side(case: ConvCase) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) for F.pad, as nn.Conv2d computes it for a non-zero padding mode.

    Written out here rather than imported from convlab.conv.base: the reference must not
    share code with the layers it checks.
    """
    kw = case.conv_kwargs()
    kernel, dilation = _pair(kw["kernel_size"]), _pair(kw["dilation"])
    if kw["padding"] == "valid":
        return (0, 0, 0, 0)
    if kw["padding"] == "same":
        total = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return (total[1] // 2, total[1] - total[1] // 2, total[0] // 2, total[0] - total[0] // 2)
    ph, pw = _pair(kw["padding"])
    return (pw, pw, ph, ph)


def reference_conv(case: ConvCase, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.conv2d of x (N, C_in, H, W) or (C_in, H, W); non-zero padding modes pad first, as nn.Conv2d does."""
    kw = case.conv_kwargs()
    stride, dilation, groups = kw["stride"], kw["dilation"], kw["groups"]
    if kw["padding_mode"] == "zeros":
        with warnings.catch_warnings():  # F.conv2d's performance hint for 'same' with an even kernel
            warnings.filterwarnings("ignore", message="Using padding='same'")
            return F.conv2d(x, weight, bias, stride, kw["padding"], dilation, groups)
    padded = F.pad(x, padding_per_side(case), mode=kw["padding_mode"])
    return F.conv2d(padded, weight, bias, stride, 0, dilation, groups)


def output_shape(case: ConvCase) -> tuple[int, int]:
    """(H_out, W_out) of the reference on this case's input."""
    kw = case.conv_kwargs()
    weight = torch.zeros(case.out_channels, case.in_channels // kw["groups"], *_pair(case.kernel_size))
    x = torch.zeros((1, *case.input_shape[-3:]))
    return tuple(reference_conv(case, x, weight, None).shape[2:])


GRID: tuple[ConvCase, ...] = (
    # kernel sizes
    conv_case((2, 3, 6, 6), 4, 1),
    conv_case((2, 3, 6, 6), 4, 3, quick=True),
    conv_case((2, 3, 7, 7), 2, 5),
    conv_case((2, 2, 5, 5), 3, 5),  # kernel as large as the input: 1x1 output
    # strides
    conv_case((2, 3, 7, 7), 4, 3, stride=2),
    conv_case((2, 2, 8, 8), 3, 2, stride=3),  # stride larger than the kernel: skipped pixels
    conv_case((2, 2, 7, 8), 3, 3, stride=(1, 2)),
    # paddings
    conv_case((2, 3, 6, 6), 4, 3, padding=1),
    conv_case((2, 3, 5, 5), 2, 3, padding=2),
    conv_case((2, 2, 5, 6), 3, 3, padding=(1, 2)),
    conv_case((2, 3, 6, 6), 4, 3, quick=True, stride=2, padding=1),
    conv_case((2, 3, 6, 6), 4, 3, padding="same"),
    conv_case((2, 2, 6, 7), 3, 4, quick=True, padding="same"),  # even kernel: the extra padding goes after
    conv_case((2, 2, 7, 7), 3, 3, padding="same", dilation=2),
    conv_case((2, 3, 6, 6), 4, 3, padding="valid"),
    # dilation
    conv_case((2, 2, 7, 7), 3, 3, dilation=2),
    conv_case((2, 2, 6, 8), 3, 3, quick=True, dilation=(1, 2), padding=1),
    # groups
    conv_case((2, 4, 6, 6), 4, 3, groups=2),
    conv_case((2, 4, 6, 6), 4, 3, quick=True, groups=4, padding=1),  # depthwise
    conv_case((2, 2, 6, 6), 4, 3, groups=2),  # depthwise, channel multiplier 2
    # bias off
    conv_case((2, 3, 6, 6), 4, 3, bias=False),
    conv_case((2, 4, 6, 6), 4, 3, quick=True, groups=2, padding=1, bias=False),
    # padding modes
    conv_case((2, 2, 6, 6), 3, 3, quick=True, padding=1, padding_mode="reflect"),
    conv_case((2, 2, 6, 6), 3, 3, padding=1, padding_mode="replicate"),
    conv_case((2, 2, 6, 6), 3, 3, quick=True, padding=1, padding_mode="circular"),
    conv_case((2, 2, 6, 6), 3, 5, padding=2, padding_mode="circular"),
    conv_case((2, 2, 6, 7), 3, 4, padding="same", padding_mode="reflect"),
    conv_case((2, 2, 7, 7), 3, 3, quick=True, stride=2, padding=(2, 1), padding_mode="replicate"),
    conv_case((2, 4, 6, 6), 4, 3, padding=1, groups=2, padding_mode="circular"),
    # non-square kernels and inputs
    conv_case((2, 2, 6, 6), 3, (2, 3), quick=True),
    conv_case((2, 2, 6, 6), 3, (3, 1), padding=(1, 0)),
    conv_case((2, 2, 5, 8), 3, (1, 3), stride=(2, 1)),
    # unbatched (C, H, W)
    conv_case((3, 6, 6), 4, 3),
    conv_case((2, 6, 6), 3, 3, quick=True, padding="same", padding_mode="reflect"),
    # batch 0
    conv_case((0, 3, 6, 6), 4, 3, quick=True),
    conv_case((0, 2, 6, 6), 2, 3, padding=1, padding_mode="circular"),
    # everything at once
    conv_case((2, 4, 7, 9), 4, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2, bias=False),
    conv_case(
        (1, 4, 8, 7), 6, (2, 3), quick=True, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect"
    ),
)

QUICK_GRID: tuple[ConvCase, ...] = tuple(case for case in GRID if case.quick)

# torch.autograd.gradcheck perturbs every input element twice: keep these tiny.
GRADCHECK_GRID: tuple[ConvCase, ...] = (
    conv_case((1, 2, 4, 4), 2, 3, padding=1),
    conv_case(
        (2, 2, 5, 4), 2, (2, 3), stride=(2, 1), dilation=(1, 2), groups=2, padding=1, padding_mode="circular"
    ),
    conv_case((2, 4, 4), 2, 2, padding="same", padding_mode="reflect", bias=False),
    conv_case((0, 2, 4, 4), 2, 3, padding=1),
)
QUICK_GRADCHECK_GRID: tuple[ConvCase, ...] = GRADCHECK_GRID[:2]


def random_tensors(case: ConvCase, dtype: torch.dtype, seed: int = 0) -> dict[str, Tensor | None]:
    """x, weight, bias, grad_out for a case: float64 draws rounded to `dtype`, the same for every layer.

    x: input_shape, weight: (C_out, C_in/G, kH, kW), bias: (C_out,) or None, grad_out: the output's shape.
    """
    kw = case.conv_kwargs()
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)

    x = draw(*case.input_shape)
    weight = draw(case.out_channels, case.in_channels // kw["groups"], *_pair(case.kernel_size))
    bias = draw(case.out_channels) if kw["bias"] else None
    out_shape = reference_conv(case, x.double(), weight.double(), None).shape
    return {"x": x, "weight": weight, "bias": bias, "grad_out": draw(*out_shape)}
