"""The capability table: for each nn.Conv2d feature, does a layer pass, fail, or not support it?

A user's layer rarely takes nn.Conv2d's whole API. Each feature here is checked on one or a few tiny
configurations of its own (the full grid mixes features, so it cannot say which one a layer lacks):

    passes          every configuration's output and gradients match F.conv2d
    fails           a wrong number, dtype or shape on some configuration: a bug
    not supported   the layer refused the configuration or raised on it, with the exception

Only "fails" makes verify exit non-zero, unless it is run strict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from convlab.verify.cases import ConvCase, conv_case
from convlab.verify.checks import CheckResult, check_case, forward_only

PASSES, FAILS, UNSUPPORTED = "passes", "fails", "not supported"

# feature -> the configurations that exercise it (and, as far as possible, nothing else)
FEATURES: dict[str, tuple[ConvCase, ...]] = {
    "forward and backward": (conv_case((2, 2, 6, 6), 3, 3),),
    "stride": (conv_case((2, 2, 7, 7), 3, 3, stride=2),),
    "integer padding": (conv_case((2, 2, 5, 5), 3, 3, padding=1),),
    "non-square kernel and input": (conv_case((2, 2, 6, 6), 3, (2, 3)), conv_case((2, 2, 5, 7), 3, 3)),
    "dilation": (conv_case((2, 2, 7, 7), 3, 3, dilation=2),),
    "groups": (conv_case((2, 4, 6, 6), 4, 3, groups=2),),
    "padding modes": tuple(
        conv_case((2, 2, 6, 6), 3, 3, padding=1, padding_mode=mode)
        for mode in ("reflect", "replicate", "circular")
    ),
    "padding='same'/'valid'": (
        conv_case((2, 2, 6, 6), 3, 3, padding="same"),
        conv_case((2, 2, 6, 6), 3, 3, padding="valid"),
    ),
    "unbatched input": (conv_case((2, 6, 6), 3, 3),),
    "bias=False": (conv_case((2, 2, 6, 6), 3, 3, bias=False),),
    "empty batch": (conv_case((0, 2, 6, 6), 3, 3),),
}


@dataclass
class Capability:
    """One row: a feature, its status, and the first reason for it (the exception or the failing note)."""

    feature: str
    status: str
    detail: str = ""
    results: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status == FAILS


def summarise(feature: str, results: list[CheckResult]) -> Capability:
    """The worst status over the results: fails > not supported > passes."""
    for status, matches in ((FAILS, lambda r: r.failed), (UNSUPPORTED, lambda r: bool(r.unsupported))):
        chosen = [r for r in results if matches(r)]
        if chosen:
            first = chosen[0]
            detail = first.unsupported if status == UNSUPPORTED else "; ".join(first.notes())
            return Capability(feature, status, f"[{first.case.name}, {first.check}] {detail}", results)
    return Capability(feature, PASSES, "", results)


def capability_table(
    label: str,
    layer_cls: type[nn.Module],
    dtypes: list[torch.dtype],
    on_check: Callable[[str], None] = lambda description: None,
) -> list[Capability]:
    """One Capability per feature of FEATURES, each checked in every dtype of `dtypes`.

    on_check: called with a description before each check (a progress bar's hook).
    """
    table = []
    for feature, cases in FEATURES.items():
        results = []
        for case in cases:
            for dtype in dtypes:
                on_check(f"{label} [{feature}] {dtype}")
                results.append(check_case(label, layer_cls, case, dtype))
        table.append(summarise(feature, results))
    if forward_only(layer_cls):
        table.insert(
            1,
            Capability(
                "backward",
                UNSUPPORTED,
                "forward-only layer: NumPy code autograd cannot differentiate, and no backward function; "
                "the rows above judge its output only",
            ),
        )
    return table
