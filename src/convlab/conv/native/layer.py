"""`native`: the convolution as small matrix products in C, compiled at first use; the fastest layer here.

Teaches: what a compiled kernel buys that PyTorch operations cannot, and what it takes to make
one a full PyTorch citizen. The arithmetic is `manual`'s (out = W @ im2col(x) + b,
dW = dout @ im2col(x)^T, dx = col2im(W^T @ dout)); `fast` shows that in PyTorch the copies
around the products, not the products, cost the time. Here one image's columns (a band of
output rows of a large image) are built, multiplied and dropped while they sit in the CPU's
cache, by a kernel of about 500 lines of C (`kernels.c`, which explains each choice), shared out
over PyTorch's own threads. Zero padding too is added there, image by image, rather than by a
padded copy of the batch. At the reference network's shapes that makes it faster than
`nn.Conv2d` forward + backward (docs/speed.md).

The kernels are registered as PyTorch operators (`op.py`: `torch.library.custom_op` with
`register_fake`, `register_autograd`, `register_vmap`). That is what lets `torch.compile(fullgraph=True)`
and `torch.export` trace this layer as one node instead of breaking the graph at a ctypes call,
and, with the backward written as convolutions again, gives gradients of any order (gradient
penalties, `gradgradcheck`), forward-mode AD and torch.func's transforms (vmap, grad, jacrev,
per-sample gradients).

Where it runs: float32 and float64 on the CPU. Other devices and real dtypes (CUDA, half
precision) take `fast`'s path, which this class inherits; complex numbers are refused. Tensors
on different devices raise a RuntimeError, as in `nn.Conv2d`. The first call compiles the kernel
(about a second; `convlab.conv.native.build` says how, and what to do without a C compiler);
later processes load it from a verified cache.
Memory: the batch's output and gradients, plus per thread one padded image, its gradient and one
band of columns (at most 4 MB of them per band, or one output row's).
"""

from __future__ import annotations

from torch import Tensor

from convlab.conv.fast import FastConv2d
from convlab.conv.native.build import C_TYPES
from convlab.conv.native.op import conv2d


class NativeConv2d(FastConv2d):
    """C kernels for float32 and float64 on the CPU; `fast`'s PyTorch path for other devices and real dtypes.

    The kernels add zero padding one image at a time (`pads_zeros_in_conv`); `fast`'s path gets its
    input padded by Conv2dBase, as every other layer here does.
    """

    def pads_zeros_in_conv(self, x: Tensor) -> bool:
        """Yes where the C kernels run: float32 and float64 on the CPU."""
        return x.device.type == "cpu" and x.dtype in C_TYPES

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """x (N, C_in, H, W), without its zero padding where the kernels run, weight (C_out, C_in/groups,
        kH, kW), bias (C_out,) or None -> (N, C_out, H_out, W_out)."""
        device = x.device
        if weight.device != device or (bias is not None and bias.device != device):
            tensors = {"input": x, "weight": weight} | ({} if bias is None else {"bias": bias})
            raise RuntimeError(
                "Expected all tensors to be on the same device, but got "
                + ", ".join(f"{name} on {t.device}" for name, t in tensors.items())
            )
        if self.pads_zeros_in_conv(x):  # x real; weight and bias of x's dtype (Conv2dBase checked)
            padding = self.zero_padding_left_to_conv(x)
            return conv2d(x, weight, bias, self.stride, padding, self.dilation, self.groups)
        if x.is_complex() or weight.is_complex() or (bias is not None and bias.is_complex()):
            raise TypeError(
                f"{type(self).__name__} (native) computes in real numbers only; complex input or weight "
                "is not supported (its gradients would need conjugates). Use nn.Conv2d for complex numbers."
            )
        return super()._conv(x, weight, bias)
