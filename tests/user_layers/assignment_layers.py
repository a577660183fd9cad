"""Assignment-style (CS231n) conv layers in NumPy: a correct forward/backward pair and a deliberately wrong
one whose bias gradient is summed over the batch axis only. A test fixture, not a test.

    conv_forward_*(x, w, b, conv_param) -> (out, cache)
        x (N, C, H, W), w (F, C, HH, WW), b (F,), conv_param {'stride': s, 'pad': p}
        out (N, F, H_out, W_out), H_out = 1 + (H + 2p - HH) // s
    conv_backward_*(dout, cache) -> (dx, dw, db)
"""

import numpy as np


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    H_out = 1 + (H + 2 * pad - HH) // stride
    W_out = 1 + (W + 2 * pad - WW) // stride
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
    out = np.zeros((N, F, H_out, W_out), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    window = x_pad[n, :, i * stride : i * stride + HH, j * stride : j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    cache = (x, w, b, conv_param)
    return out, cache


def conv_backward_naive(dout, cache):
    x, w, b, conv_param = cache
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    _, _, H_out, W_out = dout.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="constant")
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride, i * stride + HH)
                    cols = slice(j * stride, j * stride + WW)
                    dw[f] += x_pad[n, :, rows, cols] * dout[n, f, i, j]
                    dx_pad[n, :, rows, cols] += w[f] * dout[n, f, i, j]
    dx = dx_pad[:, :, pad : pad + H, pad : pad + W]
    return dx, dw, db


def conv_forward_wrong(x, w, b, conv_param):
    return conv_forward_naive(x, w, b, conv_param)


def conv_backward_wrong(dout, cache):
    dx, dw, _ = conv_backward_naive(dout, cache)
    db = dout.sum(axis=0).reshape(dout.shape[1], -1)[:, 0]  # the batch axis only: wrong
    return dx, dw, db
