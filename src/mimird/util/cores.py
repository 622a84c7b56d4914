"""Helper threads for kernels that split one batch of work over the machine's cores.

Decoding a query's chunks and evaluating its range functions release the GIL for their loops; a heavy
query can then use every core, as VictoriaMetrics does with its per-series workers, by cutting its
series into contiguous parts and running all but one part in these threads (the caller runs one
itself). `split` makes the cut and `run_parts` the fan-out; the pool is shared and small: one thread per
extra usable core, at most MAX_PARTS - 1.

Before a fan-out the helpers are kept off the caller's current core. Waking a thread that has slept a
while, Linux tends to queue it on the waker's core (wake-affine placement), where it waits until the
caller's own part is done: the parts then run one after the other. On this project's 2-core machine a
144-series fold after 20 ms idle took 1.98 ms in two parts against 1.84 ms in one; with the helper kept
off the caller's core, 1.50 ms.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from mimird._fast.sched import current_cpu

T = TypeVar("T")

# The most parts one batch is split into.
MAX_PARTS = 4


# The cores this process may run on (empty where the system does not say: not on Linux).
_ALL_CORES = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()

#: How many parts a large batch is split into on this machine (1: no splitting).
PARTS = max(1, min(MAX_PARTS, len(_ALL_CORES) or os.cpu_count() or 1))

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()  # queries in several worker threads may ask for the pool first at once
_helper_ids: list[int] = []  # the pool threads' native ids, as they start
_helpers_kept_off = (-1, 0)  # the core the helpers were last kept off (-1: none yet), and how many helpers


def _note_helper() -> None:
    _helper_ids.append(threading.get_native_id())


def helper_pool() -> ThreadPoolExecutor:
    """The shared pool the extra parts run in."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(max_workers=max(1, PARTS - 1), thread_name_prefix="kernel-part",
                                           initializer=_note_helper)
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
    if len(parts) > 1:
        _keep_helpers_off(current_cpu())
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


def _keep_helpers_off(cpu: int) -> None:
    """Let the helper threads run anywhere but on `cpu` (see the module's docstring); the threads that start
    later (the pool starts them as work comes) run anywhere until the next fan-out."""
    global _helpers_kept_off
    helper_ids = list(_helper_ids)
    if (cpu, len(helper_ids)) == _helpers_kept_off:
        return
    others = _ALL_CORES - {cpu}
    if cpu < 0 or cpu not in _ALL_CORES or not others:
        return
    for native_id in helper_ids:
        try:
            os.sched_setaffinity(native_id, others)
        except OSError:  # a thread gone at shutdown, or affinity not ours to change
            return
    _helpers_kept_off = (cpu, len(helper_ids))
