"""The reference MNIST network, built from any conv class.

`ReferenceNet` is the network of PyTorch's classic MNIST example (github.com/pytorch/examples,
mnist/main.py) with the two conv layers taken from the class given, so every implementation
trains in the same network with nothing else changed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CONV_INITS = ("default", "uniform01")


class ReferenceNet(nn.Module):
    """conv1 1->10 k5, pool, ReLU; conv2 10->20 k5, Dropout2d, pool, ReLU; fc1 320->50; fc2 50->10.

    conv_layer: a class with `nn.Conv2d`'s constructor (any value of `convlab.conv.CONV_LAYERS`).
    conv_init: "default" keeps the layer's own initialisation (that of `nn.Conv2d`);
        "uniform01" redraws conv weights with `torch.rand`, all positive in [0, 1): a common
        first attempt in a hand-written layer, kept so users can see what it does to training.
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
        if conv_init == "uniform01":
            self.reset_conv_parameters()

    def reset_conv_parameters(self) -> None:
        """Draw conv weights and biases again from the distribution `conv_init` names."""
        for conv in (self.conv1, self.conv2):
            conv.reset_parameters()
            if self.conv_init == "uniform01":
                with torch.no_grad():
                    conv.weight.copy_(torch.rand_like(conv.weight))

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, 28, 28) -> log-probabilities (N, 10)."""
        x = F.relu(F.max_pool2d(self.conv1(x), 2))  # (N, 10, 12, 12)
        x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))  # (N, 20, 4, 4)
        x = F.relu(self.fc1(x.flatten(1)))  # (N, 50)
        x = self.fc2(self.fc1_drop(x))  # (N, 10)
        return F.log_softmax(x, dim=1)
