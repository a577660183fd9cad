"""Autograd capabilities beyond first-order gradients, as rows of the capability table.

    double backward   gradient of a gradient (create_graph=True): gradient penalties, meta-learning
    forward-mode AD   torch.func.jvp: Jacobian-vector products
    torch.func.vmap   the layer mapped over a leading batch of inputs
    torch.compile     traced by TorchDynamo (backend aot_eager: the graph and autograd, no code generation)

Each runs on one tiny configuration against F.conv2d in float64, judged by `convlab.verify.tolerance`.
A layer may refuse any of them with an exception ("not supported"); what fails is a wrong number, and
above all a silently missing one: a second-order gradient that comes back None or zero where
F.conv2d's is not (a gradient penalty silently dropped).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from convlab.verify.capability import FAILS, PASSES, UNSUPPORTED, Capability
from convlab.verify.cases import ConvCase, conv_case, random_tensors, reference_conv
from convlab.verify.checks import first_line, float64_leaf
from convlab.verify.tolerance import compare

CASE = conv_case((2, 2, 5, 5), 3, 3, padding=1)
COMPILE_CASE = conv_case((1, 1, 4, 4), 2, 2)  # tiny: Dynamo unrolls a Python loop per output pixel


def _layer(layer_cls: type[nn.Module], case: ConvCase, tensors: dict[str, Tensor | None]) -> nn.Module:
    layer = layer_cls(**case.conv_kwargs(), dtype=tensors["x"].dtype)
    with torch.no_grad():
        layer.weight.copy_(tensors["weight"])
        layer.bias.copy_(tensors["bias"])
    return layer


def _judge(
    feature: str, case: ConvCase, got: dict[str, Tensor | None], want: dict[str, Tensor]
) -> Capability:
    """passes if every tensor matches at the K^2 tolerance (a derivative of a sum of products of sums)."""
    reduction = case.reduction() ** 2
    for name, expected in want.items():
        actual = got[name]
        if actual is None or (not actual.any() and expected.any()):
            what = "None" if actual is None else "all zeros"
            return Capability(
                feature, FAILS, f"{name} is {what} where F.conv2d's is not: silently lost, never an error"
            )
        comparison = compare(actual, expected, reduction, judged_at=actual.dtype)
        if not comparison.passed:
            return Capability(feature, FAILS, f"{name}: {comparison.note}")
    return Capability(feature, PASSES)


def double_backward(layer_cls: type[nn.Module], dtype: torch.dtype) -> Capability:
    """d/d(x, W) of |dL/dW|^2 with L = |out|^2 / 2: the shape of a gradient penalty."""
    tensors = random_tensors(CASE, dtype)

    def second_order(conv: Callable[[Tensor], Tensor], x: Tensor, weight: Tensor) -> dict[str, Tensor | None]:
        out = conv(x)
        (grad_w,) = torch.autograd.grad(out.pow(2).sum() / 2, weight, create_graph=True)
        dx, dw = torch.autograd.grad(grad_w.pow(2).sum(), (x, weight), allow_unused=True)
        return {"d2x": dx, "d2W": dw}

    layer = _layer(layer_cls, CASE, tensors)
    x = tensors["x"].detach().clone().requires_grad_()
    got = second_order(layer, x, layer.weight)
    ref_x, ref_w, ref_b = (float64_leaf(tensors[k]) for k in ("x", "weight", "bias"))
    want = second_order(lambda x: reference_conv(CASE, x, ref_w, ref_b), ref_x, ref_w)
    return _judge("double backward", CASE, got, want)


def forward_ad(layer_cls: type[nn.Module], dtype: torch.dtype) -> Capability:
    """torch.func.jvp with tangents on x, weight and bias, against F.conv2d's (linear in each)."""
    tensors = random_tensors(CASE, dtype)
    tangents = random_tensors(CASE, dtype, seed=1)
    layer = _layer(layer_cls, CASE, tensors)
    path_of = {id(p): name for name, p in layer.named_parameters()}
    names = [path_of[id(layer.weight)], path_of[id(layer.bias)]]

    def run(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return functional_call(layer, dict(zip(names, (weight, bias), strict=True)), (x,))

    keys = ("x", "weight", "bias")
    with warnings.catch_warnings():
        # torch's first forward-mode call scripts its own jvp decompositions with the deprecated
        # torch.jit.script: a warning about torch's internals that a user of this check cannot act on.
        warnings.filterwarnings("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning)
        _, tangent = jvp(run, tuple(tensors[k] for k in keys), tuple(tangents[k] for k in keys))
    x, w, b = (tensors[k].double() for k in keys)
    tx, tw, tb = (tangents[k].double() for k in keys)
    want = reference_conv(CASE, tx, w, None) + reference_conv(CASE, x, tw, tb)
    return _judge("forward-mode AD", CASE, {"tangent": tangent}, {"tangent": want})


def vmapped(layer_cls: type[nn.Module], dtype: torch.dtype) -> Capability:
    """torch.func.vmap(layer) over a leading axis of 3 batches: each slice as the layer alone gives it."""
    tensors = random_tensors(CASE, dtype)
    layer = _layer(layer_cls, CASE, tensors)
    xs = torch.stack([random_tensors(CASE, dtype, seed=s)["x"] for s in range(3)])
    got = vmap(layer)(xs)
    w, b = tensors["weight"].double(), tensors["bias"].double()
    want = torch.stack([reference_conv(CASE, x.double(), w, b) for x in xs])
    return _judge("torch.func.vmap", CASE, {"out": got}, {"out": want})


def compiled(layer_cls: type[nn.Module], dtype: torch.dtype) -> Capability:
    """torch.compile(fullgraph=True), else with graph breaks: output and input gradient against F.conv2d."""
    tensors = random_tensors(COMPILE_CASE, dtype)
    w, b = tensors["weight"].double(), tensors["bias"].double()
    x_ref = float64_leaf(tensors["x"])
    out_ref = reference_conv(COMPILE_CASE, x_ref, w, b)
    out_ref.backward(tensors["grad_out"].double())
    note = ""
    for fullgraph in (True, False):
        torch.compiler.reset()
        layer = _layer(layer_cls, COMPILE_CASE, tensors)
        x = tensors["x"].detach().clone().requires_grad_()
        try:
            out = torch.compile(layer, backend="aot_eager", fullgraph=fullgraph)(x)
            out.backward(tensors["grad_out"].to(out.dtype))
        except Exception as error:
            if not fullgraph:
                raise
            note = f" (with graph breaks; fullgraph=True raised {type(error).__name__}: {first_line(error)})"
            continue
        capability = _judge(
            "torch.compile", COMPILE_CASE, {"out": out, "dx": x.grad}, {"out": out_ref, "dx": x_ref.grad}
        )
        capability.detail += note if capability.status == PASSES else ""
        return capability
    raise AssertionError("unreachable: the second attempt returns or raises")


CHECKS: dict[str, Callable[[type[nn.Module], torch.dtype], Capability]] = {
    "double backward": double_backward,
    "forward-mode AD": forward_ad,
    "torch.func.vmap": vmapped,
    "torch.compile": compiled,
}


def autograd_capabilities(
    layer_cls: type[nn.Module],
    dtype: torch.dtype,
    compile: bool = True,
    on_check: Callable[[str], None] = lambda description: None,
) -> list[Capability]:
    """One Capability per check of CHECKS (torch.compile only if `compile`: its first use costs seconds).

    Any exception is 'not supported', for every layer: a clear refusal is acceptable, a wrong or missing
    number is not.
    """
    rows = []
    for feature, check in CHECKS.items():
        if feature == "torch.compile" and not compile:
            continue
        on_check(f"[{feature}]")
        try:
            rows.append(check(layer_cls, dtype))
        except Exception as error:
            rows.append(
                Capability(feature, UNSUPPORTED, f"raised {type(error).__name__}: {first_line(error)}")
            )
    return rows
