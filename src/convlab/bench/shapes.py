"""The conv shapes `convlab.bench` times: the reference network's two layers and three larger ones.

`conv1` and `conv2` are the reference network's layers at the training batch (64): the ones a training
run pays for, and the ones a training step and an epoch are projected from. `wide`, `strided` and
`depthwise` are layers typical of a modern CNN, where the arithmetic rather than Python overhead
decides. `conv1`'s input needs no gradient, as in the network (images are not trained), so no
implementation should spend time on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class BenchCase:
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
        """cls(in, out, kernel_size, ...) on `device`.

        Only the arguments that differ from nn.Conv2d's defaults are passed, so a user's layer that
        takes no `groups` still runs every case without groups; a case it cannot take raises
        `convlab.conv.UnsupportedFeature` (from the adapter) naming the feature.
        """
        options = {"stride": self.stride, "padding": self.padding, "groups": self.groups}
        defaults = {"stride": 1, "padding": 0, "groups": 1}
        kwargs = {key: value for key, value in options.items() if value != defaults[key]}
        return cls(self.in_channels, self.out_channels, self.kernel_size, **kwargs).to(device)

    def input(self, batch: int, device: torch.device) -> Tensor:
        """(batch, in_channels, size, size), standard normal."""
        x = torch.randn(batch, self.in_channels, self.size, self.size, device=device)
        return x.requires_grad_(self.input_grad)


REFERENCE_CASES = (
    BenchCase("conv1", 64, 1, 10, 28, 5, input_grad=False, reference=True),
    BenchCase("conv2", 64, 10, 20, 12, 5, reference=True),
)
LARGE_CASES = (
    BenchCase("wide", 128, 64, 64, 32, 3, padding=1),
    BenchCase("strided", 128, 64, 128, 32, 3, stride=2, padding=1),
    BenchCase("depthwise", 128, 64, 64, 32, 3, padding=1, groups=64),
)
# Tiny shapes with the same variety, for tests and a smoke run.
QUICK_CASES = (
    BenchCase("conv1", 4, 1, 3, 10, 5, input_grad=False, reference=True),
    BenchCase("conv2", 4, 3, 4, 6, 3, reference=True),
    BenchCase("strided", 4, 4, 4, 8, 3, stride=2, padding=1),
    BenchCase("depthwise", 4, 4, 4, 8, 3, padding=1, groups=4),
)
