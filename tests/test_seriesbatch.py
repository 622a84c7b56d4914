"""SeriesBatch (many series' samples end to end) and the evaluator's batch helpers."""

from __future__ import annotations

import numpy as np

from mimird.promql.evaluator import _chunks, without_stale
from mimird.tsdb.seriesbatch import SeriesBatch

STALE = float(np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0])


def series(name: str, ts: list[int], vals: list[float]):
    return ((("__name__", name),), np.asarray(ts, dtype=np.int64), np.asarray(vals, dtype=np.float64))


def as_lists(batch: SeriesBatch):
    return [(labels, ts.tolist(), vals.view(np.uint64).tolist()) for labels, ts, vals in batch]


def test_from_series_skips_empty_series_and_iterates_views():
    items = [series("a", [1, 2], [1.0, 2.0]), series("b", [], []), series("c", [5], [3.0])]
    batch = SeriesBatch.from_series(items)
    assert batch.labels == [(("__name__", "a"),), (("__name__", "c"),)]
    assert batch.offsets.tolist() == [0, 2, 3] and batch.num_samples == 3
    assert [ts.tolist() for _, ts, _ in batch] == [[1, 2], [5]]
    assert len(SeriesBatch.from_series([])) == 0 and SeriesBatch.empty().num_samples == 0


def test_slice_shares_arrays_and_keeps_offsets():
    batch = SeriesBatch.from_series([series(n, [i, i + 1], [0.0, 1.0]) for i, n in enumerate("abcd")])
    part = batch.slice(1, 3)
    assert part.ts is batch.ts and part.offsets.tolist() == [2, 4, 6]
    assert [labels for labels, _, _ in part] == [(("__name__", "b"),), (("__name__", "c"),)]
    assert part.num_samples == 4 and part.lengths().tolist() == [2, 2]


def test_without_stale_drops_markers_and_emptied_series():
    batch = SeriesBatch.from_series([
        series("a", [1, 2, 3], [1.0, STALE, 3.0]),
        series("b", [4], [STALE]),
        series("c", [5, 6], [5.0, 6.0]),
    ])
    for part in (batch, batch.slice(1, 3)):
        cleaned = without_stale(part)
        expected = [(labels, ts[~(vals.view(np.uint64) == 0x7FF0000000000002)].tolist(),
                     vals[~(vals.view(np.uint64) == 0x7FF0000000000002)].view(np.uint64).tolist())
                    for labels, ts, vals in part]
        assert as_lists(cleaned) == [item for item in expected if item[1]]
    clean = SeriesBatch.from_series([series("x", [1], [1.0])])
    assert without_stale(clean) is clean


def test_chunks_split_after_the_series_that_reaches_the_size():
    batch = SeriesBatch.from_series([series(str(i), list(range(n)), [0.0] * n) for i, n in enumerate([3, 1, 4, 1, 5])])
    pieces = list(_chunks(batch, 4))
    assert [[labels[0][1] for labels in piece.labels] for piece in pieces] == [["0", "1"], ["2"], ["3", "4"]]
    assert sum(piece.num_samples for piece in pieces) == batch.num_samples
