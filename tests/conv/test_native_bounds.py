"""native's C kernel reads no number outside the tensors it is given.

The kernel reads whole vectors where it can: a column row, or a run of the image read in place, may
take in up to a vector past its last result. Inside the kernel's own workspace that slack is laid
out; past the end of a caller's tensor it would be a read of memory no one owns, silent until it
crosses a page. Here every tensor the kernel reads (input, weight, output gradient) ends exactly
where a page that may not be read begins, so an over-read is a crash. Each case runs in a process of
its own, which reports a crash as a failure instead of ending the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

CHECK = textwrap.dedent(
    """
    import ctypes, mmap, sys
    import torch, torch.nn.functional as F
    from torch import nn
    from convlab.conv.native import NativeConv2d

    libc = ctypes.CDLL(None)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    KEEP = []

    def at_page_end(t):
        # A copy of t whose last byte is the last before a page that may not be read.
        nbytes = t.numel() * t.element_size()
        pages = -(-nbytes // mmap.PAGESIZE) + 1
        buf = mmap.mmap(-1, pages * mmap.PAGESIZE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        assert libc.mprotect(base + (pages - 1) * mmap.PAGESIZE, mmap.PAGESIZE, 0) == 0  # PROT_NONE
        offset = (pages - 1) * mmap.PAGESIZE - nbytes
        flat = torch.frombuffer(buf, dtype=t.dtype, count=t.numel(), offset=offset)
        flat.copy_(t.reshape(-1))
        KEEP.append(buf)
        return flat.view(t.shape)

    x_shape, w_shape, kwargs, dtype = eval(sys.argv[1])
    dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    x0, w0 = torch.randn(x_shape, dtype=dtype), torch.randn(w_shape, dtype=dtype)
    layer = NativeConv2d(x_shape[1], w_shape[0], w_shape[2:], bias=False, dtype=dtype, **kwargs)
    layer.weight = nn.Parameter(at_page_end(w0))
    x = at_page_end(x0).requires_grad_()
    out = layer(x)
    grad_out = at_page_end(torch.randn_like(out))
    dx, dw = torch.autograd.grad(out, (x, layer.weight), grad_out)

    # The values too, against float64 sums: float32's error grows with the length of each sum.
    x_ref, w_ref = x0.double().requires_grad_(), w0.double().requires_grad_()
    out_ref = F.conv2d(x_ref, w_ref, **kwargs)
    dx_ref, dw_ref = torch.autograd.grad(out_ref, (x_ref, w_ref), grad_out.double())
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for name, got, want in (("out", out, out_ref), ("dx", dx, dx_ref), ("dW", dw, dw_ref)):
        atol = tol * want.abs().max().item()
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=atol, msg=lambda m: f"{name}: {m}")
    print("ok")
    """
)

# Shapes that take every way the kernel reads: columns copied, the image read in place (depthwise,
# full width, padded or not), the columns transposed, dW by output channel; bands of one row's length.
CASES = {
    "depthwise": ((2, 3, 20, 20), (3, 1, 3, 3), {"groups": 3}),
    "depthwise, padded": ((2, 3, 20, 20), (3, 1, 3, 3), {"groups": 3, "padding": 1}),
    "depthwise, dilated": ((2, 2, 19, 21), (2, 1, 3, 3), {"groups": 2, "padding": 2, "dilation": 2}),
    "two inputs per output, padded": ((2, 4, 17, 17), (2, 2, 3, 3), {"groups": 2, "padding": 1}),
    "conv1": ((2, 1, 28, 28), (10, 1, 5, 5), {}),
    "conv2": ((2, 10, 12, 12), (20, 10, 5, 5), {}),
    "by output, padded": ((2, 4, 9, 9), (32, 2, 3, 3), {"padding": 1, "groups": 2}),
    "strided": ((2, 3, 11, 11), (4, 3, 3, 3), {"stride": 2, "padding": 1}),
    "strided, unpadded": ((2, 3, 12, 37), (4, 3, 3, 3), {"stride": 2}),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_no_read_past_any_tensor_the_kernel_is_given(case: str, dtype: str) -> None:
    x_shape, w_shape, kwargs = CASES[case]
    argument = repr((x_shape, w_shape, kwargs, dtype))
    command = [sys.executable, "-c", CHECK, argument]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{case} ({dtype}): exit status {result.returncode} (-11: a read past a tensor's end)\n"
        + result.stderr[-3000:]
    )
    assert result.stdout.strip().endswith("ok")
