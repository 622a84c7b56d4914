"""Many series' samples in one pair of arrays: the form selections travel in from storage to PromQL.

A `SeriesBatch` holds label sets (sorted, unique) and, for series i, the samples
`ts[offsets[i]:offsets[i+1]]` / `vals[offsets[i]:offsets[i+1]]` (timestamps increasing). Readers that
decode many series at once fill it directly; the batch kernels of the PromQL engine take the arrays as
they are, so no per-series numpy array is made on the way. `merge_batches` merges batches of several
sources (ingester and store-gateway, tenants) into one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from mimird._fast.batchmerge import merge_batches as _merge_batches
from mimird.tsdb.labels import Labels

_EMPTY_TS = np.empty(0, dtype=np.int64)
_EMPTY_VALS = np.empty(0, dtype=np.float64)
# (shared and read-only: a read of a missing metric ran np.zeros for it, tens of microseconds when cold)
_EMPTY_OFFSETS = np.zeros(1, dtype=np.int64)
_EMPTY_TS.flags.writeable = _EMPTY_VALS.flags.writeable = _EMPTY_OFFSETS.flags.writeable = False


@dataclass
class SeriesBatch:
    """Label sets with their samples laid end to end (see the module docstring)."""

    labels: list[Labels]
    ts: np.ndarray
    vals: np.ndarray
    offsets: np.ndarray

    @classmethod
    def empty(cls) -> SeriesBatch:
        return cls([], _EMPTY_TS, _EMPTY_VALS, _EMPTY_OFFSETS)

    @classmethod
    def from_series(cls, series: Iterable[tuple[Labels, np.ndarray, np.ndarray]]) -> SeriesBatch:
        """A batch of (labels, ts, vals) items, in the order given; items without samples are left out."""
        labels, ts_parts, val_parts, lengths = [], [], [], []
        for lbls, ts, vals in series:
            if len(ts):
                labels.append(lbls)
                ts_parts.append(ts)
                val_parts.append(vals)
                lengths.append(len(ts))
        if not labels:
            return cls.empty()
        offsets = np.zeros(len(labels) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(labels, np.concatenate(ts_parts).astype(np.int64, copy=False),
                   np.concatenate(val_parts).astype(np.float64, copy=False), offsets)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_samples(self) -> int:
        # (item() gives Python ints: no numpy scalars and their arithmetic, which every read runs cold)
        return self.offsets.item(-1) - self.offsets.item(0)

    def lengths(self) -> np.ndarray:
        """Samples per series."""
        return np.diff(self.offsets)

    def __iter__(self) -> Iterator[tuple[Labels, np.ndarray, np.ndarray]]:
        """(labels, ts, vals) per series; the arrays are views into the batch's."""
        bounds = self.offsets.tolist()
        ts, vals = self.ts, self.vals
        for i, lbls in enumerate(self.labels):
            yield lbls, ts[bounds[i]:bounds[i + 1]], vals[bounds[i]:bounds[i + 1]]

    def slice(self, first: int, last: int) -> SeriesBatch:
        """Series first..last-1 (the sample arrays are shared, the offsets say where each starts)."""
        return SeriesBatch(self.labels[first:last], self.ts, self.vals, self.offsets[first:last + 1])


def merge_batches(batches: Sequence[SeriesBatch]) -> SeriesBatch:
    """One batch, in label order, of label-sorted batches given in priority order (head, local blocks,
    bucket blocks, tenants). A series in several batches gets their samples merged by timestamp, one
    sample per timestamp: the earliest batch's (as a stable sort by timestamp that keeps the first)."""
    batches = [batch for batch in batches if len(batch)]
    if not batches:
        return SeriesBatch.empty()
    if len(batches) == 1:
        return batches[0]
    labels, offsets, ts, vals = _merge_batches(
        [batch.labels for batch in batches], [np.ascontiguousarray(batch.ts, dtype=np.int64) for batch in batches],
        [np.ascontiguousarray(batch.vals, dtype=np.float64) for batch in batches],
        [np.ascontiguousarray(batch.offsets, dtype=np.int64) for batch in batches])
    return SeriesBatch(labels, ts, vals, offsets)
