"""Conv2d implementations, all drop-ins for `nn.Conv2d`, selected by name.

`CONV_LAYERS` maps the name used everywhere (configs, verify, bench, report,
README) to the class. `torch` is `nn.Conv2d` itself, the reference.
"""

from __future__ import annotations

from torch import nn

from convlab.conv.base import Conv2dBase
from convlab.conv.fast import FastConv2d
from convlab.conv.manual import ManualConv2d
from convlab.conv.native.layer import NativeConv2d
from convlab.conv.numpy import NumpyConv2d
from convlab.conv.unfold import UnfoldConv2d
from convlab.conv.vanilla import VanillaConv2d

CONV_LAYERS: dict[str, type[nn.Module]] = {
    "vanilla": VanillaConv2d,
    "unfold": UnfoldConv2d,
    "manual": ManualConv2d,
    "fast": FastConv2d,
    "native": NativeConv2d,
    "numpy": NumpyConv2d,
    "torch": nn.Conv2d,
}


def get_conv(name: str) -> type[nn.Module]:
    """The registered class for `name`; a KeyError that lists the valid names otherwise."""
    try:
        return CONV_LAYERS[name]
    except KeyError:
        raise KeyError(f"unknown conv implementation {name!r}; registered: {sorted(CONV_LAYERS)}") from None


__all__ = ["CONV_LAYERS", "Conv2dBase", "get_conv"]
