"""Conv2d implementations, all drop-ins for `nn.Conv2d`, selected by name or by spec.

`CONV_LAYERS` maps the name used everywhere (configs, verify, bench, report,
README) to the class. `torch` is `nn.Conv2d` itself, the reference. Wherever a
name is accepted a spec is too (`convlab.conv.spec`): `package.module:Class`,
`path/to/file.py:Class`, `path/to/file.py:forward_fn[,backward_fn]`, resolved by
`resolve_conv` to a class with `nn.Conv2d`'s constructor (`convlab.conv.adapter`
presents a user's layer with nn.Conv2d's face) and labelled by `conv_label`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from convlab.conv.base import Conv2dBase
from convlab.conv.errors import SpecError, UnsupportedFeature
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

from convlab.conv.spec import conv_label, resolve_conv  # noqa: E402  (the spec module reads CONV_LAYERS)


def get_conv(spec: Any) -> type[nn.Module]:
    """`resolve_conv(spec)`; for a bare name that is not registered, a KeyError listing the valid names."""
    bare = isinstance(spec, str) and ":" not in spec and not spec.strip().endswith(".py")
    if bare and spec.strip() not in CONV_LAYERS:
        raise KeyError(f"unknown conv implementation {spec!r}; registered: {sorted(CONV_LAYERS)}")
    return resolve_conv(spec)


__all__ = [
    "CONV_LAYERS",
    "Conv2dBase",
    "SpecError",
    "UnsupportedFeature",
    "conv_label",
    "get_conv",
    "resolve_conv",
]
