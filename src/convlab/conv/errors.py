"""The two errors a user's layer spec can meet: it cannot be resolved, or the layer lacks a feature.

Both are ordinary built-in exception types underneath (ValueError, NotImplementedError), so callers that
know nothing of convlab still catch them sensibly.
"""

from __future__ import annotations


class SpecError(ValueError):
    """A layer spec that cannot be resolved to a usable class: one message saying what and how to fix it."""


class UnsupportedFeature(NotImplementedError):
    """A user's layer asked for an nn.Conv2d feature it does not take (e.g. dilation=2).

    feature: the feature's short name ("dilation", "groups", "bias=False", ...), for tables.
    Not a failure of the layer: a tool reports it as "not supported".
    """

    def __init__(self, feature: str, message: str) -> None:
        super().__init__(message)
        self.feature = feature
