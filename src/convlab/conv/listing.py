"""The registered layers as a table: `python -m convlab.conv`.

Each row comes from the layer itself: its registered name, its class, and the summary line of the
module that defines it (written as "`name`: what it is", the name dropped here), so the table in the
README cannot drift from the code. `torch` is `nn.Conv2d`, whose docstring is PyTorch's: its line
says what it is here, the reference.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from torch import nn

from convlab.conv import CONV_LAYERS
from convlab.markdown import markdown_table

REFERENCE = "`torch.nn.Conv2d` itself, the reference every other layer is checked and timed against"
SRC = Path(__file__).resolve().parents[2]  # the folder that holds the convlab package


def summary(name: str, layer: type[nn.Module]) -> str:
    """What the layer is, in one line: its module docstring's first line without the "`name`: " prefix.
    ValueError if the module has no such line (every registered layer's module must say what it is)."""
    if layer is nn.Conv2d:
        return REFERENCE
    first = next(iter((inspect.getmodule(layer).__doc__ or "").strip().splitlines()), "")
    prefix = f"`{name}`: "
    if not first.startswith(prefix):
        raise ValueError(
            f"{layer.__module__}: its docstring must open with {prefix!r} and what the layer is, "
            f"got {first!r}"
        )
    return first[len(prefix) :].rstrip(".")


def source(layer: type[nn.Module]) -> str:
    """Where the class is defined, relative to the source tree (src/convlab/...), or its module for torch."""
    path = Path(inspect.getfile(layer)).resolve()
    if path.is_relative_to(SRC):
        return f"`src/{path.relative_to(SRC)}`"
    return f"`{layer.__module__}`"


def rows() -> list[list[str]]:
    """One row per registered layer, in registry order: name, class, what it is, where it is defined."""
    return [
        [f"`{name}`", f"`{layer.__name__}`", summary(name, layer), source(layer)]
        for name, layer in CONV_LAYERS.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convlab.conv",
        description="The registered conv layers: the names configs, verify, bench and lockstep accept.",
        epilog="Any of these names, or a spec of your own layer (path/to/file.py:Class, "
        "package.module:Class), is accepted wherever a layer is named.",
    )
    parser.parse_args(argv)
    print(markdown_table(["name", "class", "what it is", "defined in"], rows()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
