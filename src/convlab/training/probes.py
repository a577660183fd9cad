"""Probes: what trains in a run, and what the run measures about its conv layers.

A probe freezes part of the network at its initial values (`requires_grad=False`, and
`LitClassifier` hands only trainable parameters to the optimiser):

    none         everything trains
    frozen_conv  conv layers stay at their random init: the FC layers do all the work
    frozen_fc    FC layers stay at their random init: only the conv layers learn

Measured in every run: whether frozen tensors are bit-identical to their start, the
relative weight drift ||W - W0|| / ||W0|| of each conv layer, and the accuracy of the
trained network with its conv weights re-drawn from their init distribution (all conv
layers at once, and each alone).

The conv layers are the network's named slots (`net.conv_layers()`, as `ReferenceNet` has), not
instances of known classes: a user's layer of any class is frozen and measured like a built-in one.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import Tensor, nn

PROBES = ("none", "frozen_conv", "frozen_fc")


def conv_layers(net: nn.Module) -> dict[str, nn.Module]:
    """The conv layers of `net` by slot name, e.g. {"conv1": ..., "conv2": ...}, from `net.conv_layers()`."""
    named = getattr(net, "conv_layers", None)
    if not callable(named):
        raise TypeError(
            f"{type(net).__name__} does not name its conv layers: probes need a network with a "
            f"conv_layers() method returning {{slot name: layer}} (as ReferenceNet has)"
        )
    return named()


def frozen_modules(net: nn.Module, probe: str) -> dict[str, nn.Module]:
    """The modules of `net` whose parameters `probe` freezes, by name."""
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; one of {list(PROBES)}")
    if probe == "frozen_conv":
        return conv_layers(net)
    if probe == "frozen_fc":
        # A Linear inside a user's conv layer is part of the conv, not of the FC head.
        inside_conv = tuple(f"{slot}." for slot in conv_layers(net))
        return {
            name: module
            for name, module in net.named_modules()
            if isinstance(module, nn.Linear) and not name.startswith(inside_conv)
        }
    return {}


def apply_probe(net: nn.Module, probe: str) -> list[str]:
    """Freeze the parameters `probe` names (in place); returns their names, e.g. ["conv1.weight", ...].

    A conv layer's parameters are all those under its slot, whatever the layer calls them
    (a user's `filter_weights` is frozen as `conv1.filter_weights`, or under the adapter's own name).
    """
    frozen = []
    for module_name, module in frozen_modules(net, probe).items():
        for param_name, param in module.named_parameters():
            param.requires_grad_(False)
            frozen.append(f"{module_name}.{param_name}")
    return frozen


def conv_weight(layer: nn.Module) -> Tensor:
    """The layer's weight (out, in/groups, kh, kw) as a detached CPU tensor (a NumPy array is converted)."""
    return torch.as_tensor(layer.weight).detach().cpu()


def snapshot_parameters(net: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of every parameter by name, and of each conv slot's weight as "<slot>.weight".

    The slot entries make drift measurable for any layer: a user's weight may be a parameter named
    otherwise, or a NumPy array that is no parameter at all.
    """
    snapshot = {name: p.detach().cpu().clone() for name, p in net.named_parameters()}
    if callable(getattr(net, "conv_layers", None)):
        for slot, layer in conv_layers(net).items():
            snapshot.setdefault(f"{slot}.weight", conv_weight(layer).clone())
    return snapshot


def frozen_unchanged(net: nn.Module, initial: dict[str, Tensor]) -> bool | None:
    """True if every frozen parameter is bit-identical to `initial`; None when nothing is frozen."""
    frozen = [(name, p) for name, p in net.named_parameters() if not p.requires_grad]
    if not frozen:
        return None
    return all(torch.equal(p.detach().cpu(), initial[name]) for name, p in frozen)


def conv_drift(net: nn.Module, initial: dict[str, Tensor]) -> dict[str, float]:
    """Per conv slot ||W - W0|| / ||W0|| of the weight (bias left out), e.g. {"conv1": 0.8, "conv2": 0.5}.

    initial: from `snapshot_parameters`, taken when training started.
    """
    drift = {}
    for name, layer in conv_layers(net).items():
        w0 = initial[f"{name}.weight"]
        w = conv_weight(layer).to(w0.dtype)
        drift[name] = ((w - w0).norm() / w0.norm()).item()
    return drift


def redrawn_conv_copy(net: nn.Module, seed: int, slots: Iterable[str] | None = None) -> nn.Module:
    """A CPU deep copy of `net` with its conv `slots` (default: all) drawn again from their init distribution.

    `net` must have `reset_conv_parameters(slots)` (as `ReferenceNet` does), which knows the
    distribution the run started from and resets each layer through its own `reset_parameters()`.
    The draw uses its own RNG stream seeded with `seed` and leaves the global one untouched, so the
    ablation is reproducible and changes nothing else.
    """
    redrawn = copy.deepcopy(net).cpu()
    chosen = list(conv_layers(net)) if slots is None else list(slots)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        redrawn.reset_conv_parameters(chosen)
    return redrawn
