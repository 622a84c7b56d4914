"""Helper threads for kernels that split one batch of work over the machine's cores.

Decoding a query's chunks and evaluating its range functions release the GIL for their loops; a heavy
query can then use every core, as VictoriaMetrics does with its per-series workers, by cutting its
series into contiguous parts and running all but one part in these threads (the caller runs one
itself). `split` makes the cut and `run_parts` the fan-out; the pool is shared and small: one thread per
extra usable core, at most MAX_PARTS - 1.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

T = TypeVar("T")

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


def split(prefix: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """At most `parts` contiguous, non-empty ranges [lo, hi) covering the n = len(prefix) - 1 items whose
    cumulative weights (samples) are `prefix`, cut where the running weight crosses each equal share, so
    that the parts take about equal time."""
    n = len(prefix) - 1
    if n < 2 or parts < 2:
        return [(0, n)] if n > 0 else []
    total = int(prefix[-1] - prefix[0])
    shares = prefix[0] + total * np.arange(1, parts) // parts
    inner_cuts = np.clip(np.searchsorted(prefix, shares), 1, n - 1)
    cuts = np.unique(np.concatenate(([0], inner_cuts, [n]))).tolist()
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def run_parts(run: Callable[[T], object], parts: Sequence[T]) -> None:
    """Call `run(part)` for every part at once: the first in this thread, the others in the helper pool
    (or here, once the pool takes no more work as the interpreter shuts down). Returns when all are done;
    a part's exception is raised then, never while other parts still write their outputs."""
    pending = []
    for part in parts[1:]:
        try:
            pending.append(helper_pool().submit(run, part))
        except RuntimeError:
            run(part)
    try:
        if parts:
            run(parts[0])
    finally:
        for future in pending:
            future.exception()  # wait; a failure is re-raised below
    for future in pending:
        future.result()
