"""How the C allocator hands memory back to the kernel.

A range query allocates arrays of several megabytes (decoded samples, the series x steps frames) and
frees them when it answers. glibc serves such sizes with fresh `mmap`s, or trims them off the heap
once freed, so the next query faults every page in again and the kernel zeroes each one: on the 10k
benchmark data that was a sixth of `sum by (job) (rate(...[5m]))` and a quarter of a
`histogram_quantile` range query. Keeping freed memory for reuse, as Go's runtime does for a while,
removes that work at the cost of holding on to the largest query's arrays.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Arrays below this come from the heap rather than their own mmap (glibc's dynamic threshold stops here too).
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory the heap keeps at its top before giving it back.
TRIM_THRESHOLD_BYTES = 128 << 20


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to MMAP_THRESHOLD_BYTES for reuse (and up to
    TRIM_THRESHOLD_BYTES free at the heap's top). Returns False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))
