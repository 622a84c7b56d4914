"""The head's append rules (Prometheus's, with Mimir's messages) and its selection by matchers."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mimird._fast import xorchunk
from mimird.tsdb.head import DUPLICATE, OUT_OF_ORDER, PER_USER_SERIES, TOO_OLD, Head
from mimird.tsdb.labels import Matcher, make_labels

HOUR = 3600_000


def lbl(name, **labels):
    return make_labels({"__name__": name, **labels})


def push(head, series: dict, **kwargs):
    """series: {labels: [(t, v), ...]}"""
    labels, offsets, ts, vs = [], [0], [], []
    for key, samples in series.items():
        labels.append(key)
        for t, v in samples:
            ts.append(t)
            vs.append(v)
        offsets.append(len(ts))
    return head.append(labels, offsets, ts, vs, **kwargs)


def samples(head, **match):
    matchers = [Matcher("=", k, v) for k, v in match.items()]
    return {labels: list(zip(ts.tolist(), vs.tolist(), strict=True)) for labels, ts, vs in head.select(matchers)}


def test_append_and_select():
    head = Head()
    a, b = lbl("up", job="a"), lbl("up", job="b")
    result = push(head, {a: [(1000, 1.0), (2000, 2.0)], b: [(1000, 5.0)]})
    assert (result.samples_appended, result.series_created, result.first_error) == (3, 2, None)
    assert result.new_series == [(1, a), (2, b)]
    assert samples(head, job="a") == {a: [(1000, 1.0), (2000, 2.0)]}
    assert set(samples(head, __name__="up")) == {a, b}
    got = list(head.select([Matcher("=", "job", "a")], 1500, 2500))
    assert got[0][1].tolist() == [2000]


def test_chunks_cut_at_120_samples_and_block_boundary():
    head = Head()
    a = lbl("m")
    push(head, {a: [(i * 1000, float(i)) for i in range(250)]})
    series = head.by_labels[a]
    assert [xorchunk.num_samples(c) for c in series.chunks] == [120, 120]
    assert series.open.num_samples == 10
    head2 = Head()
    push(head2, {a: [(2 * HOUR - 1000, 1.0), (2 * HOUR, 2.0)]})
    assert len(head2.by_labels[a].chunks) == 1  # the boundary closed the first chunk


def test_closed_chunks_live_in_one_pack_that_is_replaced_not_changed():
    head = Head()
    a = lbl("m")
    push(head, {a: [(i * 1000, float(i)) for i in range(250)]})
    series = head.by_labels[a]
    first_pack = series.closed
    assert series.num_closed == 2 and series.chunk_mints == [0, 120_000] and series.chunk_maxts == [119_000, 239_000]
    assert len(first_pack) == 2 * 24 + sum(len(c) for c in series.chunks)
    push(head, {a: [(i * 1000, float(i)) for i in range(250, 400)]})
    assert series.num_closed == 3 and series.closed is not first_pack  # a query may still point into it
    assert xorchunk.decode_chunks(series.chunks)[0].tolist() == [i * 1000 for i in range(360)]
    assert series.drop_closed_before(120_000) == 1 and series.chunk_mints == [120_000, 240_000]
    assert series.drop_closed_before(0) == 0 and series.min_time == 120_000
    series.set_closed_chunks([], [], [])
    assert (series.closed, series.num_closed, series.chunks) == (b"", 0, [])


def test_duplicates_out_of_order_and_too_old():
    head = Head()
    a = lbl("m", job="x")
    push(head, {a: [(10_000, 1.0)]})
    result = push(head, {a: [(10_000, 1.0)]})  # identical resend: silently fine
    assert result.first_error is None and result.samples_appended == 0
    result = push(head, {a: [(10_000, 2.0), (11_000, 3.0)]})
    assert result.discarded == {DUPLICATE: 1} and result.samples_appended == 1
    assert result.first_error.startswith("the sample has been rejected because another sample with the same "
                                         "timestamp, but a different value, has already been ingested "
                                         "(err-mimir-sample-duplicate-timestamp). The affected sample has "
                                         "timestamp 1970-01-01T00:00:10Z and is from series")
    assert result.first_error.endswith('{__name__="m", job="x"}')
    result = push(head, {a: [(9_000, 3.0)]})
    assert result.discarded == {OUT_OF_ORDER: 1}
    assert "(err-mimir-sample-out-of-order)" in result.first_error
    # a new series far behind the head's max time is out of bounds
    push(head, {lbl("other"): [(5 * HOUR, 1.0)]})
    result = push(head, {lbl("late"): [(HOUR, 1.0)]})
    assert result.discarded == {TOO_OLD: 1}
    assert "its timestamp is too old (err-mimir-sample-timestamp-too-old)" in result.first_error
    assert samples(head, job="x") == {a: [(10_000, 1.0), (11_000, 3.0)]}


def test_out_of_order_window_merges_into_queries():
    head = Head(ooo_window_ms=HOUR)
    a = lbl("m")
    push(head, {a: [(10 * HOUR, 1.0), (10 * HOUR + 3000, 4.0)]})
    result = push(head, {a: [(10 * HOUR + 1000, 2.0), (10 * HOUR - 1000, 0.5), (10 * HOUR + 2000, 3.0)]})
    assert result.first_error is None and result.samples_appended == 3
    got = samples(head, __name__="m")
    assert got[a] == [(10 * HOUR - 1000, 0.5), (10 * HOUR, 1.0), (10 * HOUR + 1000, 2.0),
                      (10 * HOUR + 2000, 3.0), (10 * HOUR + 3000, 4.0)]
    result = push(head, {a: [(8 * HOUR, 1.0)]})
    assert result.discarded == {TOO_OLD: 1}
    assert "beyond the out-of-order time window of 1h0m0s" in result.first_error
    result = push(head, {a: [(10 * HOUR + 1000, 9.0), (10 * HOUR, 9.0)]})
    assert result.discarded == {DUPLICATE: 2}


def test_series_limit():
    head = Head()
    result = push(head, {lbl("a"): [(1, 1.0)], lbl("b"): [(1, 1.0)], lbl("c"): [(1, 1.0), (2, 2.0)]},
                  max_series=2)
    assert result.samples_appended == 2 and result.discarded == {PER_USER_SERIES: 2}
    assert result.first_error.startswith("per-user series limit of 2 exceeded (err-mimir-max-series-per-user)")
    # existing series still take samples
    assert push(head, {lbl("a"): [(2, 1.0)]}, max_series=2).samples_appended == 1


def test_special_values_round_trip():
    head = Head()
    a = lbl("m")
    values = [math.inf, -math.inf, math.nan, xorchunk.STALE_NAN, -0.0]
    push(head, {a: [(i, v) for i, v in enumerate(values)]})
    [(_, ts, vs)] = list(head.select([Matcher("=", "__name__", "m")]))
    assert vs.view(np.uint64).tolist() == np.array(values).view(np.uint64).tolist()


def test_truncate_removes_old_data_and_empty_series():
    head = Head()
    old, new = lbl("old"), lbl("new")
    push(head, {old: [(1000, 1.0)], new: [(1000, 1.0)]})
    push(head, {new: [(4 * HOUR, 2.0)]})
    assert head.compactable()
    blocks = list(head.series_for_block(0, 2 * HOUR))
    assert [labels for labels, _, _ in blocks] == [new, old]
    assert head.truncate(2 * HOUR) == 1
    assert set(samples(head, __name__="new")) | set(samples(head, __name__="old")) == {new}
    assert samples(head, __name__="new")[new] == [(4 * HOUR, 2.0)]
    assert push(head, {old: [(1500, 1.0)]}).discarded == {TOO_OLD: 1}
    assert head.index.select([Matcher("=", "__name__", "old")]).size == 0


def test_series_by_ref_behaves_as_a_dict_through_growth_and_removals():
    from mimird._fast.headseries import MemSeries, SeriesByRef

    rng = random.Random(7)
    table, model = SeriesByRef(), {}
    # Refs as a head hands them out (consecutive, some removed) and a few far apart, which collide
    # in small tables.
    candidates = list(range(1, 3000)) + [2**40 + i for i in range(50)] + [2**64 - 1]
    for step in range(20000):
        ref = rng.choice(candidates)
        if rng.random() < 0.6:
            series = MemSeries(ref, (("__name__", str(ref)),))
            table[ref] = series
            model[ref] = series
        else:
            assert table.pop(ref, None) is model.pop(ref, None)
        if step % 997 == 0:
            assert len(table) == len(model)
            assert sorted(table.keys()) == sorted(model)
            assert all(table[r] is s and table.get(r) is s and r in table for r, s in model.items())
    assert sorted(table.items(), key=lambda item: item[0]) == sorted(model.items())
    assert {id(s) for s in table.values()} == {id(s) for s in model.values()}
    missing = next(r for r in candidates if r not in model)
    assert missing not in table and table.get(missing) is None
    with pytest.raises(KeyError):
        table[missing]
    with pytest.raises(KeyError):
        table.pop(missing)
    for ref in list(model):
        del table[ref]
    assert len(table) == 0 and table.items() == [] and table.memory_bytes > 0
