"""Keep freed memory in the process, so that a timing measures the computation and not heap luck.

glibc's malloc serves a large request (above a threshold it moves at run time) with fresh pages from
the OS, and gives memory at the top of the heap back to the OS when it is freed. A layer that
allocates and frees megabytes per call can then pay a page fault for every 4 KiB page it touches, in
some processes and not in others, depending on how each process's heap happened to be laid out: the
same layer's step time then differs from process to process by several times.

`keep_freed_memory()` switches both behaviours off for the rest of the process: every request comes
from the heap and freed memory stays there for the next one. It cannot stop the heap from fragmenting
(a freed block too small for the next request still means new pages), but it takes away the
run-to-run lottery, for every contender of a benchmark alike, `nn.Conv2d` included, and for training.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# Bytes of free memory at the heap's top before glibc gives it back: never, in practice.
NEVER_TRIM = 2**31 - 1


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every request from the heap and never give freed memory back.

    Returns False, changing nothing, where the C library is not glibc (macOS, musl, Windows).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # mallopt returns 1 on success; both must hold or the timings keep their luck.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM))
