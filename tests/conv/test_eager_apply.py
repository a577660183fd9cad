"""`convlab.conv.eager_apply`: the classic twin runs outside transforms, the Function itself under them."""

from __future__ import annotations

import pytest
import torch

from convlab.conv.eager_apply import REFUSAL, apply, classic_twin


class Scale(torch.autograd.Function):
    """y = x * w, in the setup_context form, with jvp and a vmap rule; records which form ran."""

    ran: list[str] = []

    @staticmethod
    def forward(x, w):
        return x * w

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        Scale.ran.append("backward")
        return g * w, (g * x).sum() if w.dim() == 0 else g * x

    @staticmethod
    def jvp(ctx, x_t, w_t):
        x, w = ctx.saved_tensors
        return (0 if x_t is None else x_t * w) + (0 if w_t is None else x * w_t)

    @staticmethod
    def vmap(info, in_dims, x, w):
        Scale.ran.append("vmap rule")
        x = x.movedim(in_dims[0], 0) if in_dims[0] is not None else x
        w = w.movedim(in_dims[1], 0) if in_dims[1] is not None else w
        return Scale.apply(x, w), 0


def test_outside_transforms_the_classic_twin_runs_with_the_functions_backward_and_jvp():
    x, w = torch.randn(3, dtype=torch.float64, requires_grad=True), torch.randn(3, dtype=torch.float64)
    y = apply(Scale, x, w)
    assert type(y.grad_fn).__name__.startswith("ScaleClassic")
    assert torch.autograd.gradcheck(lambda a, b: apply(Scale, a, b), (x, w.requires_grad_()))
    assert torch.autograd.gradgradcheck(lambda a, b: apply(Scale, a, b) ** 2, (x, w))
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(x.detach(), torch.ones(3, dtype=torch.float64))
        tangent = torch.autograd.forward_ad.unpack_dual(apply(Scale, dual, w.detach())).tangent
    torch.testing.assert_close(tangent, w.detach())


def test_under_a_transform_the_function_itself_runs():
    Scale.ran.clear()
    x, w = torch.randn(4, 3), torch.randn(3)
    out = torch.func.vmap(lambda a: apply(Scale, a, w))(x)
    torch.testing.assert_close(out, x * w)
    assert Scale.ran == ["vmap rule"]
    grad = torch.func.grad(lambda a: apply(Scale, a, w).sum())(x[0])
    torch.testing.assert_close(grad, w)


def test_the_twin_is_made_once_and_torchs_refusal_still_names_setup_context():
    assert classic_twin(Scale) is classic_twin(Scale)
    with pytest.raises(RuntimeError, match=REFUSAL):
        torch.func.vmap(lambda a: classic_twin(Scale).apply(a, torch.ones(3)))(torch.randn(2, 3))


def test_other_errors_are_raised_as_they_are():
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(x):
            raise RuntimeError("the kernel refused this input")

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="the kernel refused this input") as caught:
        apply(Broken, torch.randn(2))
    assert caught.value.__context__ is None
