"""NaN and Inf in native's results exactly where F.conv2d puts them: forward, dx, dW, db.

A differential test: small random configurations (every kernel path: full width and compact columns,
dW by output, by dot products and through transposed columns, padding, groups, depthwise) with Inf and
NaN placed at random in the input and the weight, compared with F.conv2d in float64 (PyTorch's own
im2col kernels there: zero padding multiplies like any number, 0 * Inf = NaN, in both).
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from convlab.conv.native.op import conv2d

SPECIALS = (float("inf"), float("-inf"), float("nan"))


@pytest.fixture(autouse=True)
def one_thread():
    """Hundreds of tiny calls: on a busy machine OpenMP's hand-offs would cost more than the arithmetic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sprinkle(t: torch.Tensor, rng: random.Random, most: int) -> torch.Tensor:
    """t with up to `most` of its numbers replaced by Inf, -Inf or NaN."""
    flat = t.flatten().clone()
    for _ in range(rng.randint(0, most)):
        flat[rng.randrange(flat.numel())] = rng.choice(SPECIALS)
    return flat.view_as(t)


def configuration(rng: random.Random):
    groups = rng.choice([1, 1, 2, 3])
    per_group_in, per_group_out = rng.randint(1, 3), rng.choice([1, 2, 3, 5, 8, 16])
    kh, kw, sh, sw = rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 2), rng.randint(1, 2)
    dh, dw, ph, pw = rng.randint(1, 2), rng.randint(1, 2), rng.randint(0, 2), rng.randint(0, 2)
    h = max(1, dh * (kh - 1) + 1 - 2 * ph) + rng.randint(0, 6)
    w = max(1, dw * (kw - 1) + 1 - 2 * pw) + rng.randint(0, 20)
    x = torch.randn(rng.randint(1, 3), per_group_in * groups, h, w, dtype=torch.float64)
    weight = torch.randn(per_group_out * groups, per_group_in, kh, kw, dtype=torch.float64)
    bias = torch.randn(per_group_out * groups, dtype=torch.float64)
    return x, weight, bias, (sh, sw), (ph, pw), (dh, dw), groups


def convolutions(stride, padding, dilation, groups):
    """native's operator and F.conv2d as functions of (x, weight, bias) with these settings."""
    ph, pw = padding
    return (
        lambda x, w, b: conv2d(x, w, b, stride, (pw, pw, ph, ph), dilation, groups),
        lambda x, w, b: F.conv2d(x, w, b, stride, padding, dilation, groups),
    )


def results(conv, x, weight, bias, grad_seed: int):
    x, weight, bias = (t.clone().requires_grad_() for t in (x, weight, bias))
    out = conv(x, weight, bias)
    grad_out = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(grad_seed))
    return (out, *torch.autograd.grad(out, (x, weight, bias), grad_out))


@pytest.mark.parametrize("seed", range(4))
def test_nan_and_inf_patterns_match_f_conv2d(seed: int) -> None:
    rng, differing = random.Random(seed), []
    for case in range(75):
        x, weight, bias, stride, padding, dilation, groups = configuration(rng)
        x, weight = sprinkle(x, rng, 3), sprinkle(weight, rng, 2)
        native, reference = convolutions(stride, padding, dilation, groups)
        got, want = results(native, x, weight, bias, case), results(reference, x, weight, bias, case)
        for name, g, e in zip(("out", "dx", "dW", "db"), got, want, strict=True):
            same = torch.equal(g.isnan(), e.isnan()) and torch.equal(g.isposinf(), e.isposinf())
            same = same and torch.equal(g.isneginf(), e.isneginf())
            finite = g.isfinite() & e.isfinite()
            if not same or not torch.allclose(g[finite], e[finite], rtol=1e-9, atol=1e-9):
                differing.append((case, name, x.shape, weight.shape, stride, padding, dilation, groups))
    assert differing == []


def test_an_infinite_output_gradient_in_a_banded_image_matches_f_conv2d() -> None:
    """A large image goes in bands of output rows, the last one shorter. Its output gradient's rows
    are laid out in the same buffer as the band's before, so the numbers past its end must be zeroed:
    the weight gradient sums over them, and an Inf left there by the band before, times a zero
    column, would make NaN where F.conv2d has +Inf. Widths vary where that stale number lands."""
    for width in range(37, 45):
        x = torch.rand(1, 16, 400, width, dtype=torch.float64) + 0.5  # positive: Inf products stay +Inf
        weight = torch.randn(3, 16, 3, 3, dtype=torch.float64, requires_grad=True)
        assert 16 * 9 * width * 398 > 1 << 20  # more columns than one band holds
        out = conv2d(x, weight, None, (1, 1), (0, 0, 0, 0), (1, 1), 1)
        grad_out = torch.randn_like(out)
        grad_out[:, 0] = float("inf")
        (got,) = torch.autograd.grad(out, weight, grad_out)
        (want,) = torch.autograd.grad(F.conv2d(x, weight), weight, grad_out)
        assert torch.isposinf(want[0]).all() and torch.isfinite(want[1:]).all()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, equal_nan=True, msg=f"width {width}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_an_infinite_weight_leaves_a_banded_depthwise_weight_gradient_finite(dtype: torch.dtype) -> None:
    """Depthwise, the weight gradient reads the padded image in place, a vector at a time: the last
    band's last tap reads up to a vector past the image. Those numbers meet the output gradient's zero
    tail, so they must be zeros of the workspace, not the input gradient laid out next: with an Inf in
    the weight, that gradient holds Inf, and Inf * 0 would put NaN in a weight gradient F.conv2d has
    finite. These widths take the read past the padding that rounds the image up to whole vectors."""
    for width in (292, 294, 296, 297, 298, 299, 302, 303):
        x = (torch.rand(1, 2, 300, width, dtype=dtype) + 0.5).requires_grad_()  # dx is computed too
        weight = torch.randn(2, 1, 3, 3, dtype=dtype)
        weight[:, 0, 0, 0] = float("inf")
        weight.requires_grad_()
        assert 16 * 9 * (width + 2) * 300 > 1 << 20  # more columns than one band holds
        out = conv2d(x, weight, None, (1, 1), (1, 1, 1, 1), (1, 1), 2)
        grad_out = torch.randn_like(out)
        _, got = torch.autograd.grad(out, (x, weight), grad_out)
        x64 = x.detach().double().requires_grad_()
        weight64 = weight.detach().double().requires_grad_()
        out64 = F.conv2d(x64, weight64, padding=1, groups=2)
        _, want = torch.autograd.grad(out64, (x64, weight64), grad_out.double())
        assert torch.isfinite(want).all()
        tol = 1e-4 if dtype == torch.float32 else 1e-10
        torch.testing.assert_close(
            got.double(), want, rtol=tol, atol=tol * want.abs().max().item(), msg=f"width {width}"
        )
