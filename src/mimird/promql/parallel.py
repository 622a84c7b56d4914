"""Range-function kernels spread over the machine's cores (`mimird.util.cores`).

A heavy dashboard query spends a third of its time in `rangefn.evaluate_batch`, which releases the GIL
for its whole loop over series. Its series are cut into contiguous parts of equal sample counts, one
evaluated by the calling thread and the others at the same time by helper threads. Small batches stay
in one call: waking a helper costs tens of microseconds.

The parts index the same timestamp and value arrays through slices of the offsets (no copies), and each
part writes its own block of rows of one output, so the result is exactly that of one call.
"""

from __future__ import annotations

import numpy as np

from mimird._fast import rangefn
from mimird.util import cores

# Raw samples from which a batch is split: below this one call takes well under a millisecond.
PARALLEL_MIN_SAMPLES = 100_000


def _parts(offsets: np.ndarray, parts: int | None) -> list[tuple[int, int]] | None:
    """The series ranges a batch is cut into (up to `parts`, default `cores.PARTS`), or None when it is
    evaluated in one call: a single part, a single series or fewer than PARALLEL_MIN_SAMPLES samples."""
    parts = cores.PARTS if parts is None else parts
    n_series = len(offsets) - 1
    if parts <= 1 or n_series < 2 or int(offsets[-1] - offsets[0]) < PARALLEL_MIN_SAMPLES:
        return None
    return cores.split(offsets, parts)


def evaluate_batch(name: str, ts: np.ndarray, vals: np.ndarray, offsets: np.ndarray, eval_ts: np.ndarray,
                   range_ms: int, params: tuple = (), intercept_shift_ms: int = 0,
                   parts: int | None = None, out: np.ndarray | None = None,
                   present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`rangefn.evaluate_batch` with the series split over up to `parts` threads (default
    `cores.PARTS`, one per usable core) when the batch holds at least PARALLEL_MIN_SAMPLES samples;
    written into `out` and `present` (float64 and zeroed uint8, one row per series) when given."""
    bounds = _parts(offsets, parts)
    if bounds is None:
        return rangefn.evaluate_batch(name, ts, vals, offsets, eval_ts, range_ms, params, intercept_shift_ms,
                                      out, present)
    if out is None or present is None:
        out = np.empty((len(offsets) - 1, len(eval_ts)), dtype=np.float64)
        present = np.zeros((len(offsets) - 1, len(eval_ts)), dtype=np.uint8)

    def run(bounds: tuple[int, int]) -> None:
        lo, hi = bounds
        rangefn.evaluate_batch(name, ts, vals, offsets[lo:hi + 1], eval_ts, range_ms, params, intercept_shift_ms,
                               out[lo:hi], present[lo:hi])

    cores.run_parts(run, bounds)
    return out, present


def evaluate_instant(name: str, ts: np.ndarray, vals: np.ndarray, offsets: np.ndarray, t: int, range_ms: int,
                     parts: int | None = None) -> tuple[list[int], list[float], int]:
    """`rangefn.evaluate_instant` with the series split over up to `parts` threads, as `evaluate_batch`
    splits them; the parts' rows and values are joined in series order."""
    bounds = _parts(offsets, parts)
    if bounds is None:
        return rangefn.evaluate_instant(name, ts, vals, offsets, t, range_ms)
    results: list = [None] * len(bounds)

    def run(part: int) -> None:
        lo, hi = bounds[part]
        results[part] = rangefn.evaluate_instant(name, ts, vals, offsets[lo:hi + 1], t, range_ms)

    cores.run_parts(run, range(len(bounds)))
    rows: list[int] = []
    values: list[float] = []
    held = 0
    for (lo, _), (part_rows, part_values, part_held) in zip(bounds, results, strict=True):
        rows += [lo + row for row in part_rows]
        values += part_values
        held += part_held
    return rows, values, held
