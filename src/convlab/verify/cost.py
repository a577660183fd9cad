"""How a layer's forward+backward time grows with the batch: verify's one cost line.

A correct conv costs time linear in the batch. A layer whose Python loop writes each output pixel in
place (`out[n, f, h, w] = ...`) is not: every such write records a CopySlices node whose backward
touches the whole output tensor, so backward's memory traffic grows with (batch x pixels) x output size,
quadratic in the batch. On the small shapes verify can afford, a Python loop's per-step overhead may
still hide that term; `python -m convlab.bench --impl SPEC` measures at the training shapes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

SHAPE = {"in_channels": 1, "out_channels": 4, "kernel_size": 3}
IMAGE = (10, 10)
BATCHES = (1, 2, 4, 8)
BUDGET_S = 6.0  # stop growing the batch once one step takes this long
SUPERLINEAR = 1.3  # a fitted exponent above this is reported as superlinear growth


@dataclass(frozen=True)
class Cost:
    """Seconds per forward+backward step at each batch size, and the fitted growth exponent."""

    seconds: dict[int, float]
    exponent: float
    what: str = "forward+backward"  # "forward" for a forward-only layer

    @property
    def superlinear(self) -> bool:
        return self.exponent > SUPERLINEAR

    def line(self) -> str:
        """e.g. 'forward+backward, 1->4 channels, k3, 10x10: 1.2 ms/image at batch 2, ... (linear)'."""
        per_image = ", ".join(f"{1e3 * s / b:.3g} ms/image at batch {b}" for b, s in self.seconds.items())
        growth = f"time ~ batch^{self.exponent:.2f}"
        shape = f"1->4 channels, k3, {IMAGE[0]}x{IMAGE[1]}"
        text = f"{self.what}, {shape}: {per_image}; {growth} at these sizes"
        if self.superlinear:
            text += (
                " (superlinear: the usual cause is an in-place write per output element, "
                "out[n, f, h, w] = ..., whose backward touches the whole output each time; build the output "
                "from a list and torch.stack, or from whole-tensor operations)"
            )
        else:
            text += " (linear; python -m convlab.bench --impl SPEC measures at the training shapes)"
        return text


def fit_exponent(seconds: dict[int, float]) -> float:
    """Least-squares slope of log(time) against log(batch)."""
    xs = [math.log(b) for b in seconds]
    ys = [math.log(max(s, 1e-9)) for s in seconds.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def _step_seconds(layer: nn.Module, batch: int, dtype: torch.dtype, backward: bool) -> float:
    x = torch.randn(batch, SHAPE["in_channels"], *IMAGE, dtype=dtype, requires_grad=backward)
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        out = layer(x)
        if backward:
            out.sum().backward()
    return time.perf_counter() - start


def measure(layer_cls: type[nn.Module], dtype: torch.dtype = torch.float32, backward: bool = True) -> Cost:
    """Time one forward+backward (forward only if not `backward`) per batch size of BATCHES: the best of
    two (a single timing lets one hiccup of a shared machine bend the fitted exponent; one where a step
    takes over BUDGET_S), of three while cheap."""
    layer = layer_cls(**SHAPE, dtype=dtype)
    _step_seconds(layer, 1, dtype, backward)  # first-call costs (allocation, lazy imports) out of the fit
    seconds: dict[int, float] = {}
    for batch in BATCHES:
        times = [_step_seconds(layer, batch, dtype, backward)]
        while len(times) < 3 and ((len(times) < 2 and times[0] < BUDGET_S) or sum(times) < 0.2):
            times.append(_step_seconds(layer, batch, dtype, backward))
        seconds[batch] = min(times)
        if seconds[batch] > BUDGET_S:
            break
    exponent = fit_exponent(seconds) if len(seconds) > 1 else float("nan")
    return Cost(seconds, exponent, "forward+backward" if backward else "forward")
