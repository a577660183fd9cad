"""`vanilla_original`: the four loops as a learner first writes them, kept as a baseline for the bench.

Not registered in `CONV_LAYERS`: it computes the same values as `vanilla`, only
slower, and exists so `python -m convlab.bench` can show what the changes in
`convlab.conv.vanilla` bought. The two habits that cost time:

- a preallocated output filled pixel by pixel in place: every write is a
  `CopySlices` node in the autograd graph, and the backward pass walks that chain
  of N * C_out * H_out * W_out nodes, each handing the whole output gradient on;
- `bias[f]` indexed and added once per pixel rather than once per feature map.
"""

from __future__ import annotations

import torch
from torch import Tensor

from convlab.conv.base import Conv2dBase


class VanillaOriginalConv2d(Conv2dBase):
    """Four nested loops writing each output pixel into a preallocated tensor."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        h_out, w_out = self.valid_output_shape(x)
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        out_per_group = self.out_channels // self.groups
        in_per_group = self.in_channels // self.groups
        out = torch.zeros(x.shape[0], self.out_channels, h_out, w_out, dtype=x.dtype, device=x.device)
        for n in range(x.shape[0]):
            for f in range(self.out_channels):
                c0 = (f // out_per_group) * in_per_group
                for i in range(h_out):
                    for j in range(w_out):
                        patch = x[
                            n,
                            c0 : c0 + in_per_group,
                            i * sh : i * sh + span_h : dh,
                            j * sw : j * sw + span_w : dw,
                        ]
                        out[n, f, i, j] = (patch * weight[f]).sum()
                        if bias is not None:
                            out[n, f, i, j] += bias[f]
        return out
