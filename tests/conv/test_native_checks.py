"""The C kernel only ever sees tensors it has checked: device, dtype, sizes; errors, never a crash."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from convlab.conv.native import NativeConv2d, op
from convlab.conv.native.build import library

GEOMETRY = ([1, 1], [0, 0, 0, 0], [1, 1], 1)


def test_a_meta_weight_with_a_cpu_input_raises_in_a_process_of_its_own() -> None:
    """Before, this was a segmentation fault (the C kernel was handed the meta weight's address)."""
    script = textwrap.dedent(
        """
        import torch
        from convlab.conv.native import NativeConv2d
        layer = NativeConv2d(3, 4, 3, device="meta")
        try:
            layer(torch.randn(2, 3, 8, 8))
        except RuntimeError as error:
            print("RuntimeError:", error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "RuntimeError" in result.stdout and "meta" in result.stdout


def test_mixed_devices_raise_like_nn_conv2d() -> None:
    layer = NativeConv2d(3, 4, 3, device="meta")
    with pytest.raises(RuntimeError, match="same device"):
        layer(torch.randn(2, 3, 8, 8))
    layer = NativeConv2d(3, 4, 3)
    with pytest.raises(RuntimeError):  # a meta input with CPU weights
        layer(torch.randn(2, 3, 8, 8, device="meta"))


@pytest.mark.parametrize(
    "bad", ["meta weight", "meta bias", "float32 weight", "wrong bias size", "3-D weight"]
)
def test_the_operator_checks_every_tensor_whatever_the_caller_passes(bad: str) -> None:
    x, weight, bias = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 3, 3), torch.randn(4)
    weight, bias = weight.double(), bias.double()
    if bad == "meta weight":
        weight = weight.to("meta")
    elif bad == "meta bias":
        bias = bias.to("meta")
    elif bad == "float32 weight":
        weight = weight.float()
    elif bad == "wrong bias size":
        bias = bias[:3]
    else:
        weight = weight[0]
    with pytest.raises(RuntimeError, match="native_conv2d"):
        op.native_conv2d(x, weight, bias, *GEOMETRY)


def test_the_backward_operator_checks_grad_out() -> None:
    x, weight = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="grad_out"):
        op.native_conv2d_backward(
            torch.randn(2, 4, 5, 5, dtype=torch.float64), x, weight, *GEOMETRY, True, True
        )
    with pytest.raises(RuntimeError, match="grad_out"):
        op.native_conv2d_backward(torch.randn(2, 4, 6, 6), x, weight, *GEOMETRY, True, True)


def test_non_contiguous_tensors_are_made_contiguous() -> None:
    x = torch.randn(2, 8, 8, 3, dtype=torch.float64).permute(0, 3, 1, 2)
    weight = torch.randn(3, 3, 3, 4, dtype=torch.float64).permute(3, 2, 0, 1)
    bias = torch.randn(8, dtype=torch.float64)[::2]
    torch.testing.assert_close(op.native_conv2d(x, weight, bias, *GEOMETRY), F.conv2d(x, weight, bias))


def test_sizes_the_kernel_cannot_index_are_refused() -> None:
    """Checked in Python's integers before any size becomes a C long: a huge padding would wrap."""
    x, weight = torch.randn(1, 1, 4, 4, dtype=torch.float64), torch.randn(1, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="more than the C kernel can index"):
        op.native_conv2d(x, weight, None, [1, 1], [0, 0, 2**60, 2**60], [1, 1], 1)
    with pytest.raises(RuntimeError, match="more than the C kernel can index"):
        op.check_tensors(x.expand(2**40, 1, 4, 4), weight, None, [1, 1], [2**20] * 4, [1, 1], 1, run=True)


def test_complex_input_is_refused() -> None:
    layer = NativeConv2d(2, 3, 3, dtype=torch.complex128)
    with pytest.raises(TypeError, match="complex"):
        layer(torch.randn(1, 2, 5, 5, dtype=torch.complex128))


def test_empty_batch_and_channels_need_no_kernel() -> None:
    weight, bias = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x = torch.randn(0, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    out = op.native_conv2d(x, weight, bias, *GEOMETRY)
    assert out.shape == (0, 4, 4, 4)
    grad_x, grad_w = op.native_conv2d_backward(torch.zeros_like(out), x, weight, *GEOMETRY, True, True)
    assert grad_x.shape == x.shape and torch.equal(grad_w, torch.zeros_like(weight))


def test_workspace_is_bounded_for_a_large_image() -> None:
    """64 channels, 3x3, one 1024x1024 image (float32): nn.Conv2d's forward + backward holds the input,
    the output and their gradients (4 x 256 MiB) plus its own workspace. native's workspace is one
    padded image and its gradient (2 x 258 MiB) and a band of columns (a few MiB): within 2.2 input sizes,
    where unbanded columns took 576 x 1024 x 1024 numbers (2.3 GiB) per thread."""
    x, weight = torch.empty(1, 64, 1024, 1024, device="meta"), torch.empty(64, 64, 3, 3, device="meta")
    shape = op.check_tensors(x, weight, None, [1, 1], [1, 1, 1, 1], [1, 1], 1, run=False)
    lib = library(torch.float32)
    threads = lib.native_threads(torch.get_num_threads(), shape.n)
    assert threads == 1  # one image: one thread's area
    workspace_bytes = lib.native_workspace(shape, threads) * 4
    input_bytes = 64 * 1024 * 1024 * 4
    assert workspace_bytes < 2.2 * input_bytes
    assert workspace_bytes - 2 * 64 * 1026 * 1026 * 4 < 16 << 20  # beyond the padded images: under 16 MiB


def test_a_large_image_in_bands_matches_f_conv2d() -> None:
    """An image whose columns exceed one band (2^20 numbers) goes in bands of output rows; the last
    band is shorter. Every path, with padding, against F.conv2d."""
    torch.manual_seed(0)
    for c_out, groups in ((8, 1), (3, 1), (16, 2)):
        layer = NativeConv2d(16, c_out, 3, padding=1, groups=groups, dtype=torch.float64)
        x = torch.randn(2, 16, 400, 37, dtype=torch.float64, requires_grad=True)
        assert 16 // groups * 9 * 39 * 400 > 1 << 20  # K x W x H_out: more columns than one band holds
        out = layer(x)
        grad_out = torch.randn_like(out)
        got = torch.autograd.grad(out, [x, layer.weight], grad_out)
        ref = F.conv2d(x, layer.weight, layer.bias, padding=1, groups=groups)
        want = torch.autograd.grad(ref, [x, layer.weight], grad_out)
        for g, w in zip((out, *got), (ref, *want), strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)
