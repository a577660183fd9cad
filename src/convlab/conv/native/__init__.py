"""`native`: the convolution as small matrix products in C (kernels.c), compiled at first use (build.py)."""

from convlab.conv.native.layer import NativeConv2d

__all__ = ["NativeConv2d"]
