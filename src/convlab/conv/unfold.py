"""`unfold`: im2col + one matrix multiply, autograd for the backward.

Teaches: every output pixel is a dot product between one flattened filter and
one flattened input patch. `F.unfold` copies all patches into the columns of a
matrix (im2col), so the whole convolution becomes a single batched matmul:

    cols   = unfold(x)                       (N, G, C_in/G * kH * kW, L)   L = H_out * W_out
    out    = weight_as_matrix @ cols         (N, G, C_out/G, L)

Cost: the column matrix holds kH * kW copies of every input value (memory and
bandwidth), then one GEMM that BLAS runs at full speed. Autograd records unfold,
view and matmul and differentiates them: correct, close to `nn.Conv2d` when
the GEMM dominates.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from convlab.conv.base import Conv2dBase


def im2col(x: Tensor, kernel_size, stride, dilation, groups: int) -> Tensor:
    """x (N, C_in, H_pad, W_pad) -> columns (N, groups, C_in/groups * kH * kW, H_out * W_out)."""
    cols = F.unfold(x, kernel_size, dilation=dilation, stride=stride)
    return cols.view(x.shape[0], groups, cols.shape[1] // groups, cols.shape[2])


class UnfoldConv2d(Conv2dBase):
    """Vectorised convolution: unfold the patches, multiply by the filters."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        h_out, w_out = self.valid_output_shape(x)
        cols = im2col(x, self.kernel_size, self.stride, self.dilation, self.groups)
        filters = weight.view(self.groups, self.out_channels // self.groups, cols.shape[2])
        out = (filters @ cols).view(x.shape[0], self.out_channels, h_out, w_out)
        return out if bias is None else out + bias.view(1, -1, 1, 1)
