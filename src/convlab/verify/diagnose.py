"""Diagnoses a learner needs beyond "mismatch": each a row with what was found and a one-line hint.

    output dtype      a float64 input coming back float32 (or the reverse)
    output device     a tensor created on the CPU whatever the input's device
    gradients         a parameter or the input receiving no gradient (None) or an all-zero one
    batch             one image's output changing when other images in the batch change
    init              the layer's own initial weights compared with nn.Conv2d's
    output shape      from the checks: expected vs got, with the formula
    in-place writes   from the checks: a write autograd rejects in backward

Diagnoses do not decide verify's exit status (the checks do); they say why a check failed, or warn of a
problem the chosen dtypes did not exercise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from convlab.conv.adapter import FunctionAdapter, ModuleAdapter, NumpyAdapter
from convlab.verify.cases import conv_case, random_tensors
from convlab.verify.checks import INPLACE_HINT, INPLACE_MESSAGE, CheckResult, first_line, forward_only
from convlab.verify.tolerance import compare, dtype_name

CASE = conv_case((3, 2, 6, 6), 4, 3, padding=1)
INIT_SHAPE = {"in_channels": 3, "out_channels": 8, "kernel_size": 3}  # fan_in 27: nn.Conv2d's bound 0.19


@dataclass(frozen=True)
class Diagnosis:
    """One row: the aspect checked, what was found, whether it is a problem, and the hint if so."""

    aspect: str
    finding: str
    problem: bool = False
    hint: str = ""


def _layer(layer_cls: type[nn.Module], dtype: torch.dtype, device: str = "cpu") -> tuple[nn.Module, dict]:
    tensors = random_tensors(CASE, dtype)
    layer = layer_cls(**CASE.conv_kwargs(), dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(tensors["weight"])
        layer.bias.copy_(tensors["bias"])
    return layer.to(device), tensors


def output_dtype(layer_cls: type[nn.Module]) -> Diagnosis:
    """Run in float64 and float32: does the output keep the input's dtype?"""
    found = []
    for dtype in (torch.float64, torch.float32):
        layer, tensors = _layer(layer_cls, dtype)
        with torch.no_grad():
            out = layer(tensors["x"])
        if out.dtype != dtype:
            found.append(f"output {dtype_name(out.dtype)} for a {dtype_name(dtype)} input")
    if not found:
        return Diagnosis("output dtype", "the input's, in float64 and float32")
    return Diagnosis(
        "output dtype",
        "; ".join(found),
        True,
        "a tensor created without dtype=/device= (torch.zeros(...) is float32 on the CPU whatever the "
        "input): create it with dtype=x.dtype, device=x.device, or build the output from operations on x",
    )


def output_device(layer_cls: type[nn.Module]) -> Diagnosis:
    """On CUDA if there is one, else on the meta device (shapes only) for a user's torch layer."""
    if issubclass(layer_cls, (NumpyAdapter, FunctionAdapter)):
        return Diagnosis("output device", "NumPy computes on the host: other devices' tensors are copied")
    device = "cuda" if torch.cuda.is_available() else "meta"
    where = device if device == "cuda" else "meta-device (standing in for a GPU)"
    if device == "meta" and not issubclass(layer_cls, ModuleAdapter):
        return Diagnosis("output device", "not checked (no GPU here)")
    try:
        layer, tensors = _layer(layer_cls, torch.float32)
        layer = layer.to(device)
        with torch.no_grad():
            out = layer(tensors["x"].to(device))
    except Exception as error:
        finding = f"raised {type(error).__name__} for a {where} input: {first_line(error)}"
    else:
        if out.device.type == device:
            return Diagnosis("output device", f"the input's ({where})")
        finding = f"output on {out.device.type} for a {where} input"
    return Diagnosis(
        "output device",
        finding,
        True,
        "a tensor created without device= lands on the CPU, so a CUDA input fails or is copied: create it "
        "with device=x.device (torch.zeros(..., dtype=x.dtype, device=x.device) or torch.zeros_like)",
    )


def gradients(layer_cls: type[nn.Module], dtype: torch.dtype) -> list[Diagnosis]:
    """For x, weight and bias: None, all zeros, or a gradient (its correctness is the checks' business)."""
    if forward_only(layer_cls):
        return [Diagnosis("gradients", "none: a forward-only layer (no backward to call)")]
    layer, tensors = _layer(layer_cls, dtype)
    x = tensors["x"].clone().requires_grad_()
    try:
        out = layer(x)
        out.backward(tensors["grad_out"].to(out.dtype))
    except Exception as error:
        return [
            Diagnosis("gradients", f"backward raised {type(error).__name__}: {first_line(error)}", True, "")
        ]
    rows = []
    for name, grad in (("input", x.grad), ("weight", layer.weight.grad), ("bias", layer.bias.grad)):
        if grad is None:
            rows.append(
                Diagnosis(
                    f"{name} gradient",
                    "None: it receives no gradient",
                    True,
                    "the output does not depend on it through autograd: a .detach(), .data, .item(), "
                    "a NumPy round trip or a torch.no_grad() block cuts the graph"
                    + (" (earlier layers would starve)" if name == "input" else " (it would never train)"),
                )
            )
        elif not grad.any():
            rows.append(
                Diagnosis(
                    f"{name} gradient",
                    "all zeros",
                    True,
                    "the output does not move when it moves: it is multiplied by zero or used only through "
                    "a constant copy",
                )
            )
    return rows or [Diagnosis("gradients", "input, weight and bias all receive non-zero gradients")]


def batch_independence(layer_cls: type[nn.Module], dtype: torch.dtype) -> Diagnosis:
    """Change images 1.. of a batch: image 0's output must stay what it was (up to rounding)."""
    layer, tensors = _layer(layer_cls, dtype)
    x = tensors["x"]
    other = x.clone()
    other[1:] = random_tensors(CASE, dtype, seed=7)["x"][1:]
    with torch.no_grad():
        first, second = layer(x)[0], layer(other)[0]
    comparison = compare(second, first.double(), CASE.reduction(), judged_at=dtype)
    if comparison.passed:
        return Diagnosis("batch", "each image's output depends on that image only")
    return Diagnosis(
        "batch",
        f"image 0's output changed by {comparison.max_rel:.1e} (relative) when the other images changed",
        True,
        "outputs of one image depend on other images: a sum or mean over the batch axis, or an index that "
        "mixes n with another loop variable",
    )


def describe_init(weight: Tensor, fan_in: int) -> Diagnosis:
    """The initial weights against nn.Conv2d's U(-1/sqrt(fan_in), +1/sqrt(fan_in))."""
    w = weight.detach().double().flatten()
    bound = 1 / math.sqrt(fan_in)
    stats = f"min {w.min():.3g}, max {w.max():.3g}, mean {w.mean():.3g}, std {w.std():.3g}"
    reference = f"nn.Conv2d draws U(-1/sqrt(fan_in), +1/sqrt(fan_in)) = U(-{bound:.3g}, {bound:.3g}) here"
    if w.abs().max() <= bound * (1 + 1e-6) and w.min() < 0 < w.max():
        return Diagnosis("init", f"like nn.Conv2d's ({stats})")
    if w.min() >= 0:
        looks = "; all in [0, 1): looks like torch.rand" if w.max() < 1 else ""
        return Diagnosis(
            "init",
            f"all weights positive ({stats}){looks}",
            True,
            f"{reference}; with every weight positive each filter is a blur of one sign and activations grow "
            "layer by layer (the network may not train at all)",
        )
    if 0.8 < w.std() < 1.25 and abs(w.mean()) < 0.2:
        return Diagnosis(
            "init",
            f"std about 1 ({stats}): looks like torch.randn",
            True,
            f"{reference}; unit-variance weights make each output's variance fan_in times its input's",
        )
    return Diagnosis("init", f"unlike nn.Conv2d's ({stats})", True, reference)


def initial_weights(layer_cls: type[nn.Module]) -> Diagnosis:
    """The layer's own init (an adapter of a function pair uses nn.Conv2d's: said so)."""
    if issubclass(layer_cls, FunctionAdapter):
        return Diagnosis("init", "the adapter's: nn.Conv2d's (a function pair has no init of its own)")
    layer = layer_cls(**INIT_SHAPE)
    return describe_init(layer.weight, INIT_SHAPE["in_channels"] * INIT_SHAPE["kernel_size"] ** 2)


def from_results(results: list[CheckResult]) -> list[Diagnosis]:
    """Rows for what the checks found: wrong output shapes and rejected in-place writes (first of each)."""
    rows = []
    shapes = [r for r in results if r.problem.startswith("wrong output shape")]
    if shapes:
        first = shapes[0]
        rows.append(
            Diagnosis(
                "output shape",
                f"[{first.case.name}] {first.problem} ({len(shapes)} checks)",
                True,
                "compute H_out and W_out from the layer's own stride, padding and dilation (the formula)",
            )
        )
    inplace = [r for r in results if INPLACE_MESSAGE in r.problem]
    if inplace:
        rows.append(
            Diagnosis(
                "in-place writes",
                f"[{inplace[0].case.name}] autograd rejected an in-place write",
                True,
                INPLACE_HINT,
            )
        )
    return rows


def _guarded(aspect: str, run, *args) -> list[Diagnosis]:
    try:
        found = run(*args)
    except Exception as error:
        return [Diagnosis(aspect, f"not checked: raised {type(error).__name__}: {first_line(error)}")]
    return found if isinstance(found, list) else [found]


def diagnose(layer_cls: type[nn.Module], dtype: torch.dtype, results: list[CheckResult]) -> list[Diagnosis]:
    """Every diagnosis for a layer, `dtype` for those run in one dtype; `results` from its checks."""
    return [
        *_guarded("output dtype", output_dtype, layer_cls),
        *_guarded("output device", output_device, layer_cls),
        *_guarded("gradients", gradients, layer_cls, dtype),
        *_guarded("batch", batch_independence, layer_cls, dtype),
        *_guarded("init", initial_weights, layer_cls),
        *from_results(results),
    ]
