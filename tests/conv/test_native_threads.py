"""native's C kernel when OpenMP grants fewer threads than it asked for.

The weight gradient is summed over per-thread areas of one shared workspace; only the areas of the
team that actually ran may be read. The workspace is filled with NaN before each case, so an area
no thread wrote in this call shows up as NaN, not as a quietly wrong sum.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import convlab.conv.native.build as native_build
from convlab.conv.native import op

# The reference network's two conv layers (float64), a padded and a grouped one: every dW path.
CASES = {
    "conv1": ((8, 1, 28, 28), (10, 1, 5, 5), {}),
    "conv2": ((8, 10, 12, 12), (20, 10, 5, 5), {}),
    "padded, by output": ((4, 4, 9, 9), (32, 2, 3, 3), {"padding": 1, "groups": 2}),
}

CHECK = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    from convlab.conv.native import NativeConv2d, op

    torch.set_num_threads(2)  # torch asks for 2; OpenMP may grant fewer
    torch.manual_seed(0)
    worst = 0.0
    for shape, c_out, k, groups, padding in [((8, 1, 28, 28), 10, 5, 1, 0), ((8, 10, 12, 12), 20, 5, 1, 0),
                                             ((4, 4, 9, 9), 32, 3, 2, 1)]:
        for _ in range(2):  # a second call meets the first call's areas
            layer = NativeConv2d(shape[1], c_out, k, padding=padding, groups=groups, dtype=torch.float64)
            x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
            op._WORKSPACE.buffer = torch.full((1 << 22,), float("nan"), dtype=torch.float64)
            out = layer(x)
            grad_out = torch.randn_like(out)
            got = torch.autograd.grad(out, [x, layer.weight], grad_out)
            ref = F.conv2d(x, layer.weight, layer.bias, padding=padding, groups=groups)
            want = torch.autograd.grad(ref, [x, layer.weight], grad_out)
            for g, w in zip((out, *got), (ref, *want)):
                worst = max(worst, ((g - w).norm() / w.norm()).item())
    print(f"relative error {worst:.3g}")
    assert worst < 1e-12, worst

    # A few SGD steps of the reference network's convs: the same losses as nn.Conv2d's from the same
    # start, no NaN (with the areas of threads that never ran summed in, the loss went NaN).
    from torch import nn

    def net(conv):
        torch.manual_seed(0)
        return nn.Sequential(conv(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(), conv(10, 20, 5), nn.MaxPool2d(2),
                             nn.ReLU(), nn.Flatten(), nn.Linear(320, 10)).double()
    losses = {}
    for name, conv in (("native", NativeConv2d), ("torch", nn.Conv2d)):
        model, g = net(conv), torch.Generator().manual_seed(1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        losses[name] = []
        for _ in range(4):
            x = torch.randn(16, 1, 28, 28, generator=g, dtype=torch.float64)
            y = torch.randint(0, 10, (16,), generator=g)
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[name].append(loss.item())
    print(losses)
    assert all(l == l for l in losses["native"]), losses
    assert all(abs(a - b) < 1e-9 for a, b in zip(losses["native"], losses["torch"])), losses
    """
)


@pytest.mark.parametrize(
    "env", [{"OMP_THREAD_LIMIT": "1"}, {"OMP_DYNAMIC": "true"}], ids=["thread limit", "dynamic"]
)
def test_fewer_threads_than_asked_give_f_conv2d_gradients(env: dict[str, str]) -> None:
    """In a process of its own (OpenMP reads these settings once, when it starts): the gradients of
    three layers, and a few training steps."""
    result = subprocess.run(
        [sys.executable, "-c", CHECK], env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "relative error" in result.stdout


HELPER = r"""
#include <omp.h>
typedef void (*backward_fn)(const void *, const void *, const void *, const void *, void *, void *, void *,
                            int);
/* Calls the kernel from inside an OpenMP parallel region, as a parallel caller would: nested
 * regions get a team of one however many threads the kernel asks for. */
void call_in_parallel_region(backward_fn f, const void *s, const void *x, const void *w, const void *gy,
                             void *gx, void *gw, void *ws, int threads) {
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        f(s, x, w, gy, gx, gw, ws, threads);
    }
}
"""


@pytest.fixture(scope="module")
def parallel_caller(tmp_path_factory) -> ctypes.CDLL:
    folder = tmp_path_factory.mktemp("omp_helper")
    (folder / "helper.c").write_text(HELPER)
    compiler = native_build.find_compiler()
    command = [
        compiler,
        "-O1",
        "-shared",
        "-fPIC",
        "-fopenmp",
        str(folder / "helper.c"),
        "-o",
        str(folder / "h.so"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        pytest.skip(f"no OpenMP compiler for the helper: {result.stderr}")
    return ctypes.CDLL(str(folder / "h.so"))


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_called_from_inside_a_parallel_region(parallel_caller: ctypes.CDLL, case: str) -> None:
    x_shape, w_shape, settings = CASES[case]
    torch.manual_seed(0)
    x, weight = torch.randn(x_shape, dtype=torch.float64), torch.randn(w_shape, dtype=torch.float64)
    p, groups = settings.get("padding", 0), settings.get("groups", 1)
    geometry = ([1, 1], [p, p, p, p], [1, 1], groups)
    shape = op.check_tensors(x, weight, None, *geometry, run=True)
    grad_out = torch.randn(shape.n, shape.c_out, shape.h_out, shape.w_out, dtype=torch.float64)
    lib, threads = native_build.library(torch.float64), 2
    scratch = torch.full((lib.native_workspace(shape, threads),), float("nan"), dtype=torch.float64)
    # NaN: the kernel writes every number of both gradients, padded input or not.
    grad_x, grad_w = torch.full_like(x, float("nan")), torch.full_like(weight, float("nan"))
    function = ctypes.cast(lib.native_backward, ctypes.c_void_p)
    parallel_caller.call_in_parallel_region.argtypes = [ctypes.c_void_p] * 8 + [ctypes.c_int]
    parallel_caller.call_in_parallel_region(
        function,
        ctypes.addressof(shape),
        *(t.data_ptr() for t in (x, weight, grad_out, grad_x, grad_w, scratch)),
        threads,
    )
    reference = x.clone().requires_grad_(), weight.clone().requires_grad_()
    out = F.conv2d(*reference, padding=p, groups=groups)
    expected = torch.autograd.grad(out, reference, grad_out)
    for got, want in zip((grad_x, grad_w), expected, strict=True):
        assert ((got - want).norm() / want.norm()).item() < 1e-12
