"""Which matrix multiply does this CPU run fast? MKL's against oneDNN's, on a conv-shaped product.

`torch.matmul` on a CPU calls MKL; `nn.Conv2d` calls oneDNN, and so does
`convlab.conv.fast` for its products (`convlab.conv.fast.matmul`). MKL picks its
kernels by CPU vendor: on AMD CPUs its float32 GEMM can run at about half the
speed of oneDNN's. A hand-written conv built on `torch.matmul` then loses to
`nn.Conv2d` for a reason that has nothing to do with convolution; this
measurement shows whether that is the case on the machine the bench runs on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from convlab.bench.timing import interleaved_times, summarize_times, synchronizer
from convlab.conv.fast import matmul as onednn_matmul

# The 64-channel 3x3 layer's forward product for 8 images of 32x32: (64, 576) @ (576, 8192).
SHAPE = (64, 576, 8192)


def gemm_gflops(
    device: torch.device, repeats: int, warmup: int, clock: Callable[[], float]
) -> dict[str, float]:
    """GFLOP/s of the (M, K) @ (K, N) float32 product: "mkl" and "onednn" on a CPU, "cublas" on CUDA."""
    m, k, n = SHAPE
    a, b = torch.randn(1, m, k, device=device), torch.randn(1, k, n, device=device)
    if device.type == "cpu":
        calls = {"mkl": lambda: torch.matmul(a, b), "onednn": lambda: onednn_matmul(a, b)}
    else:
        calls = {"cublas": lambda: torch.matmul(a, b)}
    times = interleaved_times(
        calls,
        repeats=repeats,
        warmup=warmup,
        budget_s=5.0,
        min_repeats=min(3, repeats),
        sync=synchronizer(device),
        clock=clock,
    )
    first = next(iter(calls))
    return {name: 2 * m * k * n / s.median_s / 1e9 for name, s in summarize_times(times, first).items()}
