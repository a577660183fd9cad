"""`vanilla_original`: a learner's first conv layer, loops as posted, the bench's baseline for "slow".

Why it lives in the bench and not in `convlab.conv`: it is not one of convlab's layers (it takes
`kernel_size` as a tuple only, names its parameters `filter_weights` / `filter_biases`, draws them with
`torch.rand`, and returns float32 whatever its input), and nothing but the bench uses it. It is kept
exactly as the learner wrote it, because its cost is the lesson: `python -m convlab.bench` presents it
with `nn.Conv2d`'s face through `convlab.conv.resolve_conv` (as it would any user's layer) and times it
at growing batch sizes beside `convlab.conv.vanilla`, which computes the same values.

Where the time goes, beyond "Python loops are slow":

- `out[n, f, h, w] = ...` writes into a preallocated output in place. Each write records a `CopySlices`
  node in the autograd graph, and each such node's backward copies the whole output gradient: the
  backward's memory traffic is (batch × C_out × H_out × W_out)², quadratic in the batch.
  `convlab.conv.vanilla` collects the pixels in a list and builds the output with `torch.stack`.
- `torch.zeros((N, F, H_out, W_out))` has no `dtype=` / `device=`: float64 input comes back float32.
  Timing does not depend on it; `python -m convlab.verify` reports it.
"""
# The class body is the learner's code as posted: neither ruff nor its formatter may touch it.
# ruff: noqa: E501, E231, E225, E226, N803, N806, N812
# fmt: off

import torch
from torch import nn


class LearnerVanillaConv2d(nn.Module):
    """x (N, C_in, H, W) -> (N, C_out, H_out, W_out), float32; stride and integer padding only."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.pad, self.stride = padding, stride
        self.filter_weights = nn.Parameter(torch.rand(out_channels, in_channels, kernel_size[0], kernel_size[1]))
        self.filter_biases = nn.Parameter(torch.rand(out_channels, ))
    def forward(self, X, padding_value=0):
        N, C, H, W = X.shape
        F, C, HH, WW = self.filter_weights.shape
        X_pad = nn.functional.pad(X, (self.pad, self.pad, self.pad, self.pad), mode='constant', value=padding_value)
        H_out = 1 + (H + 2*self.pad - HH) // self.stride
        W_out = 1 + (W + 2*self.pad - WW) // self.stride
        out = torch.zeros((N,F,H_out,W_out))
        for n in range(N):
            for f in range(F):
                for h in range(H_out):
                    for w in range(W_out):
                        h_, w_ = h*self.stride, w*self.stride
                        patches = X_pad[n, :, h_:h_+HH, w_:w_+WW]
                        out[n, f, h, w] = torch.sum(patches * self.filter_weights[f]) + self.filter_biases[f]
        return out
