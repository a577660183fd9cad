"""What `convlab.bench` times: the conv shapes, the contenders, and one forward or forward+backward call.

Shapes: the reference network's two conv layers (`conv1`, `conv2`, the ones a
training run pays for) and three larger layers typical of a modern CNN, where
the arithmetic rather than Python overhead decides. `conv1`'s input needs no
gradient, as in the network (images are not trained), so no implementation
should spend time on it.

Contenders: every registered implementation, plus two baselines that exist only
here: `vanilla_original` (the learner's first loops, `convlab.bench.original_loops`)
and `torch_no_onednn`, `nn.Conv2d` with oneDNN switched off. On a CPU `nn.Conv2d`
runs oneDNN's convolution kernels; without them PyTorch falls back to its own
im2col + BLAS path, the same kind of computation a hand-written layer does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from convlab.bench.original_loops import VanillaOriginalConv2d
from convlab.conv import CONV_LAYERS

BASELINE = "torch"
# Python-loop layers: timed on a few images (`--slow-batch`) and at the reference shapes only.
SLOW_IMPLS = ("vanilla", "vanilla_original")
# Implementations that take seconds per call at the larger shapes: timed there on this many images.
LARGE_SHAPE_BATCH = {"numpy": 8}
IMPLEMENTATIONS: dict[str, type[nn.Module]] = {
    **CONV_LAYERS,
    "vanilla_original": VanillaOriginalConv2d,
    "torch_no_onednn": nn.Conv2d,
}


@contextlib.contextmanager
def onednn_off() -> Iterator[None]:
    """oneDNN switched off for PyTorch's own kernels; `torch.backends.mkldnn.flags` would reset more."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


# Global settings a contender's forward and backward run under.
CONTEXTS: dict[str, Callable[[], contextlib.AbstractContextManager]] = {"torch_no_onednn": onednn_off}
# Contenders that only mean something on a CPU.
CPU_ONLY = ("torch_no_onednn",)
MODES = ("fwd", "fwd+bwd")


@dataclass(frozen=True)
class ConvCase:
    """One conv layer and its input: (batch, in_channels, size, size) -> (batch, out_channels, ...)."""

    name: str
    batch: int
    in_channels: int
    out_channels: int
    size: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    groups: int = 1
    input_grad: bool = True
    reference: bool = False

    def describe(self) -> str:
        extras = [f"s{self.stride}"] if self.stride != 1 else []
        extras += [f"p{self.padding}"] if self.padding else []
        extras += [f"g{self.groups}"] if self.groups != 1 else []
        return f"{self.batch}×{self.in_channels}×{self.size}×{self.size} → {self.out_channels}, " + " ".join(
            [f"k{self.kernel_size}", *extras]
        )

    def layer(self, cls: type[nn.Module], device: torch.device) -> nn.Module:
        return cls(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            groups=self.groups,
            device=device,
        )

    def batch_for(self, name: str, slow_batch: int) -> int:
        """Images per call for `name`: fewer for the slow implementations, which are compared per image."""
        if name in SLOW_IMPLS:
            return slow_batch
        return self.batch if self.reference else min(self.batch, LARGE_SHAPE_BATCH.get(name, self.batch))

    def input(self, batch: int, device: torch.device) -> Tensor:
        """(batch, in_channels, size, size), standard normal."""
        x = torch.randn(batch, self.in_channels, self.size, self.size, device=device)
        return x.requires_grad_(self.input_grad)


REFERENCE_CASES = (
    ConvCase("conv1", 64, 1, 10, 28, 5, input_grad=False, reference=True),
    ConvCase("conv2", 64, 10, 20, 12, 5, reference=True),
)
LARGE_CASES = (
    ConvCase("wide", 128, 64, 64, 32, 3, padding=1),
    ConvCase("strided", 128, 64, 128, 32, 3, stride=2, padding=1),
    ConvCase("depthwise", 128, 64, 64, 32, 3, padding=1, groups=64),
)
# Tiny shapes with the same variety, for tests and a smoke run.
QUICK_CASES = (
    ConvCase("conv1", 4, 1, 3, 10, 5, input_grad=False, reference=True),
    ConvCase("conv2", 4, 3, 4, 6, 3, reference=True),
    ConvCase("strided", 4, 4, 4, 8, 3, stride=2, padding=1),
    ConvCase("depthwise", 4, 4, 4, 8, 3, padding=1, groups=4),
)


@dataclass
class Contender:
    """One implementation set up for one case: its layer, input, output gradient and batch size."""

    layer: nn.Module
    x: Tensor
    grad_out: Tensor
    batch: int
    context: Callable[[], contextlib.AbstractContextManager] = field(default=contextlib.nullcontext)

    def zero_grad(self) -> None:
        self.x.grad = None
        for p in self.layer.parameters():
            p.grad = None

    def call(self, mode: str) -> Callable[[], object]:
        """One forward (graph recorded, as in training), or one forward and backward."""

        def forward() -> None:
            with self.context():
                self.layer(self.x)

        def forward_backward() -> None:
            with self.context():
                self.layer(self.x).backward(self.grad_out)

        return forward if mode == "fwd" else forward_backward


def contender(case: ConvCase, name: str, batch: int, device: torch.device) -> Contender:
    layer = case.layer(IMPLEMENTATIONS[name], device)
    x = case.input(batch, device)
    with torch.no_grad():
        grad_out = torch.randn_like(layer(x))
    return Contender(layer, x, grad_out, batch, CONTEXTS.get(name, contextlib.nullcontext))
