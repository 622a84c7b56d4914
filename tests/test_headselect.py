"""The head's batched select (`Head.select_batch`, `mimird._fast.headselect`) against the per-series path
it replaced: per series a snapshot, a decode of its chunks and a merge with its out-of-order samples."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mimird._fast import xorchunk
from mimird._fast.headselect import HeadSnapshot
from mimird.tsdb.fetchobserver import chunk_fetch_observer
from mimird.tsdb.head import INT64_MAX, INT64_MIN, Head, merge_samples
from mimird.tsdb.labels import Matcher, make_labels
from mimird.tsdb.series_index import SeriesIndex
from test_head import push

HOUR = 3600_000


def reference_select(head: Head, matchers, mint: int, maxt: int):
    """The per-series read: (labels, ts, vals) of every matching series with samples, sorted by labels."""
    out = []
    with head.lock:
        snapshots = []
        for ref in head.index.select(matchers).tolist():
            series = head.series.get(ref)
            if series is not None:
                snapshots.append((series.labels, *series.snapshot(mint, maxt)))
    for labels, chunks, ooo_t, ooo_v in sorted(snapshots, key=lambda item: item[0]):
        ts, vals = xorchunk.decode_chunks(chunks, mint, maxt)
        ts, vals = merge_samples(ts, vals, ooo_t, ooo_v)
        if len(ts):
            out.append((labels, ts, vals))
    return out


def assert_same(got, want):
    assert [labels for labels, _, _ in got] == [labels for labels, _, _ in want]
    for (_, ts, vals), (_, want_ts, want_vals) in zip(got, want, strict=True):
        assert ts.tolist() == want_ts.tolist()
        assert vals.view(np.uint64).tolist() == want_vals.view(np.uint64).tolist()


def random_head(rng: random.Random, n_series: int = 60) -> Head:
    """Series with 0-400 in-order samples (several chunks, an open one), some out-of-order samples."""
    head = Head(ooo_window_ms=HOUR, block_range_ms=2 * HOUR)
    names = ["m_a", "m_b", "m"]
    all_labels = set()
    while len(all_labels) < n_series:
        pairs = {"__name__": rng.choice(names), "job": rng.choice(["api", "node", "db", "a"])}
        for extra in ("instance", "le", "zone"):
            if rng.random() < 0.6:
                pairs[extra] = rng.choice(["0", "1", "10", "2", "x", "x:1", "é", ""]) + str(rng.randrange(4))
        all_labels.add(make_labels(pairs))
    labels = sorted(all_labels, key=lambda _: rng.random())
    step = 15_000
    n_steps = 400
    for k in range(n_steps):
        batch = {}
        for i, lbls in enumerate(labels):
            if rng.random() < 0.8 and (i % 7 != 0 or k < 50):
                value = rng.choice([float(k), rng.random(), math.inf, -0.0, xorchunk_stale()])
                batch[lbls] = [(k * step + i, value)]
        push(head, batch)
    # out-of-order samples in between and ties with in-order samples
    for lbls in labels[::3]:
        samples = [(rng.randrange(n_steps - 100, n_steps) * step + rng.randrange(-500, 500), rng.random())
                   for _ in range(rng.randrange(1, 8))]
        for t, v in sorted(set(samples)):
            push(head, {lbls: [(t, v)]})
    # ties with in-order samples (the head's append refuses them; the merge must still keep the in-order one)
    for lbls in labels[1::4]:
        series = head.by_labels[lbls]
        ts, _ = xorchunk.decode_chunks(series.snapshot(INT64_MIN, INT64_MAX)[0])
        for t in rng.sample(ts.tolist(), min(3, len(ts))):
            series.insert_ooo(t, -1.0)
    return head


def xorchunk_stale() -> float:
    return float(np.array([0x7FF0000000000002], dtype=np.uint64).view(np.float64)[0])


MATCHER_SETS = [
    [Matcher("=~", "__name__", ".+")],
    [Matcher("=", "__name__", "m")],
    [Matcher("=", "job", "api"), Matcher("!=", "instance", "")],
    [Matcher("=~", "__name__", "m_.*"), Matcher("=~", "le", "1.*|")],
    [Matcher("=", "__name__", "nope")],
]


@pytest.mark.parametrize("seed", range(4))
def test_batch_matches_per_series_path(seed):
    rng = random.Random(seed)
    head = random_head(rng)
    ranges = [(INT64_MIN, INT64_MAX), (0, 400 * 15_000), (300 * 15_000, 390 * 15_000),
              (399 * 15_000, 399 * 15_000), (10**12, 2 * 10**12), (5000, 4000), (0, 0)]
    for _ in range(10):
        lo = rng.randrange(-10_000, 400 * 15_000)
        ranges.append((lo, lo + rng.randrange(0, 3 * HOUR)))
    for matchers in MATCHER_SETS:
        for mint, maxt in ranges:
            want = reference_select(head, matchers, mint, maxt)
            batch = head.select_batch(matchers, mint, maxt)
            assert_same(list(batch), want)
            assert_same(list(head.select(matchers, mint, maxt)), want)
            assert batch.offsets[0] == 0 and batch.offsets[-1] == len(batch.ts) == len(batch.vals)



def observed_select(head: Head, matchers, mint: int, maxt: int, latest_only: bool):
    """(batch, [(chunks, bytes) reported to the chunk-fetch observer])"""
    seen = []
    token = chunk_fetch_observer.set(lambda chunks, nbytes: seen.append((chunks, nbytes)))
    try:
        return head.select_batch(matchers, mint, maxt, latest_only), seen
    finally:
        chunk_fetch_observer.reset(token)


@pytest.mark.parametrize("seed", range(4))
def test_latest_only_keeps_each_series_newest_sample(seed):
    """An instant selection's read: the same series, each ending with the same newest sample (value bits
    included, stale markers too), the same chunks reported; series whose newest head sample is past maxt
    are read whole."""
    rng = random.Random(seed)
    head = random_head(rng)
    ranges = [(INT64_MIN, INT64_MAX), (0, 400 * 15_000), (390 * 15_000 - 300_000 + 1, 390 * 15_000),
              (399 * 15_000 - 300_000 + 1, 399 * 15_000 + 60), (60 * 15_000 - 300_000 + 1, 60 * 15_000), (0, 0)]
    for _ in range(10):
        maxt = rng.randrange(0, 410 * 15_000)
        ranges.append((maxt - 300_000 + 1, maxt))
    for matchers in MATCHER_SETS:
        for mint, maxt in ranges:
            full, full_seen = observed_select(head, matchers, mint, maxt, False)
            latest, latest_seen = observed_select(head, matchers, mint, maxt, True)
            assert latest_seen == full_seen
            assert latest.labels == full.labels
            for (_, ts, vals), (_, want_ts, want_vals) in zip(latest, full, strict=True):
                assert ts[-1] == want_ts[-1]
                assert vals[-1:].view(np.uint64).tolist() == want_vals[-1:].view(np.uint64).tolist()
                if len(ts) < len(want_ts):
                    assert len(ts) == 1
                else:
                    assert ts.tolist() == want_ts.tolist()
            shortened = sum(len(a[1]) < len(b[1]) for a, b in zip(latest, full, strict=True))
            if maxt >= 399 * 15_000 + 60 and full.labels:
                assert shortened > 0  # the newest samples of the open chunks were taken without decoding


def test_windows_ending_inside_runs_of_unchanged_samples():
    """Series scraped on time with values that rarely change, read through windows that end inside such
    runs: the head's decoder stops at the first sample past maxt in the middle of a run."""
    rng = random.Random(11)
    head = Head(block_range_ms=2 * HOUR)
    labels = [make_labels({"__name__": "up", "i": str(i)}) for i in range(12)]
    for k in range(500):
        push(head, {lbls: [(k * 15_000 + i, 1.0 if i % 3 or k % 97 else float(k))] for i, lbls in enumerate(labels)})
    matchers = [Matcher("=", "__name__", "up")]
    for _ in range(60):
        lo = rng.randrange(-20_000, 500 * 15_000)
        hi = lo + rng.randrange(0, 2 * HOUR)
        assert_same(list(head.select_batch(matchers, lo, hi)), reference_select(head, matchers, lo, hi))

def test_batch_after_truncate_removes_series():
    rng = random.Random(7)
    head = random_head(rng)
    removed = head.truncate(60 * 15_000)
    assert removed > 0
    for matchers in MATCHER_SETS:
        for mint, maxt in [(INT64_MIN, INT64_MAX), (0, 100 * 15_000), (350 * 15_000, INT64_MAX)]:
            assert_same(list(head.select_batch(matchers, mint, maxt)), reference_select(head, matchers, mint, maxt))


def test_open_chunk_appended_after_snapshot_is_not_seen():
    head = Head()
    lbls = make_labels({"__name__": "m"})
    push(head, {lbls: [(i * 1000, float(i)) for i in range(10)]})
    with head.lock:
        snapshot = HeadSnapshot.take(head.series, np.array([head.by_labels[lbls].ref, 99], dtype=np.uint64),
                                     INT64_MIN, INT64_MAX)
    push(head, {lbls: [(i * 1000, float(i)) for i in range(10, 300)]})  # appends, cuts chunks
    labels, offsets, ts, vals = snapshot.decode()
    assert labels == [lbls] and offsets.tolist() == [0, 10]
    assert ts.tolist() == [i * 1000 for i in range(10)] and vals.tolist() == [float(i) for i in range(10)]


def test_chunks_are_reported_to_the_observer():
    head = Head()
    push(head, {make_labels({"__name__": "m", "i": str(i)}): [(t * 1000, 1.0) for t in range(150)]
                for i in range(3)})
    seen = []
    token = chunk_fetch_observer.set(lambda chunks, nbytes: seen.append((chunks, nbytes)))
    try:
        batch = head.select_batch([Matcher("=", "__name__", "m")], 0, 200_000)
    finally:
        chunk_fetch_observer.reset(token)
    expected_bytes = sum(len(c) for s in head.series.values() for c in s.chunks) + sum(
        s.open.nbytes for s in head.series.values())
    assert seen == [(6, expected_bytes)]
    assert len(batch) == 3 and batch.num_samples == 450


def test_sort_by_labels_orders_as_tuples():
    rng = random.Random(3)
    index = SeriesIndex()
    label_sets = set()
    while len(label_sets) < 300:
        pairs = {}
        for name in ("__name__", "a", "ab", "b", "z"):
            if rng.random() < 0.7:
                pairs[name] = rng.choice(["", "0", "00", "1", "a", "aa", "b", "Z", "é", "~"])
        label_sets.add(make_labels(pairs))
    refs = [index.get_or_create(labels)[0] for labels in label_sets]
    ordered = index.sort_by_labels(np.asarray(sorted(refs), dtype=np.uint64))
    assert [index.labels_of(ref) for ref in ordered.tolist()] == sorted(label_sets)
    assert index.sort_by_labels(np.asarray([10**6], dtype=np.uint64)).tolist() == []


def test_sort_by_labels_with_many_distinct_values_uses_several_keys():
    rng = random.Random(5)
    index = SeriesIndex()
    label_sets = set()
    while len(label_sets) < 2000:
        pairs = {name: str(rng.randrange(100_000)) for name in ("a", "b", "c", "d", "e", "f", "g", "h")
                 if rng.random() < 0.9}
        pairs["same"] = "x"
        if rng.random() < 0.3:
            pairs.update(a="1", b="2")  # ties in the first columns, decided by later ones
        label_sets.add(make_labels(pairs))
    refs = [index.get_or_create(labels)[0] for labels in label_sets]
    slots = np.arange(len(refs))
    assert len(index._store.sort_keys(slots, index._symbols)) > 1
    ordered = index.sort_by_labels(np.asarray(sorted(refs), dtype=np.uint64))
    assert [index.labels_of(ref) for ref in ordered.tolist()] == sorted(label_sets)


@pytest.mark.parametrize("seed", range(3))
def test_decode_in_parts_equals_one_pass(monkeypatch, seed):
    """Series cut into parts decoded by helper threads: the same labels, offsets and samples as one pass,
    whatever the cut (parts with no samples in range, or only out-of-order ones, included)."""
    from mimird._fast import headselect

    monkeypatch.setattr(headselect, "PARALLEL_MIN_SAMPLES", 0)
    rng = random.Random(seed)
    head = random_head(rng)
    windows = [(INT64_MIN, INT64_MAX), (300 * 15_000, 390 * 15_000), (399 * 15_000, 399 * 15_000), (5000, 4000)]
    for snapshot in snapshots(head, windows):
        labels, offsets, ts, vals = snapshot.decode()
        for parts in (2, 3, 5, 8, 50):
            got_labels, got_offsets, got_ts, got_vals = snapshot.decode(parts)
            assert got_labels == labels
            assert got_offsets.tolist() == offsets.tolist()
            assert got_ts.tolist() == ts.tolist()
            assert got_vals.view(np.uint64).tolist() == vals.view(np.uint64).tolist()


def snapshots(head: Head, windows):
    """A snapshot of each of MATCHER_SETS' selections in each (mint, maxt) window."""
    for matchers in MATCHER_SETS:
        for mint, maxt in windows:
            with head.lock:
                yield HeadSnapshot.take(head.series, head.index.select_sorted(matchers), mint, maxt)


def snapshot_with_a_corrupt_chunk(monkeypatch) -> HeadSnapshot:
    """Six series, the fifth with a truncated first chunk; work is split into parts from any size on."""
    from mimird._fast import headselect

    monkeypatch.setattr(headselect, "PARALLEL_MIN_SAMPLES", 0)
    head = Head()
    names = [make_labels({"__name__": "m", "i": str(i)}) for i in range(6)]
    push(head, {lbls: [(t * 1000, float(t)) for t in range(300)] for lbls in names})
    victim = head.by_labels[names[4]]
    # a header that promises samples the bytes do not hold
    victim.set_closed_chunks([victim.chunks[0][:3]] + victim.chunks[1:], victim.chunk_mints, victim.chunk_maxts)
    with head.lock:
        return HeadSnapshot.take(head.series, head.index.select_sorted([Matcher("=", "__name__", "m")]),
                                 INT64_MIN, INT64_MAX)


def test_decode_in_parts_reports_a_corrupt_chunk(monkeypatch):
    snapshot = snapshot_with_a_corrupt_chunk(monkeypatch)
    for parts in (1, 3):
        with pytest.raises(ValueError, match="corrupt or truncated"):
            snapshot.decode(parts)


def _evaluate_reference(snapshot, name, eval_ts, range_ms, params):
    """decode(), stale markers removed, then rangefn.evaluate_batch: the path evaluate() fuses."""
    from mimird._fast import rangefn
    from mimird.promql.evaluator import without_stale
    from mimird.tsdb.seriesbatch import SeriesBatch

    labels, offsets, ts, vals = snapshot.decode()
    batch = without_stale(SeriesBatch(labels, ts, vals, offsets))
    out, present = rangefn.evaluate_batch(name, batch.ts, batch.vals, batch.offsets, eval_ts, range_ms, params)
    return batch.labels, out, present, np.diff(offsets)


_EVALUATE_CASES = [("rate", ()), ("increase", ()), ("delta", ()), ("irate", ()), ("idelta", ()), ("deriv", ()),
                   ("predict_linear", (600.0,)), ("resets", ()), ("changes", ()), ("avg_over_time", ()),
                   ("sum_over_time", ()), ("count_over_time", ()), ("min_over_time", ()), ("max_over_time", ()),
                   ("last_over_time", ()), ("present_over_time", ()), ("stddev_over_time", ()),
                   ("stdvar_over_time", ()), ("quantile_over_time", (0.3,)), ("mad_over_time", ()),
                   ("ts_of_min_over_time", ()), ("ts_of_max_over_time", ()), ("ts_of_last_over_time", ()),
                   ("double_exponential_smoothing", (0.5, 0.2))]


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_equals_decode_then_kernel(monkeypatch, seed):
    """evaluate() gives, row for row, what the kernel gives over decode()'s batch without stale markers; the
    series without samples left have rows with no point; the counts are the decoded and the kept samples."""
    from mimird._fast import headselect

    monkeypatch.setattr(headselect, "PARALLEL_MIN_SAMPLES", 0)
    rng = random.Random(seed)
    head = random_head(rng)
    windows = [(INT64_MIN, INT64_MAX), (290 * 15_000, 390 * 15_000), (399 * 15_000, 399 * 15_000), (5000, 4000)]
    eval_ts = np.arange(300 * 15_000, 400 * 15_000, 60_000 + seed * 7_000, dtype=np.int64)
    for snapshot in snapshots(head, windows):
        for name, params in rng.sample(_EVALUATE_CASES, 8):
            want_labels, want_out, want_present, decoded = _evaluate_reference(snapshot, name, eval_ts,
                                                                               300_000, params)
            for parts in (1, 2, 3, 8):
                labels, out, present, counts = snapshot.evaluate(name, eval_ts, 300_000, params, 0, parts)
                # the series with chunks in the range, in order: those with samples and maybe a few more
                assert labels == sorted(labels) and set(want_labels) <= set(labels)
                assert out.shape == present.shape == (len(labels), len(eval_ts))
                row_of = {lbls: i for i, lbls in enumerate(labels)}
                rows = [row_of[lbls] for lbls in want_labels]
                assert present[rows].tolist() == want_present.tolist(), name
                got = np.where(present[rows] != 0, out[rows], 0.0)
                want = np.where(want_present != 0, want_out, 0.0)
                assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist(), name
                others = np.ones(len(labels), dtype=bool)
                others[rows] = False
                assert not present[others].any()
                kept_rows = [i for i in range(len(labels)) if counts[i, 1]]
                assert kept_rows == rows
                assert counts[:, 0].sum() == decoded.sum()
                assert (counts[:, 1] <= counts[:, 0]).all()


def test_evaluate_reports_a_corrupt_chunk(monkeypatch):
    snapshot = snapshot_with_a_corrupt_chunk(monkeypatch)
    for parts in (1, 3):
        with pytest.raises(ValueError, match="corrupt or truncated"):
            snapshot.evaluate("rate", np.array([100_000, 200_000]), 60_000, (), 0, parts)

def test_evaluate_in_slices_equals_one_slice_and_calls_between(monkeypatch):
    """Series evaluated in slices of about `slice_samples` samples give the same rows; `between` runs between
    slices, and what it raises stops the evaluation."""
    from mimird._fast import headselect

    monkeypatch.setattr(headselect, "PARALLEL_MIN_SAMPLES", 0)
    head = random_head(random.Random(11))
    with head.lock:
        snapshot = HeadSnapshot.take(head.series, head.index.select_sorted(MATCHER_SETS[0]), INT64_MIN, INT64_MAX)
    eval_ts = np.arange(0, 400 * 15_000, 60_000, dtype=np.int64)
    _, want_out, want_present, want_counts = snapshot.evaluate("rate", eval_ts, 300_000, (), 0, 2)
    calls_by_size = {}
    third = int(want_counts[:, 0].sum()) // 3
    for slice_samples in (1, third, 10**9):
        calls = []
        _, out, present, counts = snapshot.evaluate("rate", eval_ts, 300_000, (), 0, 2,
                                                    lambda calls=calls: calls.append(1), slice_samples)
        assert present.tolist() == want_present.tolist()
        assert np.where(present != 0, out, 0).tobytes() == np.where(want_present != 0, want_out, 0).tobytes()
        assert counts.tolist() == want_counts.tolist()
        calls_by_size[slice_samples] = len(calls)
    # a slice holds at least one series: with one sample a slice, every series but the last is followed by a call
    assert calls_by_size[1] == snapshot.num_series - 1
    assert calls_by_size[1] > calls_by_size[third] > calls_by_size[10**9] == 0

    def cancel():
        raise TimeoutError("deadline")

    with pytest.raises(TimeoutError):
        snapshot.evaluate("rate", eval_ts, 300_000, (), 0, 1, cancel, 100)


def test_evaluate_gives_no_row_to_series_without_chunks_in_the_range():
    """Series a selector matches whose chunks all lie outside the range (gone, as in churn) get no row."""
    head = Head()
    gone = [make_labels({"__name__": "m", "pod": f"old{i}"}) for i in range(50)]
    live = [make_labels({"__name__": "m", "pod": f"new{i}"}) for i in range(3)]
    push(head, {lbls: [(t * 15_000, float(t)) for t in range(40)] for lbls in gone})
    push(head, {lbls: [(t * 15_000, float(t)) for t in range(200, 240)] for lbls in live})
    with head.lock:
        snapshot = HeadSnapshot.take(head.series, head.index.select_sorted([Matcher("=", "__name__", "m")]),
                                     200 * 15_000, 240 * 15_000)
    labels, out, present, counts = snapshot.evaluate("rate", np.array([230 * 15_000, 239 * 15_000]), 300_000)
    assert labels == sorted(live)
    assert out.shape == present.shape == (3, 2) and counts.shape == (3, 2)
    assert present.all() and (counts == 40).all()


@pytest.mark.parametrize("parts", [1, 2])
def test_merged_reads_take_the_head_snapshot_as_its_batch(tmp_path, monkeypatch, parts):
    """decode_merged and evaluate_merged read a HeadSnapshot (its chunks and out-of-order samples decoded
    straight into place) as they read the head's decoded batch: with a block before the head (the parts are
    disjoint) and a block overlapping it (they are merged), in one part and split over two."""
    from mimird._fast import blockselect
    from mimird.tsdb.block import BlockReader, write_block
    from mimird.util import cores

    monkeypatch.setattr(cores, "PARTS", parts)
    monkeypatch.setattr(blockselect, "PARALLEL_MIN_SAMPLES", 1)
    rng = random.Random(41)
    head = random_head(rng)
    labels = sorted(head.by_labels)
    before = [(lbls, np.arange(-HOUR, 0, 30_000, dtype=np.int64), np.arange(120, dtype=np.float64))
              for lbls in labels[::2]]
    overlapping = [(lbls, np.arange(-HOUR, HOUR, 20_000, dtype=np.int64) + 7, np.arange(360, dtype=np.float64))
                   for lbls in labels[1::3]]
    readers = [BlockReader(tmp_path / write_block(tmp_path, series, -2 * HOUR, 2 * HOUR, tenant="t", source="test"))
               for series in (before, overlapping)]
    eval_ts = np.arange(-HOUR + 60_000, 6_000_000, 45_000, dtype=np.int64)
    try:
        for matchers in MATCHER_SETS:
            for chosen in (readers[:1], readers):
                mint, maxt = -HOUR, 6_000_000
                blocks = [snap for reader in chosen if (snap := reader.snapshot(matchers, mint, maxt)) is not None]
                batch = head.select_batch(matchers, mint, maxt)
                as_batch = (batch.labels, batch.ts, batch.vals, batch.offsets)
                want = blockselect.decode_merged([*blocks, as_batch])
                got = blockselect.decode_merged([*blocks, head.snapshot(matchers, mint, maxt)])
                assert got[0] == want[0]
                for got_array, want_array in zip(got[1:], want[1:], strict=True):
                    np.testing.assert_array_equal(got_array, want_array)
                for kernel in ("rate", "max_over_time"):
                    want = blockselect.evaluate_merged([*blocks, as_batch], kernel, eval_ts, 300_000)
                    got = blockselect.evaluate_merged([*blocks, head.snapshot(matchers, mint, maxt)], kernel,
                                                      eval_ts, 300_000)
                    assert got[0] == want[0]
                    np.testing.assert_array_equal(got[2], want[2])
                    np.testing.assert_array_equal(np.where(got[2] != 0, got[1], 0), np.where(want[2] != 0, want[1], 0))
                    np.testing.assert_array_equal(got[3], want[3])
    finally:
        for reader in readers:
            reader.close()
