"""How the C allocator hands memory back to the kernel.

A range query allocates arrays of several megabytes (decoded samples, the series x steps frames) and
frees them when it answers. glibc serves such sizes with fresh `mmap`s, or trims them off the heap
once freed, so the next query faults every page in again and the kernel zeroes each one: on the 10k
benchmark data that was a sixth of `sum by (job) (rate(...[5m]))` and a quarter of a
`histogram_quantile` range query. Keeping freed memory for reuse, as Go's runtime does for a while,
removes that work at the cost of holding on to the largest query's arrays.

The arrays are mostly allocated in query and kernel threads, and glibc gives each thread an arena of its
own: mmapped heaps of at most 64 MiB that it unmaps as soon as one is entirely free, whatever the trim
threshold says. A 6 h range query over blocks got fresh pages for its tens of megabytes of decoded
samples on every run that way (a tenth of its CPU time zeroing them). One arena for all threads keeps
that memory too; the threads allocate little else through malloc (Python objects come from pymalloc,
under the GIL), so they hardly contend for its lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Arrays below this come from the heap rather than their own mmap (glibc's dynamic threshold stops here too).
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory the heap keeps at its top before giving it back.
TRIM_THRESHOLD_BYTES = 128 << 20


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks of up to MMAP_THRESHOLD_BYTES for reuse (and up to
    TRIM_THRESHOLD_BYTES free at the heap's top), in one arena for all threads. Returns False where the C
    library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return (bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
            and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and bool(mallopt(_M_ARENA_MAX, 1)))
