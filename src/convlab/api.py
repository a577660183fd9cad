"""The notebook API: `convlab.check(layer)` and `convlab.lockstep(layer, steps=10)`.

Learners write layers in Jupyter. Both functions take the layer as it is: a class (an nn.Module, or a
NumPy class with `forward`), an instance (its class is checked), a forward function (its backward found
by name in the same namespace) or a (forward, backward) pair, or any spec string the command-line tools
take. Both return their results as data, rendered as tables in Jupyter (`_repr_html_`,
`_repr_markdown_`) and as text by `print`.

    import convlab
    result = convlab.check(VanillaConv2d)        # capability table, diagnoses, cost
    result.passed, result.capability("stride").status
    convlab.lockstep(VanillaConv2d, steps=10)    # trained side by side with nn.Conv2d

The does-it-learn sweep runs in its own processes, which cannot see a notebook's namespace: save the
class to a file (e.g. `%%writefile my_conv.py` in Jupyter) and name it by its spec, my_conv.py:MyConv,
in the sweep's command line.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from convlab.conv import conv_label, resolve_conv
from convlab.verify.layer_check import LayerCheck, check_layer
from convlab.verify.tolerance import DTYPES


def _dtypes(dtype: str | torch.dtype | Sequence[str | torch.dtype] | None) -> list[torch.dtype]:
    if dtype is None:
        return list(DTYPES.values())
    chosen = [dtype] if isinstance(dtype, (str, torch.dtype)) else list(dtype)
    dtypes = []
    for d in chosen:
        if isinstance(d, str):
            if d not in DTYPES:
                raise ValueError(f"dtype {d!r}: expected one of {list(DTYPES)}")
            d = DTYPES[d]
        if d not in DTYPES.values():
            raise ValueError(f"dtype {d}: expected one of {list(DTYPES)}")
        dtypes.append(d)
    return dtypes


def check(
    layer: Any,
    *,
    dtype: str | torch.dtype | Sequence[str | torch.dtype] | None = None,
    quick: bool = True,
    weight: str | None = None,
    bias: str | None = None,
    strict: bool = False,
    compile: bool = False,
    cost: bool = True,
) -> LayerCheck:
    """Verify `layer` against F.conv2d: what `python -m convlab.verify SPEC` prints, as data.

    dtype: "float32", "float64", a torch dtype or a list of them (default both).
    quick: the short configuration grid (default; the capability table is complete either way).
    weight / bias: the layer's parameter (or NumPy attribute) names, when finding them by shape is
        ambiguous. strict: unsupported features count as failures. compile: add the torch.compile row
        (its first use costs seconds to minutes). cost: time forward+backward at a few batch sizes.
    Returns a LayerCheck: `.passed`, `.capabilities`, `.diagnoses`, `.results`, `.cost`, `.table()`.
    Raises convlab.conv.SpecError when the layer cannot be used at all (the message says why).
    """
    return check_layer(
        layer,
        dtypes=_dtypes(dtype),
        quick=quick,
        weight=weight,
        bias=bias,
        strict=strict,
        compile=compile,
        cost=cost,
    )


@dataclass
class LockstepResult:
    """A lockstep run as data: per-step relative differences, the tolerance, the verdict and notes.

    steps: `convlab.verify.lockstep.StepResult`s, one per SGD step taken. error: why the run stopped
    early (a layer output of the wrong dtype, networks that cannot be set up alike), or ''.
    """

    label: str
    tolerance: float
    steps: list[Any] = field(default_factory=list)
    error: str = ""
    divergence: int | None = None

    @property
    def passed(self) -> bool:
        return not self.error and all(s.passed(self.tolerance) for s in self.steps)

    @property
    def left_at(self) -> int | None:
        """The first judged step whose difference exceeds the tolerance, or None."""
        return next((s.step for s in self.steps if not s.passed(self.tolerance)), None)

    def verdict(self) -> str:
        if self.error:
            return f"{self.label}: FAIL, {self.error}"
        if not self.passed:
            return f"{self.label}: FAIL, left nn.Conv2d's trajectory at step {self.left_at}"
        text = (
            f"{self.label}: PASS, {len(self.steps)} steps within {self.tolerance:g} (relative) of nn.Conv2d"
        )
        if self.divergence is not None:
            text += f"; both networks diverge from step {self.divergence}: the init or learning rate, "
            text += "not the layer"
        return text

    def rows(self) -> list[list[str]]:
        """One row per step: step, loss, reference loss, relative loss / gradient / worst parameter diff."""
        return [
            [
                str(s.step),
                f"{s.loss:.6g}",
                f"{s.reference_loss:.6g}",
                f"{s.loss_diff:.1e}",
                f"{s.grad_diff:.1e}",
                f"{max(s.param_diff.values()):.1e}",
                "-" if not s.judged else "yes" if s.passed(self.tolerance) else "NO",
            ]
            for s in self.steps
        ]

    HEADER = ("step", "loss", "nn.Conv2d loss", "Δloss", "Δgrad", "Δparam", "ok")

    def __str__(self) -> str:
        lines = ["  ".join(f"{h:>14}" for h in self.HEADER)] if self.steps else []
        lines += ["  ".join(f"{c:>14}" for c in row) for row in self.rows()]
        return "\n".join([*lines, self.verdict()])

    def __repr__(self) -> str:
        return f"<LockstepResult {self.verdict()}>"

    def _repr_markdown_(self) -> str:
        from convlab.markdown import markdown_table

        return f"**{self.verdict()}**\n\n" + markdown_table(list(self.HEADER), self.rows())

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.HEADER)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows()
        )
        table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
        return f"<p><b>{html.escape(self.verdict())}</b></p>{table}"


def lockstep(
    layer: Any,
    steps: int = 10,
    *,
    batch_size: int = 4,
    data: str = "mnist",
    dtype: str | torch.dtype = "float64",
    tolerance: float | None = None,
    lr: float = 0.01,
    momentum: float = 0.5,
    seed: int = 0,
    init: str = "reference",
    weight: str | None = None,
    bias: str | None = None,
) -> LockstepResult:
    """Train the layer and nn.Conv2d side by side for `steps` SGD steps (`convlab.verify.lockstep`).

    data: "mnist" (or another dataset name; the mirror $CONVLAB_DATA_MIRROR or a download) or "random"
    (Gaussian images, no files). tolerance: the relative rule's bound (default per dtype). init:
    "reference" starts both from nn.Conv2d's init, "layer" from the layer's own.
    Returns a LockstepResult; a layer that stops the run (e.g. a float32 output in a float64 run) is a
    failed result with the reason, not an exception.
    """
    from convlab.training.network import LayerOutputError
    from convlab.verify import lockstep as runner

    (torch_dtype,) = _dtypes(dtype)
    layer_class = resolve_conv(layer, weight=weight, bias=bias)
    bound = runner.TOLERANCE[torch_dtype] if tolerance is None else tolerance
    if data == "random":
        batches = runner.random_batches(batch_size, steps, seed)
    else:
        batches = runner.mnist_batches(data, batch_size, steps, seed)
    result = LockstepResult(conv_label(layer), bound)
    try:
        for step in runner.run_lockstep(layer_class, batches, lr, momentum, torch_dtype, seed, init):
            result.steps.append(step)
    except (LayerOutputError, runner.LockstepError) as error:
        result.error = str(error)
    result.divergence = runner.divergence_step(result.steps)
    return result
