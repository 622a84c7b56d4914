"""Statistics of one PromQL evaluation, as Prometheus's `util/stats` reports them under `data.stats` when a
query request has a non-empty `stats` parameter (per-step sample counts only with `stats=all`).

Counting follows Prometheus 3.5's evaluator: an instant selector counts one sample for every series and
step it yields a value for, a range function counts at every step the samples in that step's window (so
a sample seen by several steps counts several times), the samples of a subquery's inner expression are
counted only when the subquery itself is the result (all at the last step), and a step-invariant
expression's samples count at every step. `peakSamples` is the largest number of samples the engine held
for one node at once (what it checks against `-querier.max-samples`), close to Prometheus's running
`currentSamples` peak for the common query shapes.
"""

from __future__ import annotations

import numpy as np

TIMING_NAMES = ("evalTotalTime", "resultSortTime", "queryPreparationTime", "innerEvalTime", "execQueueTime",
                "execTotalTime")


class QueryStatistics:
    """Sample counts and timings (seconds) of one query; `per_step` adds the counts by step."""

    def __init__(self, per_step: bool = False):
        self.per_step = per_step
        self.total_samples = 0
        self.peak_samples = 0
        self.timings = dict.fromkeys(TIMING_NAMES, 0.0)
        self.step_counts: np.ndarray | None = None
        self.start_ms = 0
        self.interval_ms = 1

    def init_steps(self, start_ms: int, end_ms: int, interval_ms: int) -> None:
        """Set up the per-step counters for the query's step grid."""
        self.start_ms, self.interval_ms = start_ms, max(interval_ms, 1)
        if self.per_step:
            self.step_counts = np.zeros((end_ms - start_ms) // self.interval_ms + 1, dtype=np.int64)

    def child(self) -> QueryStatistics:
        """Counters for a nested evaluation (subquery, step-invariant expression): totals only."""
        return QueryStatistics(per_step=False)

    def add_steps(self, counts: np.ndarray) -> None:
        """Samples counted at each step; `counts` is aligned with the query's grid when it has its length."""
        total = int(counts.sum())
        self.total_samples += total
        if self.step_counts is not None and total:
            if len(counts) == len(self.step_counts):
                self.step_counts += counts.astype(np.int64, copy=False)
            else:
                self.step_counts[-1] += total

    def add_at_last_step(self, n: int) -> None:
        """Samples counted at the query's last step (Prometheus's IncrementSamplesAtTimestamp(end, n))."""
        self.total_samples += n
        if self.step_counts is not None and len(self.step_counts):
            self.step_counts[-1] += n

    def add_every_step(self, n: int) -> None:
        """Samples counted once at every step."""
        if self.step_counts is None:
            self.total_samples += n
            return
        self.total_samples += n * len(self.step_counts)
        self.step_counts += n

    def update_peak(self, n: int) -> None:
        if n > self.peak_samples:
            self.peak_samples = n
