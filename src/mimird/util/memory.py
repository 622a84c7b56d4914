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
import math
import sys
import threading

import numpy as np

# mallopt(3) parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Arrays below this come from the heap rather than their own mmap (glibc's dynamic threshold stops here too).
MMAP_THRESHOLD_BYTES = 32 << 20
# Free memory the heap keeps at its top before giving it back.
TRIM_THRESHOLD_BYTES = 128 << 20
# The most SpareBuffers keeps.
SPARE_BUFFER_BYTES = 256 << 20


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


class SpareBuffers:
    """Buffers for arrays too large for glibc's heap, kept for the next query that needs one.

    glibc serves an allocation of MMAP_THRESHOLD_BYTES or more (the most its threshold can be set to)
    with a fresh mmap and unmaps it when freed, whatever the settings above, so every such array is faulted
    in and zeroed by the kernel page by page. A 6 h range function over 4,000 series writes a 50 MB
    (series x steps) matrix: its page faults were a tenth of that query's CPU time. Arrays taken here are
    views of a spare buffer that nothing else points to, when one is large enough.

    A buffer is free when only this pool refers to it: every array that shares its memory (views, slices,
    memoryviews of them) holds a reference to it. At most `max_bytes` are kept; a larger demand gets an
    array of its own, as before."""

    def __init__(self, min_bytes: int = MMAP_THRESHOLD_BYTES, max_bytes: int = SPARE_BUFFER_BYTES):
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self._buffers: list[np.ndarray] = []
        # An array never lent out, counted the same way as the buffers: what a free buffer's count is under
        # whatever the interpreter counts (a call's argument is not a reference in every Python version).
        self._unlent: list[np.ndarray] = [np.empty(0, dtype=np.uint8)]
        self._lock = threading.Lock()

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised C-contiguous array, as np.empty(shape, dtype), in a spare buffer when it is at
        least `min_bytes`."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < self.min_bytes or nbytes > self.max_bytes:
            return np.empty(shape, dtype)
        with self._lock:
            buffer = self._take(nbytes)
        return buffer[:nbytes].view(dtype).reshape(shape)

    def _take(self, nbytes: int) -> np.ndarray:
        # The smallest free buffer that holds nbytes; else a new one, in place of free buffers too small for
        # it while the total would exceed max_bytes.
        free = [i for i in range(len(self._buffers)) if self._is_free(i)]
        fitting = [i for i in free if len(self._buffers[i]) >= nbytes]
        if fitting:
            return self._buffers[min(fitting, key=lambda i: len(self._buffers[i]))]
        held = sum(len(buffer) for buffer in self._buffers)
        for i in reversed(free):
            if held + nbytes <= self.max_bytes:
                break
            held -= len(self._buffers.pop(i))
        buffer = np.empty(nbytes, dtype=np.uint8)
        if held + nbytes <= self.max_bytes:
            self._buffers.append(buffer)
        return buffer

    def _is_free(self, index: int) -> bool:
        return sys.getrefcount(self._buffers[index]) == sys.getrefcount(self._unlent[0])

    def held_bytes(self) -> int:
        """The bytes the pool keeps, in use or not."""
        with self._lock:
            return sum(len(buffer) for buffer in self._buffers)


#: The process's spare buffers for large kernel outputs.
spare_buffers = SpareBuffers()
