"""`keep_freed_memory`: large tensors come from the heap and their memory stays there once freed."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest
import torch

from convlab.training.allocator import keep_freed_memory


class MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc >= 2.33): sizes in bytes."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def mallinfo2():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = MallInfo2
    return libc.mallinfo2


def test_large_tensor_memory_stays_in_the_heap() -> None:
    info = mallinfo2()
    assert keep_freed_memory()
    size = 64 << 20
    mapped_before = info().hblkhd  # bytes glibc holds in separate mmap regions
    tensor = torch.ones(size // 4)
    # Without keep_freed_memory, 64 MiB is above glibc's largest mmap threshold: a region of its own.
    assert info().hblkhd - mapped_before < size
    del tensor
    # ... which free() would hand back to the OS; kept, it waits in the heap for the next tensor.
    assert info().fordblks >= size
