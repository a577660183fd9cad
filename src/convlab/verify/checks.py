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
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call
from torch.nn.modules.utils import _pair

from convlab.conv.adapter import Conv2dFace, FunctionAdapter, NumpyAdapter
from convlab.conv.errors import UnsupportedFeature
from convlab.verify.cases import ConvCase, random_tensors, reference_conv
from convlab.verify.tolerance import Comparison, compare, dtype_name, tolerance

TENSORS = ("out", "dx", "dW", "db")
GRADCHECK_TOLERANCE = {"eps": 1e-6, "atol": 1e-5, "rtol": 1e-3}  # gradcheck's own defaults


@dataclass
class CheckResult:
    """One check of one layer on one case; `check` is a dtype name or 'gradcheck'.

    problem: an exception, a missing gradient, a wrong dtype or shape: fails the check.
    unsupported: the layer does not take this configuration (it refused it, or its forward or backward
        raised on it): not a failure unless the caller is strict.
    """

    impl: str
    case: ConvCase
    check: str
    tolerance: str
    comparisons: dict[str, Comparison] = field(default_factory=dict)  # by tensor name, see TENSORS
    problem: str = ""
    unsupported: str = ""

    @property
    def passed(self) -> bool:
        return not self.problem and not self.unsupported and all(c.passed for c in self.comparisons.values())

    @property
    def failed(self) -> bool:
        return not self.passed and not self.unsupported

    def notes(self) -> list[str]:
        """Why it failed: the problem, then one line per reason naming the tensors it applies to."""
        if self.unsupported:
            return [f"not supported: {self.unsupported}"]
        by_note: dict[str, list[str]] = {}
        for name, c in self.comparisons.items():
            if not c.passed:
                by_note.setdefault(c.note, []).append(name)
        notes = [self.problem] if self.problem else []
        return notes + [f"{', '.join(names)}: {note}" for note, names in by_note.items()]

    def worst_fraction_of_tolerance(self) -> float:
        """max over tensors of rel / rtol: how much of the tolerance the errors use (0 for gradcheck)."""
        return max((c.max_rel / c.rtol for c in self.comparisons.values()), default=0.0)


class LayerRaised(Exception):
    """The layer raised while being built, run forward or backward: `stage` says which."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(f"{stage} raised {type(error).__name__}: {first_line(error)}")
        self.stage, self.error = stage, error


class WrongOutputShape(Exception):
    """The layer's output shape differs from F.conv2d's: a wrong result, whatever the values."""


INPLACE_MESSAGE = "modified by an inplace operation"
INPLACE_HINT = (
    "an in-place write to a tensor autograd saved for backward (x += ..., x[...] = ..., a ReLU(inplace=True) "
    "on it): write into a new tensor, or clone() before modifying"
)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def takes_full_api(layer_cls: type[nn.Module]) -> bool:
    """Whether the layer claims nn.Conv2d's whole API (a raise is then a failure, not 'not supported')."""
    return not issubclass(layer_cls, Conv2dFace)


def expected_shape_text(case: ConvCase, got: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """'output shape (2, 4, 6, 6), expected (2, 4, 3, 3): H_out = ...' with the case's own numbers."""
    kw = case.conv_kwargs()
    (kh, kw_), (sh, sw), (dh, dw) = _pair(kw["kernel_size"]), _pair(kw["stride"]), _pair(kw["dilation"])
    h, w = case.input_shape[-2:]
    if kw["padding"] == "same":
        formula = "padding='same' keeps H_out = H and W_out = W"
    else:
        ph, pw = (0, 0) if kw["padding"] == "valid" else _pair(kw["padding"])
        formula = (
            "H_out = (H + 2*padding - dilation*(kernel-1) - 1) // stride + 1 = "
            f"({h} + 2*{ph} - {dh}*({kh}-1) - 1) // {sh} + 1 = {expected[-2]}, "
            f"W_out = ({w} + 2*{pw} - {dw}*({kw_}-1) - 1) // {sw} + 1 = {expected[-1]}"
        )
    return f"wrong output shape {tuple(got)}, expected {tuple(expected)}: {formula}"


def _run_layer(
    layer_cls: type[nn.Module], case: ConvCase, tensors: dict[str, Tensor | None]
) -> dict[str, Tensor | None]:
    """Forward + backward of a fresh layer with the case's weights: out and the three gradients.

    The weights go in through the layer's `.weight` / `.bias` (an adapter maps them onto the user's own
    names), so the layer's own init plays no part. Raises LayerRaised (with the stage) or WrongOutputShape.
    """
    dtype = tensors["x"].dtype
    try:
        layer = layer_cls(**case.conv_kwargs(), dtype=dtype)
    except Exception as error:
        raise LayerRaised("constructing it", error) from error
    if tensors["bias"] is not None and getattr(layer, "bias", None) is None:
        raise LayerRaised("constructing it", UnsupportedFeature("bias", "the layer has no bias parameter"))
    with torch.no_grad():
        layer.weight.copy_(tensors["weight"])
        if tensors["bias"] is not None:
            layer.bias.copy_(tensors["bias"])
    x = tensors["x"].detach().clone().requires_grad_()
    try:
        out = layer(x)
    except Exception as error:
        raise LayerRaised("forward", error) from error
    if not isinstance(out, Tensor):
        raise WrongOutputShape(f"forward returned a {type(out).__name__}, not a tensor")
    if out.shape != tensors["grad_out"].shape:
        raise WrongOutputShape(expected_shape_text(case, tuple(out.shape), tuple(tensors["grad_out"].shape)))
    if forward_only(layer_cls):
        return {"out": out.detach(), "dx": None, "dW": None, "db": None}
    try:
        out.backward(tensors["grad_out"].to(out.dtype))
    except Exception as error:
        raise LayerRaised("backward", error) from error
    db = layer.bias.grad if layer.bias is not None else None
    return {"out": out.detach(), "dx": x.grad, "dW": layer.weight.grad, "db": db}


def forward_only(layer_cls: type[nn.Module]) -> bool:
    """A NumPy class, or a forward function without a backward: only its output can be checked."""
    return issubclass(layer_cls, NumpyAdapter) or (
        issubclass(layer_cls, FunctionAdapter) and layer_cls.backward_fn is None
    )


def float64_leaf(t: Tensor) -> Tensor:
    """A float64 copy of `t` that is a leaf requiring grad (never `t` itself, even when `t` is float64)."""
    return t.detach().to(torch.float64, copy=True).requires_grad_()


def _reference(case: ConvCase, tensors: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    """The same forward + backward with F.conv2d, on float64 copies of the same values."""
    x, weight = (float64_leaf(tensors[k]) for k in ("x", "weight"))
    bias = None if tensors["bias"] is None else float64_leaf(tensors["bias"])
    out = reference_conv(case, x, weight, bias)
    out.backward(tensors["grad_out"].double())
    return {"out": out.detach(), "dx": x.grad, "dW": weight.grad, "db": None if bias is None else bias.grad}


def _wrong_dtypes(results: dict[str, Tensor | None], dtype: torch.dtype) -> list[str]:
    return [
        f"{k} is {dtype_name(t.dtype)}, not {dtype_name(dtype)}"
        for k, t in results.items()
        if t is not None and t.dtype != dtype
    ]


def classify(raised: LayerRaised, full_api: bool) -> tuple[str, str]:
    """(problem, unsupported) for a layer that raised: one of the two is ''.

    A refusal (UnsupportedFeature) is always 'not supported'. A layer claiming nn.Conv2d's whole API
    fails when it raises; a user's layer raising on a configuration does not support it, except for
    an in-place write autograd rejects, which breaks training on every configuration: a failure.
    """
    text = str(raised)
    if isinstance(raised.error, UnsupportedFeature):
        return "", text
    if INPLACE_MESSAGE in str(raised.error):
        return f"{text} ({INPLACE_HINT})", ""
    return (text, "") if full_api else ("", text)


def check_case(
    impl: str,
    layer_cls: type[nn.Module],
    case: ConvCase,
    dtype: torch.dtype,
    judged_at: torch.dtype | None = None,
    full_api: bool | None = None,
) -> CheckResult:
    """Run `layer_cls` on `case` in `dtype`; compare out, dx, dW, db with the float64 reference.

    judged_at: the dtype whose tolerance applies (default `dtype`); float64 on a float32
    run reproduces the np.allclose trap, which the comparison notes then explain.
    full_api: whether a raise is a failure (default: unless the class is an adapter of a user's layer).
    """
    judged_at = judged_at or dtype
    full_api = takes_full_api(layer_cls) if full_api is None else full_api
    reduction = case.reduction()
    tensors = random_tensors(case, dtype)
    result = CheckResult(impl, case, dtype_name(dtype), tolerance=f"{tolerance(judged_at, reduction):.1e}")
    expected = _reference(case, tensors)
    try:
        actual = _run_layer(layer_cls, case, tensors)
    except WrongOutputShape as error:
        result.problem = str(error)
        return result
    except LayerRaised as raised:  # a broken layer is a reported check, not a crash of the tool
        result.problem, result.unsupported = classify(raised, full_api)
        return result
    if forward_only(layer_cls):  # said so in the check's name; its gradients are not missing, absent
        result.check += " (forward only)"
        expected = {name: t if name == "out" else None for name, t in expected.items()}
    missing = [name for name in TENSORS if expected[name] is not None and actual[name] is None]
    for name in TENSORS:
        if expected[name] is not None and actual[name] is not None:
            result.comparisons[name] = compare(actual[name], expected[name], reduction, judged_at)
    problems = [f"no gradient for {name}" for name in missing] + _wrong_dtypes(actual, dtype)
    result.problem = "; ".join(problems)
    return result


def gradcheck_case(
    impl: str, layer_cls: type[nn.Module], case: ConvCase, full_api: bool | None = None
) -> CheckResult:
    """torch.autograd.gradcheck of the layer in float64, with respect to input, weight and bias.

    full_api: as in `check_case`; a layer that raises outside gradcheck's own comparison (it cannot be
    built for the case, or its backward refuses) is then 'not supported' rather than failed.
    """
    full_api = takes_full_api(layer_cls) if full_api is None else full_api
    described = f"atol={GRADCHECK_TOLERANCE['atol']:g} rtol={GRADCHECK_TOLERANCE['rtol']:g}"
    result = CheckResult(impl, case, "gradcheck", tolerance=described)
    tensors = random_tensors(case, torch.float64)
    roles = ["weight"] + (["bias"] if tensors["bias"] is not None else [])
    try:
        layer = layer_cls(**case.conv_kwargs(), dtype=torch.float64)
    except Exception as error:
        result.problem, result.unsupported = classify(LayerRaised("constructing it", error), full_api)
        return result
    # The parameters' own names in the module (an adapter keeps a user's under theirs, e.g. layer.kernel).
    path_of = {id(p): name for name, p in layer.named_parameters()}
    names = [path_of[id(getattr(layer, role))] for role in roles]
    inputs = tuple(float64_leaf(tensors[k]) for k in ["x", *roles])

    def layer_of(x: Tensor, *params: Tensor) -> Tensor:
        return functional_call(layer, dict(zip(names, params, strict=True)), (x,))

    try:
        torch.autograd.gradcheck(layer_of, inputs, **GRADCHECK_TOLERANCE)
    except GradcheckError as error:  # with the mismatching Jacobians
        line = first_line(error).rstrip(",")
        for index, name in enumerate(["x", *roles]):
            line = line.replace(f"input {index}", f"input {index} ({name})")
        result.problem = f"gradcheck: {type(error).__name__}: {line}"
    except Exception as error:
        result.problem, result.unsupported = classify(LayerRaised("gradcheck", error), full_api)
    return result
