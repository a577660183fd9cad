"""`unfold`: im2col + one matrix multiply, autograd for the backward.

Teaches: every output pixel is a dot product between one flattened filter and
one flattened input patch. Copy all patches into the columns of a matrix
(im2col) and the whole convolution becomes a single batched matmul:

    cols   = im2col(x)                       (N, G, C_in/G * kH * kW, L)   L = H_out * W_out
    out    = weight_as_matrix @ cols         (N, G, C_out/G, L)

`Tensor.unfold` gives every patch as a view of x, without copying; the one copy
happens when the view is reshaped into the column matrix. (`F.unfold` does the
same job in a single call, with a slower copy loop on a CPU.)

Cost: the column matrix holds kH * kW copies of every input value (memory and
bandwidth), then one batched GEMM. Autograd records the views, reshape and
matmul, keeps the column matrix for the backward and differentiates them:
correct to any order (forward-mode AD, torch.func, compile and export included),
a small factor slower than `nn.Conv2d`; `fast` shows what closing the gap takes.
"""

from __future__ import annotations

from torch import Tensor

from convlab.conv.base import Conv2dBase


def im2col(
    x: Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> Tensor:
    """x (N, C_in, H_pad, W_pad) -> columns (N, groups, C_in/groups * kH * kW, H_out * W_out), a new tensor.

    (`convlab.conv.fast.im2col_into` fills a caller's buffer instead.)"""
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    # (N, C, H_out, W_out, span_h, span_w): the receptive field of every output pixel, a view of x.
    patches = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)
    if dh > 1 or dw > 1:
        patches = patches[..., ::dh, ::dw]  # the taps a dilated kernel reads: (..., kH, kW)
    n, c, h_out, w_out = patches.shape[:4]
    cols = patches.permute(0, 1, 4, 5, 2, 3)  # (N, C, kH, kW, H_out, W_out), still a view
    return cols.reshape(n, groups, c // groups * kh * kw, h_out * w_out)  # the copy


class UnfoldConv2d(Conv2dBase):
    """Vectorised convolution: unfold the patches, multiply by the filters."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        h_out, w_out = self.valid_output_shape(x)
        cols = im2col(x, self.kernel_size, self.stride, self.dilation, self.groups)
        # reshape, not view: a weight may be stored in any layout (expanded, channels-last).
        filters = weight.reshape(self.groups, self.out_channels // self.groups, cols.shape[2])
        out = (filters @ cols).reshape(x.shape[0], self.out_channels, h_out, w_out)
        return out if bias is None else out + bias.view(1, -1, 1, 1)
