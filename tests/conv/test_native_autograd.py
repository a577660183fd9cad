"""native as a PyTorch citizen: custom operators (opcheck), gradients of any order, forward-mode AD,
torch.func's transforms, torch.compile(fullgraph=True) and torch.export, each against nn.Conv2d."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, jacfwd, jacrev, jvp, vmap

from convlab.conv.native import NativeConv2d, op


@pytest.fixture(autouse=True)
def one_thread():
    """Many tiny calls: on a busy machine OpenMP's hand-offs would cost more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# From PyTorch's Conv2d module tests: strided, padded, dilated, grouped, no bias, rectangular.
CONFIGS = {
    "strided, padded": dict(in_channels=2, out_channels=3, kernel_size=3, stride=(1, 2), padding=1),
    "dilated, rectangular": dict(in_channels=2, out_channels=2, kernel_size=(3, 2), dilation=(2, 1)),
    "groups, no bias": dict(in_channels=4, out_channels=4, kernel_size=2, groups=2, bias=False),
    "depthwise, same": dict(in_channels=2, out_channels=2, kernel_size=3, groups=2, padding="same"),
}


def pair(config: str) -> tuple[NativeConv2d, nn.Conv2d]:
    torch.manual_seed(0)
    layer = NativeConv2d(**CONFIGS[config], dtype=torch.float64)
    reference = nn.Conv2d(**CONFIGS[config], dtype=torch.float64)
    reference.load_state_dict(layer.state_dict())
    return layer, reference


def close(actual, expected) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9)


def call(module: nn.Module, params: dict, x: torch.Tensor) -> torch.Tensor:
    return functional_call(module, params, (x,))


def test_opcheck_forward_and_backward_operators() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 1, 3, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)
    geometry = ([2, 1], [1, 0, 1, 2], [1, 1], 2)
    torch.library.opcheck(op.native_conv2d, (x, weight, bias, *geometry))
    grad_out = torch.randn(2, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(op.native_conv2d_backward, (grad_out, x, weight, *geometry, True, True))
    # One gradient only: the same checks but the compiler's (the forward's and both gradients' above).
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    for need_x, need_w in ((True, False), (False, True)):
        args = (grad_out, x, weight, *geometry, need_x, need_w)
        torch.library.opcheck(op.native_conv2d_backward, args, test_utils=quick)


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
def test_gradgradcheck(config: str) -> None:
    layer, _ = pair(config)
    x = torch.randn(1, layer.in_channels, 5, 5, dtype=torch.float64, requires_grad=True)
    params = {name: p for name, p in layer.named_parameters()}
    names = list(params)

    def f(x, *tensors):
        return call(layer, dict(zip(names, tensors, strict=True)), x)

    assert torch.autograd.gradgradcheck(f, (x, *params.values()))


def test_gradient_penalty_reaches_the_input_as_in_nn_conv2d() -> None:
    """d/dx |dL/dW|^2: the weight gradient's graph must reach x (silently None before)."""
    results = []
    for module in pair("strided, padded"):
        x = torch.randn(3, 2, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        x.requires_grad_()
        (gw,) = torch.autograd.grad(module(x).square().sum(), module.weight, create_graph=True)
        (gx,) = torch.autograd.grad(gw.square().sum(), x)
        results.append(gx)
    assert results[1].norm() > 0
    close(*results)


@pytest.mark.parametrize("config", CONFIGS, ids=list(CONFIGS))
def test_forward_mode_ad_matches_nn_conv2d(config: str) -> None:
    layer, reference = pair(config)
    params = dict(layer.named_parameters())
    x = torch.randn(2, layer.in_channels, 6, 5, dtype=torch.float64)
    tangents = ({k: torch.randn_like(v) for k, v in params.items()}, torch.randn_like(x))
    actual = jvp(lambda p, x: call(layer, p, x), (params, x), tangents)
    expected = jvp(lambda p, x: call(reference, p, x), (params, x), tangents)
    close(actual, expected)
    close(
        jacfwd(lambda x: call(layer, params, x))(x[:1]), jacfwd(lambda x: call(reference, params, x))(x[:1])
    )


@pytest.mark.parametrize("config", ["strided, padded", "groups, no bias"])
def test_vmap_over_inputs_and_over_parameters(config: str) -> None:
    layer, reference = pair(config)
    params = dict(layer.named_parameters())
    inputs = torch.randn(3, 2, layer.in_channels, 5, 6, dtype=torch.float64)
    close(vmap(lambda x: call(layer, params, x))(inputs), vmap(lambda x: call(reference, params, x))(inputs))
    stacked = {k: torch.stack([v, 2 * v, -v]) for k, v in params.items()}
    close(
        vmap(lambda p: call(layer, p, inputs[0]))(stacked),
        vmap(lambda p: call(reference, p, inputs[0]))(stacked),
    )
    both = vmap(lambda p, x: call(layer, p, x))(stacked, inputs)
    close(
        both,
        torch.stack([call(reference, {k: v[i] for k, v in stacked.items()}, inputs[i]) for i in range(3)]),
    )


@pytest.mark.parametrize("config", ["strided, padded", "depthwise, same"])
def test_per_sample_gradients_equal_a_loop_over_samples(config: str) -> None:
    layer, _ = pair(config)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    x = torch.randn(4, layer.in_channels, 5, 5, dtype=torch.float64)

    def loss(p, sample):
        return call(layer, p, sample.unsqueeze(0)).square().sum()

    per_sample = vmap(grad(loss), (None, 0))(params, x)
    for i in range(4):
        close({k: v[i] for k, v in per_sample.items()}, grad(loss)(params, x[i]))
    expected = torch.func.jacrev(lambda p: call(layer, p, x[:1]))(params)
    actual = jacrev(lambda p: call(layer, p, x[:1]))(params)
    close(actual, expected)


def test_hessian_matches_nn_conv2d() -> None:
    layer, reference = pair("strided, padded")
    params = dict(layer.named_parameters())
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)

    def energy(module):
        return lambda x: call(module, params, x).square().sum()

    close(torch.func.hessian(energy(layer))(x), torch.func.hessian(energy(reference))(x))


def test_compile_fullgraph_and_export() -> None:
    """One node in the graph: the compiler traces the operator's fake, not a ctypes call."""
    layer, reference = pair("strided, padded")
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    x_compiled = x.clone().requires_grad_()
    out = compiled(x_compiled)
    close(out, reference(x))
    out.square().sum().backward()
    x_eager = x.clone().requires_grad_()
    reference(x_eager).square().sum().backward()
    close(x_compiled.grad, x_eager.grad)
    close(layer.weight.grad, reference.weight.grad)
    exported = torch.export.export(layer, (x,))
    targets = [node.target for node in exported.graph.nodes if node.op == "call_function"]
    assert torch.ops.convlab.native_conv2d.default in targets
    close(exported.module()(x), reference(x))
