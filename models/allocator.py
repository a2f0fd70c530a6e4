"""CPU allocator setting: keep freed memory in the process heap instead of handing it back to the OS.

glibc serves every allocation above its mmap threshold (128 KiB to 32 MiB) with fresh pages and unmaps
them on free, so each training step faults its large tensors (activations, per-sample dynamic-conv
kernels, their gradients) in again, page by page. On the 2-core VM that doubled the time of a dynamic conv
with 256 channels (docs/benchmarks.md). Turning mmap off and never trimming the heap lets freed blocks be
reused, as jemalloc or tcmalloc would, at the price of the process keeping its peak memory. It is not a
caching allocator: a freed block bounded by live small objects stays a hole that an aligned allocation of
the same size does not fit, so a tensor freed and re-allocated alone can keep faulting; a training step's
pattern (many tensors, then all freed) settles after a few steps (tests/test_allocator.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
ENV = "CONVZOO_MALLOC"  # "system" leaves the allocator as it is


def keep_freed_memory() -> bool:
    """Tell glibc to serve large allocations from the heap and keep freed memory; True if it took effect.

    A no-op (False) off Linux, with another libc, or when ``CONVZOO_MALLOC=system`` is set.
    """
    if os.environ.get(ENV, "").lower() == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
