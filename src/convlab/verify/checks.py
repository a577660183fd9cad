"""The two checks `python -m convlab.verify` runs on a layer class for one configuration.

`check_case`: forward and backward in float64 or float32 against F.conv2d in float64,
output and the gradients of input, weight and bias, judged by `convlab.verify.tolerance`.
`gradcheck_case`: `torch.autograd.gradcheck` in float64, the layer's analytical
gradients against finite differences of its own forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from convlab.verify.cases import ConvCase, random_tensors, reference_conv
from convlab.verify.tolerance import Comparison, compare, dtype_name, tolerance

TENSORS = ("out", "dx", "dW", "db")
GRADCHECK_TOLERANCE = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}  # gradcheck's own defaults


@dataclass
class CheckResult:
    """One check of one layer on one case; `check` is a dtype name or 'gradcheck'."""

    impl: str
    case: ConvCase
    check: str
    tolerance: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # by tensor name, see TENSORS
    problem: str = ""  # an exception, a missing gradient or a wrong dtype: fails the check

    @property
    def passed(self) -> bool:
        return not self.problem and all(c.passed for c in self.comparisons.values())

    def notes(self) -> list[str]:
        """Why it failed: the problem, then one line per reason naming the tensors it applies to."""
        by_note: dict[str, list[str]] = {}
        for name, c in self.comparisons.items():
            if not c.passed:
                by_note.setdefault(c.note, []).append(name)
        notes = [self.problem] if self.problem else []
        return notes + [f"{', '.join(names)}: {note}" for note, names in by_note.items()]

    def worst_fraction_of_tolerance(self) -> float:
        """max over tensors of rel / rtol: how much of the tolerance the errors use (0 for gradcheck)."""
        return max((c.max_rel / c.rtol for c in self.comparisons.values()), default=0.0)


def _run_layer(
    layer_cls: type[nn.Module], case: ConvCase, tensors: dict[str, Tensor | None]
) -> dict[str, Tensor | None]:
    """Forward + backward of a fresh layer with the case's weights: out and the three gradients."""
    dtype = tensors["x"].dtype
    layer = layer_cls(**case.conv_kwargs(), dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(tensors["weight"])
        if tensors["bias"] is not None:
            layer.bias.copy_(tensors["bias"])
    x = tensors["x"].detach().clone().requires_grad_()
    out = layer(x)
    out.backward(tensors["grad_out"].to(out.dtype))
    db = layer.bias.grad if layer.bias is not None else None
    return {"out": out.detach(), "dx": x.grad, "dW": layer.weight.grad, "db": db}


def _float64_leaf(t: Tensor) -> Tensor:
    return t.detach().to(torch.float64, copy=True).requires_grad_()


def _reference(case: ConvCase, tensors: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    """The same forward + backward with F.conv2d, on float64 copies of the same values."""
    x, weight = (_float64_leaf(tensors[k]) for k in ("x", "weight"))
    bias = None if tensors["bias"] is None else _float64_leaf(tensors["bias"])
    out = reference_conv(case, x, weight, bias)
    out.backward(tensors["grad_out"].double())
    return {"out": out.detach(), "dx": x.grad, "dW": weight.grad, "db": None if bias is None else bias.grad}


def _wrong_dtypes(results: dict[str, Tensor | None], dtype: torch.dtype) -> list[str]:
    return [
        f"{k} is {dtype_name(t.dtype)}, not {dtype_name(dtype)}"
        for k, t in results.items()
        if t is not None and t.dtype != dtype
    ]


def check_case(
    impl: str,
    layer_cls: type[nn.Module],
    case: ConvCase,
    dtype: torch.dtype,
    judged_at: torch.dtype | None = None,
) -> CheckResult:
    """Run `layer_cls` on `case` in `dtype`; compare out, dx, dW, db with the float64 reference.

    judged_at: the dtype whose tolerance applies (default `dtype`); float64 on a float32
    run reproduces the np.allclose trap, which the comparison notes then explain.
    """
    judged_at = judged_at or dtype
    reduction = case.reduction()
    tensors = random_tensors(case, dtype)
    result = CheckResult(impl, case, dtype_name(dtype), tolerance=f"{tolerance(judged_at, reduction):.1e}")
    expected = _reference(case, tensors)
    try:
        actual = _run_layer(layer_cls, case, tensors)
    except Exception as error:  # a broken layer is a failed check, reported, not a crash of the tool
        result.problem = f"raised {type(error).__name__}: {error}"
        return result
    missing = [name for name in TENSORS if expected[name] is not None and actual[name] is None]
    for name in TENSORS:
        if expected[name] is not None and actual[name] is not None:
            result.comparisons[name] = compare(actual[name], expected[name], reduction, judged_at)
    problems = [f"no gradient for {name}" for name in missing] + _wrong_dtypes(actual, dtype)
    result.problem = "; ".join(problems)
    return result


def gradcheck_case(impl: str, layer_cls: type[nn.Module], case: ConvCase) -> CheckResult:
    """torch.autograd.gradcheck of the layer in float64, with respect to input, weight and bias."""
    described = f"atol={GRADCHECK_TOLERANCE['atol']:g} rtol={GRADCHECK_TOLERANCE['rtol']:g}"
    result = CheckResult(impl, case, "gradcheck", tolerance=described)
    tensors = random_tensors(case, torch.float64)
    names = ["weight"] + (["bias"] if tensors["bias"] is not None else [])
    try:
        layer = layer_cls(**case.conv_kwargs(), dtype=torch.float64)
        inputs = tuple(_float64_leaf(tensors[k]) for k in ["x", *names])

        def layer_of(x: Tensor, *params: Tensor) -> Tensor:
            return functional_call(layer, dict(zip(names, params, strict=True)), (x,))

        torch.autograd.gradcheck(layer_of, inputs, **GRADCHECK_TOLERANCE)
    except Exception as error:  # gradcheck raises GradcheckError with the mismatching Jacobians
        first_line = str(error).splitlines()[0].rstrip(",")
        for index, name in enumerate(["x", *names]):
            first_line = first_line.replace(f"input {index}", f"input {index} ({name})")
        result.problem = f"gradcheck: {type(error).__name__}: {first_line}"
    return result
