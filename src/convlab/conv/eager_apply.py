"""`apply(Function, *args)`: a `torch.autograd.Function` in the form torch.func needs, at the cost of
the classic form where no transform is active.

Why: a Function written with a separate `setup_context` (the form torch.func's transforms require:
vmap, grad, jvp, jacrev, per-sample gradients) has its arguments bound to `forward`'s signature by
`inspect` on every call; the classic `forward(ctx, ...)` form has no such step. For a small layer,
whose kernels take microseconds, that binding is a visible share of each call (`make bench` shows
the layers' time per call against `nn.Conv2d`).

So each such Function gets a twin in the classic form, made from it (nothing is written twice):
`forward(ctx, *args)` runs the Function's `forward`, then its `setup_context` on the same ctx; the
twin's `backward` and `jvp` are the Function's own. Outside transforms the twin runs (autograd of
any order and forward-mode AD behave identically: same ctx, same formulas). Under a torch.func
transform PyTorch refuses a classic-form Function before running it, with an error that names
`setup_context`; `apply` then calls the Function itself, whose `vmap` rule and `setup_context`
the transform uses. Any other error is raised as it is.
"""

from __future__ import annotations

from typing import Any

import torch

# What PyTorch's refusal of a classic-form Function under a torch.func transform says.
REFUSAL = "setup_context"

_TWINS: dict[type, type] = {}


def classic_twin(function: type[torch.autograd.Function]) -> type[torch.autograd.Function]:
    """The classic-form twin of a Function that defines `forward` without ctx and `setup_context`."""
    twin = _TWINS.get(function)
    if twin is None:

        def forward(ctx, *args: Any) -> Any:
            output = function.forward(*args)
            function.setup_context(ctx, args, output)
            return output

        namespace = {"forward": staticmethod(forward), "backward": staticmethod(function.backward)}
        if function.jvp is not torch.autograd.Function.jvp:
            namespace["jvp"] = staticmethod(function.jvp)
        twin = _TWINS[function] = type(f"{function.__name__}Classic", (torch.autograd.Function,), namespace)
    return twin


def apply(function: type[torch.autograd.Function], *args: Any) -> Any:
    """`function.apply(*args)`, through its classic twin where no torch.func transform is active."""
    try:
        return classic_twin(function).apply(*args)
    except RuntimeError as error:
        if REFUSAL not in str(error):
            raise
    return function.apply(*args)
