"""Helper threads for kernels that split one batch of work over the machine's cores.

Decoding a query's chunks and evaluating its range functions release the GIL for their loops; a heavy
query can then use every core, as VictoriaMetrics does with its per-series workers, by cutting its
series into contiguous parts and running all but one part in these threads (the caller runs one
itself). The pool is shared and small: one thread per extra usable core, at most MAX_PARTS - 1.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

# The most parts one batch is split into.
MAX_PARTS = 4


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: How many parts a large batch is split into on this machine (1: no splitting).
PARTS = max(1, min(MAX_PARTS, _usable_cores()))

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()  # queries in several worker threads may ask for the pool first at once


def helper_pool() -> ThreadPoolExecutor:
    """The shared pool the extra parts run in."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, PARTS - 1), thread_name_prefix="kernel-part")
    return _pool
