"""A NumPy forward-only conv class as a notebook writes it: weights in `.kernel` (out, in, k, k) and `.bias`
(out,), `forward(x: np.ndarray) -> np.ndarray`, no backward. A test fixture, not a test."""

import numpy as np


class NumpyConv:
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        self.stride = stride
        self.padding = padding
        scale = 1 / np.sqrt(in_channels * kernel_size * kernel_size)
        self.kernel = np.random.uniform(-scale, scale, (out_channels, in_channels, kernel_size, kernel_size))
        self.bias = np.random.uniform(-scale, scale, (out_channels,))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """x (N, C_in, H, W) -> (N, C_out, H_out, W_out)."""
        p, s = self.padding, self.stride
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        n, _, h, w = x.shape
        k = self.kernel.shape[-1]
        h_out, w_out = (h - k) // s + 1, (w - k) // s + 1
        out = np.zeros((n, self.kernel.shape[0], h_out, w_out))
        for i in range(h_out):
            for j in range(w_out):
                window = x[:, :, i * s : i * s + k, j * s : j * s + k]
                out[:, :, i, j] = np.tensordot(window, self.kernel, axes=([1, 2, 3], [1, 2, 3])) + self.bias
        return out
