"""Autograd parity with nn.Conv2d: higher-order gradients, forward-mode AD, torch.func, compile, export.

Configurations are written after PyTorch's own Conv2d tests (test/nn/test_convolution.py and the
module tests in common_nn: strided, padded, dilated, grouped, bias-free; test_conv_empty_channel),
at the smallest sizes that still exercise them. nn.Conv2d (`torch`) runs every test as the control.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

from convlab.conv import CONV_LAYERS
from convlab.conv.numpy import numpy_conv2d, numpy_conv2d_input_grad, numpy_conv2d_weight_grad

LAYERS = list(CONV_LAYERS)

# (id, constructor keywords, input shape); vanilla (Python loops) gets the first only.
STRIDED = {"in_channels": 2, "out_channels": 2, "kernel_size": 2, "stride": 2, "padding": 1}
GROUPED = {
    "in_channels": 4,
    "out_channels": 2,
    "kernel_size": (2, 3),
    "dilation": (2, 1),
    "groups": 2,
    "bias": False,
}
CASES = [("stride-pad-bias", STRIDED, (2, 2, 3, 3)), ("groups-dilation-nobias", GROUPED, (2, 4, 5, 3))]
CASE_IDS = [case[0] for case in CASES]


def _cases(name: str) -> list:
    return CASES[:1] if name == "vanilla" else CASES


def _pair(name: str, kwargs: dict, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, nn.Module]:
    """(layer, nn.Conv2d) with the same random weights."""
    torch.manual_seed(0)
    reference = nn.Conv2d(**kwargs, dtype=dtype)
    layer = CONV_LAYERS[name](**kwargs, dtype=dtype)
    layer.load_state_dict(reference.state_dict())
    return layer, reference


def _params(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().requires_grad_() for name, p in module.named_parameters()}


def _x(shape: tuple[int, ...], dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(1)).requires_grad_()


def _close(actual, expected) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def _gradgradcheck(layer: nn.Module, shape: tuple[int, ...]) -> None:
    params = _params(layer)
    keys = list(params)

    def f(x, *values):
        return functional_call(layer, dict(zip(keys, values, strict=True)), (x,))

    inputs = (_x(shape), *params.values())
    # fast_mode: each check compares one random projection of the Jacobian, not every entry.
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)
    assert torch.autograd.gradgradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize("name", LAYERS)
def test_gradgradcheck(name: str) -> None:
    for _, kwargs, shape in _cases(name):
        _gradgradcheck(_pair(name, kwargs)[0], shape)


@pytest.mark.parametrize("name", LAYERS)
def test_gradient_penalty_reaches_the_input(name: str) -> None:
    """d/dx ||dL/dW||^2 (WGAN-GP, R1, MAML): the weight gradient's graph must reach x, never vanish."""
    _, kwargs, shape = CASES[0]
    results = []
    for module in _pair(name, kwargs):
        x = _x(shape)
        gw, = torch.autograd.grad((module(x) ** 2).sum(), module.weight, create_graph=True)  # fmt: skip
        penalty_grad, = torch.autograd.grad((gw**2).sum(), x)  # fmt: skip
        results.append(penalty_grad)
    assert results[1].norm() > 0
    _close(*results)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("name", LAYERS)
def test_forward_ad_matches_nn_conv2d_jvp(name: str, case) -> None:
    _, kwargs, shape = case
    if case not in _cases(name):
        pytest.skip("vanilla: one case (Python loops)")
    layer, reference = _pair(name, kwargs)
    params = _params(layer)
    keys = list(params)
    x = _x(shape).detach()
    tangents = (torch.randn_like(x), *(torch.randn_like(p) for p in params.values()))

    def under(module):
        return lambda x, *values: functional_call(module, dict(zip(keys, values, strict=True)), (x,))

    primals = (x, *(p.detach() for p in params.values()))
    _, mine = jvp(under(layer), primals, tangents)
    _, expected = jvp(under(reference), primals, tangents)
    _close(mine, expected)
    with torch.autograd.forward_ad.dual_level():  # the autograd API, input tangent only
        dual = torch.autograd.forward_ad.make_dual(x, tangents[0])
        mine = torch.autograd.forward_ad.unpack_dual(layer(dual)).tangent
        expected = torch.autograd.forward_ad.unpack_dual(reference(dual)).tangent
    _close(mine, expected)


@pytest.mark.parametrize("name", LAYERS)
def test_vmap_over_inputs_and_parameters(name: str) -> None:
    _, kwargs, shape = CASES[-1] if name != "vanilla" else CASES[0]
    layer, reference = _pair(name, kwargs)
    params = {k: v.detach() for k, v in _params(layer).items()}
    xs = torch.randn(3, *shape, dtype=torch.float64)
    batched = {k: torch.randn(3, *v.shape, dtype=torch.float64) for k, v in params.items()}

    def call(module):
        return lambda p, x: functional_call(module, p, (x,))

    for in_dims, p, x in [((None, 0), params, xs), ((0, None), batched, xs[0]), ((0, 0), batched, xs)]:
        _close(vmap(call(layer), in_dims=in_dims)(p, x), vmap(call(reference), in_dims=in_dims)(p, x))


@pytest.mark.parametrize("name", LAYERS)
def test_per_sample_gradients_equal_a_loop(name: str) -> None:
    _, kwargs, shape = CASES[0]
    layer, _ = _pair(name, kwargs)
    params = {k: v.detach() for k, v in _params(layer).items()}
    xs = _x(shape).detach()

    def loss(p, x):
        return (functional_call(layer, p, (x.unsqueeze(0),)) ** 2).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, xs)
    for i in range(xs.shape[0]):
        one = torch.func.grad(loss)(params, xs[i])
        for key in params:
            _close(per_sample[key][i], one[key])


@pytest.mark.parametrize("name", LAYERS)
def test_jacrev_and_jacfwd_match_nn_conv2d(name: str) -> None:
    _, kwargs, shape = CASES[0]
    layer, reference = _pair(name, kwargs)
    weight = layer.weight.detach()
    x = _x((1, *shape[1:])).detach()

    def as_function_of_weight(module):
        return lambda w: functional_call(module, {"weight": w, "bias": module.bias.detach()}, (x,))

    expected = jacrev(as_function_of_weight(reference))(weight)
    _close(jacrev(as_function_of_weight(layer))(weight), expected)
    _close(jacfwd(as_function_of_weight(layer))(weight), expected)
    _close(jacrev(lambda t: layer(t))(x), jacrev(lambda t: reference(t))(x))


@pytest.mark.parametrize("name", LAYERS)
def test_complex_gradients_are_right_or_refused(name: str) -> None:
    """complex128 against F.conv2d (its gradients carry conjugates), or a clear error naming the layer."""
    kwargs = {"in_channels": 2, "out_channels": 2, "kernel_size": 2, "padding": 1}
    if name == "vanilla":
        kwargs["in_channels"] = 1
    try:
        layer, _ = _pair(name, kwargs, dtype=torch.complex128)
        x = _x((1, kwargs["in_channels"], 3, 3), dtype=torch.complex128)
        out = layer(x)
    except (TypeError, RuntimeError, NotImplementedError) as error:
        assert name != "torch", error
        assert CONV_LAYERS[name].__name__ in str(error) or name in str(error), error
        return
    expected = F.conv2d(x, layer.weight, layer.bias, padding=1)
    _close(out, expected)
    cotangent = torch.randn_like(out)
    mine = torch.autograd.grad(out, (x, layer.weight, layer.bias), cotangent)
    theirs = torch.autograd.grad(expected, (x, layer.weight, layer.bias), cotangent)
    for a, e in zip(mine, theirs, strict=True):
        _close(a, e)


def _toolchain_or_skip() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: torch.compile's inductor backend cannot build kernels here")


@pytest.mark.parametrize("name", LAYERS)
def test_compile_fullgraph_equals_eager(name: str) -> None:
    """Dynamo traces the whole layer, forward and backward (aot_eager: AOTAutograd without codegen,
    which keeps this test fast), and gives eager's output and gradients."""
    torch._dynamo.reset()
    kwargs = {"in_channels": 1 if name == "vanilla" else 2, "out_channels": 2, "kernel_size": 2, "padding": 1}
    layer, _ = _pair(name, kwargs)
    x = _x((1, kwargs["in_channels"], 3, 3))
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    grads = torch.autograd.grad((out**2).sum(), (x, layer.weight))
    eager = layer(x)
    _close(out, eager)
    for a, e in zip(grads, torch.autograd.grad((eager**2).sum(), (x, layer.weight)), strict=True):
        _close(a, e)


def test_numpy_default_compile_equals_eager() -> None:
    """The custom operators under torch.compile's default (inductor) backend."""
    _toolchain_or_skip()
    torch._dynamo.reset()
    layer, _ = _pair("numpy", {"in_channels": 2, "out_channels": 2, "kernel_size": 2})
    x = _x((1, 2, 3, 3))
    out = torch.compile(layer, fullgraph=True)(x)
    _close(out, layer(x))
    _close(torch.autograd.grad(out.sum(), x)[0], torch.autograd.grad(layer(x).sum(), x)[0])


@pytest.mark.parametrize("name", [n for n in LAYERS if n != "vanilla"])
def test_export_equals_eager(name: str) -> None:
    layer, _ = _pair(name, {"in_channels": 2, "out_channels": 2, "kernel_size": 2, "padding": 1})
    x = _x((2, 2, 3, 3)).detach()
    exported = torch.export.export(layer, (x,))
    _close(exported.module()(x), layer(x))


def test_opcheck_numpy_operators() -> None:
    """PyTorch's own checks of the registrations: schema, fake tensor, autograd, AOT dispatch."""
    x, weight, bias = _x((2, 2, 5, 4)), _x((4, 1, 2, 3)), _x((4,))
    stride, dilation, groups = [1, 2], [2, 1], 2
    out = numpy_conv2d(x, weight, bias, stride, dilation, groups)
    dy = torch.randn_like(out).requires_grad_()
    torch.library.opcheck(numpy_conv2d, (x, weight, bias, stride, dilation, groups))
    torch.library.opcheck(numpy_conv2d, (x.detach(), weight.detach(), None, stride, dilation, groups))
    torch.library.opcheck(numpy_conv2d_input_grad, (dy, weight, [5, 4], stride, dilation, groups))
    torch.library.opcheck(numpy_conv2d_weight_grad, (x, dy, [2, 3], stride, dilation, groups))


# ---- nn.Conv2d's remaining behaviours ----


@pytest.mark.parametrize("name", LAYERS)
def test_expanded_and_channels_last_weights(name: str) -> None:
    """Weights that cannot be viewed: an expanded one, and a channels-last one after
    `module.to(memory_format=torch.channels_last)`, whose output is then channels-last as nn.Conv2d's."""
    kwargs = {"in_channels": 2, "out_channels": 3, "kernel_size": 2, "padding": 1}
    layer, reference = _pair(name, kwargs)
    x = _x((2, 2, 3, 3))
    expanded = torch.randn(3, 1, 1, 1, dtype=torch.float64).expand(3, 2, 2, 2)
    _close(
        functional_call(layer, {"weight": expanded}, (x,)),
        functional_call(reference, {"weight": expanded}, (x,)),
    )
    layer, reference = (m.to(memory_format=torch.channels_last) for m in (layer, reference))
    out, expected = layer(x), reference(x)
    assert out.is_contiguous(memory_format=torch.channels_last) == expected.is_contiguous(
        memory_format=torch.channels_last
    )
    _close(out, expected)
    _close(
        torch.autograd.grad(out.sum(), layer.weight)[0],
        torch.autograd.grad(expected.sum(), reference.weight)[0],
    )


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("name", LAYERS)
def test_empty_channel_as_nn_conv2d(name: str) -> None:
    """PyTorch's test_conv_empty_channel: zero input channels give zero output channels and zero
    gradients; an input whose channels do not match is an error."""
    layer = CONV_LAYERS[name](0, 4, (3, 3), stride=2, dtype=torch.float64)
    x = torch.randn(2, 0, 10, 12, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == nn.Conv2d(0, 4, (3, 3), stride=2)(x.float()).shape
    out.backward(torch.rand_like(out))
    assert torch.equal(x.grad, torch.zeros_like(x))
    for p in layer.parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p))
    with pytest.raises(RuntimeError, match="Given groups=1, weight"):
        layer(torch.randn(2, 1, 0, 12, dtype=torch.float64))


@pytest.mark.parametrize("name", LAYERS)
def test_none_input_and_conv2d_attributes(name: str) -> None:
    layer = CONV_LAYERS[name](2, 2, 3)
    with pytest.raises(TypeError):
        layer(None)
    assert layer.transposed is False
    assert tuple(layer.output_padding) == (0, 0)
