"""The learner's layer, exactly as it was posted (so neither ruff nor its formatter may touch it).

In-place writes, torch.rand init, a tuple-only kernel_size and `torch.zeros` without dtype/device.
A test fixture, not a test: tests copy it out of the repository to use it.
"""
# ruff: noqa: E501
# fmt: off

import torch
from torch import nn


class VanillaConv2d(nn.Module):
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
