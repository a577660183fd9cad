"""Probes: what trains in a run, and what the run measures about its conv layers.

A probe freezes part of the network at its initial values (`requires_grad=False`, and
`LitClassifier` hands only trainable parameters to the optimiser):

    none         everything trains
    frozen_conv  conv layers stay at their random init: the FC layers do all the work
    frozen_fc    FC layers stay at their random init: only the conv layers learn

Measured in every run: whether frozen tensors are bit-identical to their start, the
relative weight drift ||W - W0|| / ||W0|| of each conv layer, and the accuracy of the
trained network with its conv weights re-drawn from their init distribution.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from convlab.conv import CONV_LAYERS

PROBES = ("none", "frozen_conv", "frozen_fc")


def conv_layers(net: nn.Module) -> dict[str, nn.Module]:
    """The conv layers of `net` by module name: instances of any class in `CONV_LAYERS`."""
    conv_types = tuple(CONV_LAYERS.values())
    return {name: module for name, module in net.named_modules() if isinstance(module, conv_types)}


def frozen_module_types(probe: str) -> tuple[type[nn.Module], ...]:
    """The module classes whose parameters `probe` freezes."""
    # Built at call time so that a conv class registered after import (a user's own) counts too.
    frozen = {"none": (), "frozen_conv": tuple(CONV_LAYERS.values()), "frozen_fc": (nn.Linear,)}
    if probe not in frozen:
        raise ValueError(f"unknown probe {probe!r}; one of {list(PROBES)}")
    return frozen[probe]


def apply_probe(net: nn.Module, probe: str) -> list[str]:
    """Freeze the parameters `probe` names (in place); returns their names, e.g. ["conv1.weight", ...]."""
    frozen_types = frozen_module_types(probe)
    frozen = []
    for module_name, module in net.named_modules():
        if frozen_types and isinstance(module, frozen_types):
            for param_name, param in module.named_parameters(recurse=False):
                param.requires_grad_(False)
                frozen.append(f"{module_name}.{param_name}")
    return frozen


def snapshot_parameters(net: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of every parameter, by name."""
    return {name: p.detach().cpu().clone() for name, p in net.named_parameters()}


def frozen_unchanged(net: nn.Module, initial: dict[str, Tensor]) -> bool | None:
    """True if every frozen parameter is bit-identical to `initial`; None when nothing is frozen."""
    frozen = [(name, p) for name, p in net.named_parameters() if not p.requires_grad]
    if not frozen:
        return None
    return all(torch.equal(p.detach().cpu(), initial[name]) for name, p in frozen)


def conv_drift(net: nn.Module, initial: dict[str, Tensor]) -> dict[str, float]:
    """Per conv layer ||W - W0|| / ||W0|| of the weight (bias left out), e.g. {"conv1": 0.8, "conv2": 0.5}."""
    drift = {}
    for name, layer in conv_layers(net).items():
        w0 = initial[f"{name}.weight"]
        w = layer.weight.detach().cpu()
        drift[name] = ((w - w0).norm() / w0.norm()).item()
    return drift


def redrawn_conv_copy(net: nn.Module, seed: int) -> nn.Module:
    """A CPU deep copy of `net` whose conv weights and biases are drawn again from their init distribution.

    `net` must have `reset_conv_parameters()` (as `ReferenceNet` does), which knows the
    distribution the run started from. The draw uses its own RNG stream seeded with `seed`
    and leaves the global one untouched, so the ablation is reproducible and changes nothing else.
    """
    redrawn = copy.deepcopy(net).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        redrawn.reset_conv_parameters()
    return redrawn
