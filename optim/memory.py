"""Keep freed memory in the process on glibc, for CPU training entry points.

By default glibc serves allocations over 32 MB with mmap and unmaps them on free, so every large
temporary tensor (a 4096x4096 fp32 DCT intermediate is 64 MB) is paid for again in page faults:
on this project's 2-core machine a fresh 64 MB `torch.zeros` took 30-90 ms against 3 ms to zero a
reused buffer, and the optimizer step ran about 2x slower. Entry points (benchmarks, the node)
call `retain_freed_memory()` once; library code never changes process-wide settings.
The cost is that the process keeps its peak heap instead of returning it to the OS.
"""

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Serve large allocations from the heap and never trim it. False where not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
