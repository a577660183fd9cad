"""`vanilla`: the learner's convolution, four explicit loops, autograd for the backward.

Teaches: a convolution is nothing but, for every image n, filter f, output row i
and output column j, `sum(patch * weight[f])` over the receptive field of
output pixel (i, j), plus `bias[f]`. Autograd differentiates those slices,
products and sums correctly: the sliding window needs no special treatment.

Cost: one small autograd graph per output pixel. About N * C_out * H_out * W_out
Python iterations, each a slice, a multiply and a sum, recorded again for the
backward pass: thousands of times slower than `nn.Conv2d`, hours per MNIST epoch
(`python -m convlab.bench` measures it; docs/speed.md has its figures).
On a GPU every one of those tiny operations is a kernel launch: it runs, slower than
on the CPU, and warns once that it does.

Written to be as fast as the four loops allow without hiding them. Every
indexing operation is an autograd node, recorded and differentiated again for
each pixel it runs for, so each is done as far out as it can go: the filter
`weight[f]` once per filter, the band of input rows once per output row, the
bias once per output map. Each output row is built with `torch.stack`, with no
per-pixel in-place writes into a preallocated tensor (which autograd records as
a chain of copies). `convlab.bench.original_loops` keeps the first version, as
a baseline for the bench.

Because autograd sees every operation, everything autograd offers works here
unchanged: gradients of any order, forward-mode AD, torch.func's transforms,
complex numbers, `torch.compile` and `torch.export` (which unroll the loops, so
only for tiny inputs).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from convlab.conv.base import Conv2dBase


@functools.cache
def warn_slower_than_cpu(device_type: str) -> None:
    """Once per device type: the loops' tiny operations cost a kernel launch each on an accelerator."""
    warnings.warn(
        f"VanillaConv2d on {device_type}: each of its per-pixel slices, products and sums launches a kernel "
        "of its own, so it runs slower than on the CPU. It works; for speed use another implementation "
        "on the GPU, or run vanilla on the CPU.",
        UserWarning,
        stacklevel=2,
    )


class VanillaConv2d(Conv2dBase):
    """Four nested loops over batch, filter, output row and output column."""

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H_pad, W_pad), weight (C_out, C_in/groups, kH, kW) -> (N, C_out, H_out, W_out)."""
        if x.device.type != "cpu":
            warn_slower_than_cpu(x.device.type)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        h_out, w_out = self.valid_output_shape(x)
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        out_per_group = self.out_channels // self.groups
        in_per_group = self.in_channels // self.groups
        images = []
        for n in range(x.shape[0]):
            maps = []
            for f in range(self.out_channels):
                # The channels filter f sees: its own group's slice of the input.
                c0 = (f // out_per_group) * in_per_group
                image = x[n, c0 : c0 + in_per_group]
                kernel = weight[f]
                rows = []
                for i in range(h_out):
                    # The input rows output row i sees, sliced once for the whole row.
                    band = image[:, i * sh : i * sh + span_h : dh]
                    row = []
                    for j in range(w_out):
                        patch = band[:, :, j * sw : j * sw + span_w : dw]
                        row.append((patch * kernel).sum())
                    rows.append(torch.stack(row))
                feature_map = torch.stack(rows)
                maps.append(feature_map if bias is None else feature_map + bias[f])
            images.append(torch.stack(maps))
        if not images:
            # An empty batch has no pixel to loop over. Stay in the autograd graph anyway so
            # that every gradient comes back as zeros, as it does from F.conv2d.
            anchor = sum(t.sum() for t in (x, weight, bias) if t is not None) * 0
            return x.new_zeros((0, self.out_channels, h_out, w_out)) + anchor
        return torch.stack(images)
