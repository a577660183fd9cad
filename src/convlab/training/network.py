"""The reference MNIST network, built from any conv class, with its two conv slots named.

`ReferenceNet` is the network of PyTorch's classic MNIST example (github.com/pytorch/examples,
mnist/main.py) with the two conv layers taken from the class given, so every implementation
trains in the same network with nothing else changed. The network names its conv slots
(`conv_layers()`): probes, drift, the frozen check and the re-drawn-conv ablation ask it for them,
so a user's layer of any class is found, registered or not.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from convlab.conv.base import nn_conv2d_init_
from convlab.training.errors import RunError

CONV_INITS = ("default", "nn_conv2d", "uniform01")
CONV_SLOTS = ("conv1", "conv2")


class LayerOutputError(RunError, TypeError):
    """A conv layer handed back a tensor of another dtype or device than its input's."""


class ReferenceNet(nn.Module):
    """conv1 1->10 k5, pool, ReLU; conv2 10->20 k5, Dropout2d, pool, ReLU; fc1 320->50; fc2 50->10.

    conv_layer: a class with `nn.Conv2d`'s constructor (a value of `convlab.conv.CONV_LAYERS`, or what
        `convlab.conv.resolve_conv` returns for a user's layer), called as `conv_layer(1, 10, kernel_size=5)`;
        its instances have `.weight` and `reset_parameters()`.
    conv_init: "default" keeps the layer's own initialisation; "nn_conv2d" redraws the conv weights and
        biases as `nn.Conv2d` draws them (to judge a layer apart from its own init); "uniform01" redraws
        conv weights with `torch.rand`, all positive in [0, 1): a common first attempt in a hand-written
        layer, kept so users can see what it does to training.

    Each conv layer must hand back its input's dtype and device (outside autocast, which changes dtypes
    on purpose): otherwise the next layer fails with an error far from its cause, or a float64 run
    silently computes in float32. `forward` raises `LayerOutputError` naming the slot instead.
    """

    def __init__(self, conv_layer: type[nn.Module], conv_init: str = "default") -> None:
        super().__init__()
        if conv_init not in CONV_INITS:
            raise ValueError(f"conv_init must be one of {CONV_INITS}, got {conv_init!r}")
        self.conv_init = conv_init
        self.conv1 = conv_layer(1, 10, kernel_size=5)
        self.conv2 = conv_layer(10, 20, kernel_size=5)
        self.conv2_drop = nn.Dropout2d()
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, 10)
        self.fc1_drop = nn.Dropout()
        if conv_init != "default":
            self.reset_conv_parameters()

    def conv_layers(self) -> dict[str, nn.Module]:
        """The conv slots by name: {"conv1": layer, "conv2": layer}."""
        return {slot: getattr(self, slot) for slot in CONV_SLOTS}

    def reset_conv_parameters(self, slots: Iterable[str] = CONV_SLOTS) -> None:
        """Draw the weights and biases of the conv `slots` again from the distribution `conv_init` names,
        through each layer's own `reset_parameters()` (the global RNG: seed it, or fork it, first)."""
        layers = self.conv_layers()
        for slot in slots:
            conv = layers[slot]
            conv.reset_parameters()
            if self.conv_init == "nn_conv2d":
                nn_conv2d_init_(conv.weight, conv.bias)
            elif self.conv_init == "uniform01":
                with torch.no_grad():
                    conv.weight.copy_(torch.rand_like(conv.weight))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) -> log-probabilities (N, 10)."""
        x = F.relu(F.max_pool2d(self._conv("conv1", self.conv1, x), 2))  # (N, 10, 12, 12)
        x = F.relu(F.max_pool2d(self.conv2_drop(self._conv("conv2", self.conv2, x)), 2))  # (N, 20, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 50)
        x = self.fc2(self.fc1_drop(x))  # (N, 10)
        return F.log_softmax(x, dim=1)

    @staticmethod
    def _conv(slot: str, layer: nn.Module, x: Tensor) -> Tensor:
        out = layer(x)
        if out.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise LayerOutputError(
                f"{slot} ({type(layer).__name__}) returned {out.dtype} for a {x.dtype} input: the network "
                f"needs the input's dtype back. Likely cause: a tensor created inside forward without dtype= "
                f"(torch.zeros(shape) where torch.zeros(shape, dtype=x.dtype, device=x.device) was meant)."
            )
        if out.device != x.device:
            raise LayerOutputError(
                f"{slot} ({type(layer).__name__}) returned a tensor on {out.device} for an input on "
                f"{x.device}. Likely cause: a tensor created inside forward without device= "
                f"(e.g. torch.zeros(shape, dtype=x.dtype, device=x.device))."
            )
        return out
