"""Batched reads of blocks (`BlockReader.select_batch`) and merges of series batches (`merge_batches`),
checked against the per-series readers and merges they replace: random blocks with several chunks per
series and ranges cut inside chunks, matchers that select nothing, chunk counts reported to the fetch
observer, corrupt chunks; merges of overlapping head, local block and bucket block batches (the
ingester's `TenantTSDB.select_batch`, the store-gateway's `select_batch`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mimird._fast import blockselect
from mimird.bucket import FilesystemBucket
from mimird.config.schema import Config
from mimird.ingester.ingester import TenantTSDB
from mimird.querier.queryable import merge_sorted_series
from mimird.storegateway.gateway import StoreGateway
from mimird.tsdb.block import BlockReader, CorruptBlockError, read_merged, read_meta, write_block
from mimird.tsdb.fetchobserver import chunk_fetch_observer
from mimird.tsdb.labels import Matcher, MatchType
from mimird.tsdb.seriesbatch import SeriesBatch, merge_batches
from mimird.util import cores

HOUR = 3600_000


def random_series(rng: np.random.Generator, count: int, start: int, span: int, max_samples: int = 600,
                  names: int = 3, step: int = 1000) -> list:
    series = []
    for i in range(count):
        n = int(rng.integers(1, max_samples))
        ts = start + np.sort(rng.choice(span // step, n, replace=False)).astype(np.int64) * step
        vals = np.round(rng.normal(size=n) * 100, 1)
        labels = (("__name__", f"m{i % names}"), ("i", f"{i:04d}"), ("odd", str(i % 2)))
        series.append((labels, ts, vals))
    series.sort(key=lambda item: item[0])
    return series


def assert_same(got: SeriesBatch, want: SeriesBatch) -> None:
    assert got.labels == want.labels
    assert got.offsets.tolist() == want.offsets.tolist()
    np.testing.assert_array_equal(got.ts, want.ts)
    np.testing.assert_array_equal(got.vals, want.vals)


MATCHER_SETS = [
    [Matcher(MatchType.EQUAL, "__name__", "m1")],
    [Matcher(MatchType.REGEX, "i", "00[0-4].")],
    [Matcher(MatchType.NOT_EQUAL, "odd", "1"), Matcher(MatchType.REGEX, "__name__", "m.")],
    [Matcher(MatchType.EQUAL, "__name__", "absent")],
    [Matcher(MatchType.EQUAL, "nolabel", "x")],
    [Matcher(MatchType.NOT_REGEX, "__name__", ".+")],
]


STALE_BITS = np.uint64(0x7FF0000000000002)


def blocks_and_stale_head(directory: Path, seed: int) -> tuple[list[BlockReader], SeriesBatch]:
    """Readers of three blocks (the second overlapping both others in time) and a head-like batch after
    them in which every third series has a stale marker in the middle."""
    rng = np.random.default_rng(seed)
    ulids = []
    for start, span in ((0, 2 * HOUR), (HOUR, 2 * HOUR), (2 * HOUR, 2 * HOUR)):
        series = random_series(rng, 30, start, span, max_samples=400, step=5000)
        ulids.append(write_block(directory, series, start, start + span, tenant="t", source="test"))
    head_series = random_series(rng, 30, 4 * HOUR, HOUR, max_samples=300, step=5000)
    for _, _, vals in head_series[::3]:
        vals[len(vals) // 2 : len(vals) // 2 + 1].view(np.uint64)[:] = STALE_BITS
    return [BlockReader(directory / ulid) for ulid in ulids], SeriesBatch.from_series(head_series)


@pytest.fixture(scope="module")
def random_block(tmp_path_factory) -> Path:
    rng = np.random.default_rng(7)
    directory = tmp_path_factory.mktemp("blocks")
    series = random_series(rng, 120, 0, 2 * HOUR)
    return directory / write_block(directory, series, 0, 2 * HOUR, tenant="t", source="test")


@pytest.mark.parametrize("matchers", MATCHER_SETS)
def test_select_batch_matches_per_series_reads(random_block, matchers):
    rng = np.random.default_rng(len(str(matchers)))
    ranges = [(None, None), (0, 2 * HOUR), (-HOUR, -1), (3 * HOUR, 4 * HOUR), (HOUR, HOUR)]
    ranges += [tuple(sorted(int(x) for x in rng.integers(-1000, 2 * HOUR + 1000, 2))) for _ in range(6)]
    with BlockReader(random_block) as reader:
        for mint, maxt in ranges:
            want = SeriesBatch.from_series(reader.read_series_samples(matchers, mint, maxt))
            assert_same(reader.select_batch(matchers, mint, maxt), want)



def test_label_pairs_are_built_once_per_block_even_where_names_share_values(tmp_path):
    # The value "1" belongs to three names: each pair must keep its own name. A pair whose value no other
    # name has is built once: read again (by another series or another read) it is the same object.
    ts, vals = np.array([1000, 2000], dtype=np.int64), np.array([1.0, 2.0])
    series = [((("__name__", "m"), ("a", "1"), ("b", str(i)), ("c", "1")), ts, vals) for i in range(3)]
    directory = tmp_path / "blocks"
    block = directory / write_block(directory, sorted(series, key=lambda item: item[0]), 0, HOUR, tenant="t",
                                    source="test")
    with BlockReader(block) as reader:
        first = reader.select_batch([Matcher(MatchType.EQUAL, "__name__", "m")], None, None).labels
        again = reader.select_batch([Matcher(MatchType.EQUAL, "a", "1")], None, None).labels
    assert first == again == [labels for labels, _, _ in series]
    assert first[0][0] is first[2][0] is again[1][0]  # ("__name__", "m")

def observed(read) -> list[int]:
    """[chunks, bytes] that `read()` reports to the chunk-fetch observer."""
    totals = [0, 0]

    def observe(chunks, chunk_bytes):
        totals[0] += chunks
        totals[1] += chunk_bytes

    token = chunk_fetch_observer.set(observe)
    try:
        read()
    finally:
        chunk_fetch_observer.reset(token)
    return totals


def test_select_batch_reports_the_same_chunks(random_block):
    matchers = [Matcher(MatchType.REGEX, "__name__", "m[01]")]
    with BlockReader(random_block) as reader:
        for mint, maxt in [(None, None), (HOUR // 2, HOUR + 123), (5 * HOUR, 6 * HOUR)]:
            old = observed(lambda lo=mint, hi=maxt: list(reader.read_series_samples(matchers, lo, hi)))
            new = observed(lambda lo=mint, hi=maxt: reader.select_batch(matchers, lo, hi))
            assert new == old
            assert (old[0] > 0) == (mint != 5 * HOUR)


def test_select_batch_several_chunks_per_series_and_cuts_inside_chunks(tmp_path):
    ts = np.arange(0, 1000 * 1000, 1000, dtype=np.int64)  # 1000 samples: 9 chunks of up to 120
    vals = np.sin(np.arange(1000, dtype=np.float64))
    labels = (("__name__", "long"),)
    ulid = write_block(tmp_path, [(labels, ts, vals)], 0, 1000 * 1000, tenant="t", source="test")
    with BlockReader(tmp_path / ulid) as reader:
        assert len(reader.series(int(reader.select([Matcher(MatchType.EQUAL, "__name__", "long")])[0]))[1]) > 3
        batch = reader.select_batch([Matcher(MatchType.EQUAL, "__name__", "long")], 150_500, 700_000)
    assert batch.labels == [labels]
    np.testing.assert_array_equal(batch.ts, ts[151:701])
    np.testing.assert_array_equal(batch.vals, vals[151:701])


def test_select_batch_raises_on_a_corrupt_chunk(tmp_path):
    ts = np.arange(0, 300_000, 1000, dtype=np.int64)
    ulid = write_block(tmp_path, [((("__name__", "m"),), ts, np.ones(300))], tenant="t", source="test")
    segment = tmp_path / ulid / "chunks" / "000001"
    data = bytearray(segment.read_bytes())
    data[20] ^= 0xFF
    segment.write_bytes(bytes(data))
    with BlockReader(tmp_path / ulid) as reader, pytest.raises(CorruptBlockError, match="checksum"):
        reader.select_batch([Matcher(MatchType.EQUAL, "__name__", "m")])


def batch_of(items) -> SeriesBatch:
    return SeriesBatch.from_series(items)


def test_merge_batches_matches_the_per_series_merge():
    rng = np.random.default_rng(3)

    def random_stream(count):
        items = []
        for i in sorted(rng.choice(2 * count + 1, count, replace=False).tolist()):
            n = int(rng.integers(1, 40))
            # few distinct timestamps, so that streams share many (with different values)
            ts = np.sort(rng.choice(120, n, replace=False)).astype(np.int64) + 60 * int(rng.integers(0, 3))
            items.append(((("s", f"{i:03d}"),), ts, rng.random(n)))
        return items

    for _ in range(300):
        streams = [random_stream(int(rng.integers(0, 12))) for _ in range(int(rng.integers(1, 5)))]
        want = batch_of(merge_sorted_series([iter(s) for s in streams]))
        assert_same(merge_batches([batch_of(s) for s in streams]), want)


def test_merge_batches_keeps_the_first_batchs_sample_and_takes_slices():
    a = batch_of([((("a", "1"),), np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0])),
                  ((("a", "2"),), np.array([5]), np.array([5.0]))])
    b = batch_of([((("a", "0"),), np.array([0]), np.array([0.5])),
                  ((("a", "1"),), np.array([3, 4]), np.array([30.0, 40.0]))])
    merged = merge_batches([a.slice(0, 1), b])
    assert merged.labels == [(("a", "0"),), (("a", "1"),)]
    assert merged.ts.tolist() == [0, 1, 2, 3, 4]
    assert merged.vals.tolist() == [0.5, 1.0, 2.0, 3.0, 40.0]
    assert merge_batches([SeriesBatch.empty(), a]) is a
    assert len(merge_batches([])) == 0


def test_ingester_merges_head_and_overlapping_blocks(tmp_path):
    rng = np.random.default_rng(11)
    db = TenantTSDB("t", tmp_path / "t", block_range_ms=2 * HOUR, ooo_window_ms=0, max_exemplars=0,
                    wal_segment_size=1 << 20, wal_fsync="never")
    db.dir.mkdir(parents=True)
    # two blocks that overlap each other (and share series), and a head that overlaps the second
    for start in (0, HOUR):
        series = random_series(rng, 60, start, 2 * HOUR, max_samples=300, step=10_000)
        ulid = write_block(db.dir, series, start, start + 2 * HOUR, tenant="t", source="test")
        db.blocks[ulid] = read_meta(db.dir / ulid)
    head_series = random_series(rng, 60, 2 * HOUR, HOUR, max_samples=200, step=10_000)
    head_series += [(labels, ts + 3 * HOUR, vals) for labels, ts, vals in head_series[:10]]
    for labels, ts, vals in head_series:
        db.head.append([labels], [0, len(ts)], ts.tolist(), vals.tolist())
    assert db.head.select_batch(MATCHER_SETS[0], 0, 10 * HOUR).num_samples > 0
    for matchers in MATCHER_SETS[:3]:
        for mint, maxt in [(0, 4 * HOUR), (HOUR + 5000, 2 * HOUR + 5000), (-HOUR, 10 * HOUR)]:
            want = SeriesBatch.from_series(db.select(matchers, mint, maxt))
            assert len(want) > 0
            assert_same(db.select_batch(matchers, mint, maxt), want)
    # the open readers are kept between queries, and forgotten once their block is gone
    first = sorted(db.blocks)[0]
    assert db.block_reader(first) is db.block_reader(first)
    del db.blocks[first]
    assert_same(db.select_batch(MATCHER_SETS[0], 0, 4 * HOUR),
                SeriesBatch.from_series(db.select(MATCHER_SETS[0], 0, 4 * HOUR)))
    assert first not in db._readers


def test_store_gateway_select_batch_matches_select(tmp_path):
    rng = np.random.default_rng(5)
    root = tmp_path / "bucket"
    (root / "t").mkdir(parents=True)
    for start in (0, 0, HOUR, 2 * HOUR):
        series = random_series(rng, 50, start, 2 * HOUR, max_samples=200, step=10_000)
        write_block(root / "t", series, start, start + 2 * HOUR, tenant="t", source="test")
    config = Config.defaults()
    sg = StoreGateway(config, FilesystemBucket(root))
    sg.sync_now()
    for matchers in MATCHER_SETS:
        for mint, maxt in [(0, 4 * HOUR), (HOUR + 5000, 2 * HOUR + 5000)]:
            want = SeriesBatch.from_series(sg.select("t", matchers, mint, maxt))
            assert_same(sg.select_batch("t", matchers, mint, maxt), want)
    assert sg.num_open() == 4
    assert all(b.readers == 0 for b in sg.blocks["t"].values())


@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_read_merged_matches_merging_the_batches(tmp_path, monkeypatch, parts):
    """Blocks that overlap in time and blocks that do not, and a head-like batch: decoded in one pass,
    the same as each read on its own and merged; also with the series split over `parts` threads (which
    larger reads are: each part decodes into its own room, then the parts move together)."""
    monkeypatch.setattr(cores, "PARTS", parts)
    monkeypatch.setattr(blockselect, "PARALLEL_MIN_SAMPLES", 1)
    rng = np.random.default_rng(17)
    ulids = []
    for start, span in ((0, 2 * HOUR), (2 * HOUR, 2 * HOUR), (HOUR, 2 * HOUR), (4 * HOUR, HOUR)):
        series = random_series(rng, 40, start, span, max_samples=400, step=5000)
        ulids.append(write_block(tmp_path, series, start, start + span, tenant="t", source="test"))
    head = SeriesBatch.from_series(random_series(rng, 40, 4 * HOUR + HOUR // 2, HOUR, max_samples=300, step=5000))
    readers = [BlockReader(tmp_path / ulid) for ulid in ulids]
    try:
        for matchers in MATCHER_SETS:
            ranges = [(0, 6 * HOUR), (HOUR + 2500, 4 * HOUR + HOUR // 2 + 7000)]
            ranges += [tuple(sorted(int(x) for x in rng.integers(0, 6 * HOUR, 2))) for _ in range(4)]
            for mint, maxt in ranges:
                for chosen in (readers, readers[:2], readers[1:2], [readers[3], readers[0]]):
                    head_part = SeriesBatch.from_series(
                        (labels, ts[(ts >= mint) & (ts <= maxt)], vals[(ts >= mint) & (ts <= maxt)])
                        for labels, ts, vals in head)
                    want = merge_batches([r.select_batch(matchers, mint, maxt) for r in chosen] + [head_part])
                    got = read_merged([r.snapshot(matchers, mint, maxt) for r in chosen] + [head_part])
                    assert_same(got, want)
                    assert_same(read_merged([r.snapshot(matchers, mint, maxt) for r in chosen]),
                                merge_batches([r.select_batch(matchers, mint, maxt) for r in chosen]))
    finally:
        for reader in readers:
            reader.close()


@pytest.mark.parametrize("parts", [1, 2, 4])
def test_evaluate_merged_matches_the_kernel_over_the_merged_batch(tmp_path, monkeypatch, parts):
    """evaluate_merged: each series merged from blocks (overlapping in time and not) and a head-like batch
    with stale markers, and evaluated on its own, gives what the kernel gives over decode_merged's batch
    with the stale markers removed, for kernels with and without scratch; also in parts, and in slices with
    `between` called between them."""
    from mimird._fast import rangefn

    monkeypatch.setattr(cores, "PARTS", parts)
    monkeypatch.setattr(blockselect, "PARALLEL_MIN_SAMPLES", 1)
    readers, head = blocks_and_stale_head(tmp_path, 29)
    matchers = [Matcher(MatchType.REGEX, "__name__", "m[01]")]
    between_calls = []

    def between():
        between_calls.append(None)

    try:
        for kernel, params in (("rate", ()), ("max_over_time", ()), ("quantile_over_time", (0.9,))):
            for mint, maxt in ((0, 5 * HOUR), (HOUR + 2500, 4 * HOUR + HOUR // 2)):
                eval_ts = np.arange(mint + 600_000, maxt, 60_000, dtype=np.int64)
                sources = [r.snapshot(matchers, mint, maxt) for r in readers] + [
                    (head.labels, head.ts, head.vals, head.offsets)]
                labels, offsets, ts, vals = blockselect.decode_merged(sources)
                keep = vals.view(np.uint64) != STALE_BITS
                counts_kept = np.add.reduceat(keep, offsets[:-1]) if len(labels) else np.zeros(0, dtype=np.int64)
                assert not keep.all()
                kept_offsets = np.concatenate(([0], np.cumsum(counts_kept))).astype(np.int64)
                want_out, want_present = rangefn.evaluate_batch(kernel, ts[keep], vals[keep], kept_offsets, eval_ts,
                                                                 300_000, params)
                got_labels, out, present, counts = blockselect.evaluate_merged(
                    sources, kernel, eval_ts, 300_000, params, 0, between, 2000)
                rows = np.flatnonzero(counts[:, 0])
                assert [got_labels[i] for i in rows] == labels
                assert counts[rows, 0].tolist() == np.diff(offsets).tolist()
                assert counts[rows, 1].tolist() == counts_kept.tolist()
                np.testing.assert_array_equal(present[rows], want_present)
                np.testing.assert_array_equal(np.where(want_present != 0, out[rows], 0),
                                              np.where(want_present != 0, want_out, 0))
        assert between_calls
    finally:
        for reader in readers:
            reader.close()


@pytest.mark.parametrize("parts", [2, 3, 4])
def test_fold_merged_in_step_ranges_is_one_fold_to_the_bit(tmp_path, monkeypatch, parts):
    """fold_merged with its steps cut into ranges folded at once (each merging only its window of each
    series) gives one fold's result, counts and order to the bit: blocks overlapping in time and not, a
    head-like batch with stale markers, every operator, steps shorter and longer than the lookback, repeated
    steps, and grids reaching past the data."""
    monkeypatch.setattr(blockselect, "FOLD_PARALLEL_MIN_SAMPLES", 1 << 62)
    readers, head = blocks_and_stale_head(tmp_path, 31)
    matchers = [Matcher(MatchType.REGEX, "__name__", "m[01]")]
    grids = [np.arange(600_000, 5 * HOUR, 60_000), np.arange(HOUR // 3, 6 * HOUR, HOUR),
             np.repeat(np.arange(2 * HOUR, 3 * HOUR, 45_000), 2), np.array([4 * HOUR - 1, 4 * HOUR])]
    try:
        for times in grids:
            times = times.astype(np.int64)
            mint, maxt = int(times[0]) - 300_000 + 1, int(times[-1])
            for chosen in (readers, readers[::2]):
                sources = [r.snapshot(matchers, mint, maxt) for r in chosen] + [
                    (head.labels, head.ts, head.vals, head.offsets)]
                for op in ("sum", "avg", "count", "group", "min", "max", "stddev", "stdvar"):
                    for grouping, without in (((), False), (("odd",), False), (("i",), True)):
                        folds = []
                        for n_parts, min_work in ((1, 1 << 62), (parts, 1)):
                            monkeypatch.setattr(cores, "PARTS", n_parts)
                            monkeypatch.setattr(blockselect, "FOLD_STEP_PARTS_MIN_WORK", min_work)
                            labels, num_samples, keys, order, result, seen, selected, n_seen = \
                                blockselect.fold_merged(sources, op, times, 300_000, grouping, without)
                            folds.append((labels, num_samples, keys, order, result.tobytes(), seen.tobytes(),
                                          selected, n_seen))
                        assert folds[0] == folds[1], (op, grouping, len(times))
                        assert folds[0][1] > 0 and folds[0][6] > 0
    finally:
        for reader in readers:
            reader.close()


def test_merge_of_the_same_data_twice_keeps_the_first():
    ts = np.arange(0, 100, 10, dtype=np.int64)
    first = batch_of([((("a", "1"),), ts, np.ones(10))])
    second = batch_of([((("a", "1"),), ts, np.full(10, 2.0))])
    merged = merge_batches([first, second])
    assert merged.ts.tolist() == ts.tolist()
    assert merged.vals.tolist() == [1.0] * 10


def test_querier_select_batch_matches_the_per_series_path(tmp_path):
    """TenantQueryable.select_batch over head, local blocks and bucket blocks of two tenants (federated
    and not): the same batch, chunk counts and query stats as the per-series path it replaces."""
    from types import SimpleNamespace

    from mimird.config.runtime import Overrides
    from mimird.frontend import stats as query_stats
    from mimird.querier.queryable import TenantQueryable

    rng = np.random.default_rng(23)
    config = Config.defaults()
    config._values["querier.query_store_after"] = 0.0
    bucket = tmp_path / "bucket"
    tenants = {}
    for tenant in ("a", "b"):
        db = TenantTSDB(tenant, tmp_path / tenant, block_range_ms=2 * HOUR, ooo_window_ms=0, max_exemplars=0,
                        wal_segment_size=1 << 20, wal_fsync="never")
        db.dir.mkdir(parents=True)
        (bucket / tenant).mkdir(parents=True)
        for start in (0, 2 * HOUR):
            series = random_series(rng, 30, start, 2 * HOUR, max_samples=200, step=10_000)
            ulid = write_block(db.dir, series, start, start + 2 * HOUR, tenant=tenant, source="test")
            db.blocks[ulid] = read_meta(db.dir / ulid)
            write_block(bucket / tenant, random_series(rng, 30, start, 2 * HOUR, max_samples=100, step=10_000),
                        start, start + 2 * HOUR, tenant=tenant, source="test")
        for labels, ts, vals in random_series(rng, 30, 4 * HOUR, HOUR, max_samples=100, step=10_000):
            db.head.append([labels], [0, len(ts)], ts.tolist(), vals.tolist())
        tenants[tenant] = db
    ingester = SimpleNamespace(tenants=tenants, select=lambda t, m, lo, hi: tenants[t].select(m, lo, hi),
                               select_batch=lambda t, m, lo, hi, latest=False: tenants[t].select_batch(m, lo, hi, latest))
    gateway = StoreGateway(config, FilesystemBucket(bucket))
    gateway.sync_now()
    app = SimpleNamespace(config=config, overrides=Overrides(config, None), ingester=ingester, store_gateway=gateway)
    matchers = [Matcher(MatchType.REGEX, "__name__", "m[01]"),
                Matcher(MatchType.NOT_EQUAL, "__tenant_id__", "c")]
    for names in (["a"], ["a", "b"]):
        for mint, maxt in [(0, 5 * HOUR), (HOUR + 1234, 4 * HOUR + 999)]:
            results = []
            for batched in (False, True):
                queryable = TenantQueryable(app, names, now_ms=5 * HOUR)
                stats = query_stats.QueryStats()
                with query_stats.collecting(stats):
                    if batched:
                        batch = queryable.select_batch(matchers[: len(names)], mint, maxt)
                    else:
                        batch = SeriesBatch.from_series(queryable.select(matchers[: len(names)], mint, maxt))
                results.append((batch, stats.series, stats.samples, stats.chunks, stats.chunk_bytes))
            (old, *old_counts), (new, *new_counts) = results
            assert len(new) > 0
            assert_same(new, old)
            assert new_counts == old_counts


def _head_only_querier(tmp_path, seed: int):
    """A tenant "a" whose head alone holds 40 random series in [4 h, 5 h), behind an app with no store-gateway:
    (db, app, rng)."""
    from types import SimpleNamespace

    from mimird.config.runtime import Overrides

    rng = np.random.default_rng(seed)
    config = Config.defaults()
    db = TenantTSDB("a", tmp_path / "a", block_range_ms=2 * HOUR, ooo_window_ms=0, max_exemplars=0,
                    wal_segment_size=1 << 20, wal_fsync="never")
    db.dir.mkdir(parents=True)
    for labels, ts, vals in random_series(rng, 40, 4 * HOUR, HOUR, max_samples=300, step=10_000):
        db.head.append([labels], [0, len(ts)], ts.tolist(), vals.tolist())
    ingester = SimpleNamespace(
        tenants={"a": db}, select_batch=lambda t, m, lo, hi, latest=False: db.select_batch(m, lo, hi, latest),
        evaluate_range=lambda t, m, lo, hi, *args: db.evaluate_range(m, lo, hi, *args),
        select_fold=lambda t, m, lo, hi, *args: db.select_fold(m, lo, hi, *args))
    app = SimpleNamespace(config=config, overrides=Overrides(config, None), ingester=ingester, store_gateway=None)
    return db, app, rng


def _counted_read(app, read) -> tuple[object, tuple[int, ...]]:
    """`read(queryable)` on a fresh queryable of tenant "a", with what it counted: (its result, (series,
    samples, chunks and chunk bytes in the query stats, chunks the queryable fetched))."""
    from mimird.frontend import stats as query_stats
    from mimird.querier.queryable import TenantQueryable

    queryable = TenantQueryable(app, ["a"], now_ms=5 * HOUR)
    queryable.max_chunks = 10_000  # chunks are counted only under a limit or with stats
    stats = query_stats.QueryStats()
    with query_stats.collecting(stats):
        result = read(queryable)
    return result, (stats.series, stats.samples, stats.chunks, stats.chunk_bytes, queryable.fetched_chunks)


def test_querier_evaluate_range_counts_as_select_batch(tmp_path):
    """TenantQueryable.evaluate_range (only the ingester answers): the kernel's rows for the series
    select_batch reads, with the same query stats, chunk counts and series limit, from the head alone and
    from the head and a local block; None once the store-gateway is asked."""
    from mimird._fast import rangefn
    from mimird.querier.queryable import QueryLimitError, TenantQueryable

    db, app, rng = _head_only_querier(tmp_path, 5)
    matchers = [Matcher(MatchType.REGEX, "__name__", "m[01]")]
    eval_ts = np.arange(4 * HOUR + 600_000, 5 * HOUR, 60_000, dtype=np.int64)
    mint, maxt = int(eval_ts[0]) - 300_000 + 1, int(eval_ts[-1])
    def evaluate(queryable):
        return queryable.evaluate_range(matchers, mint, maxt, "rate", eval_ts, 300_000)

    def in_storage(queryable):
        labels, out, present, counts = evaluate(queryable)
        rows = np.flatnonzero(counts[:, 0])
        return [labels[i] for i in rows], out[rows], present[rows]

    def in_batch(queryable):
        batch = queryable.select_batch(matchers, mint, maxt)
        return (batch.labels,
                *rangefn.evaluate_batch("rate", batch.ts, batch.vals, batch.offsets, eval_ts, 300_000))

    counted = []
    for read in (in_batch, in_storage):
        (labels, out, present), counts = _counted_read(app, read)
        counted.append((labels, np.where(present != 0, out, 0).tobytes(), present.tobytes(), *counts))
    assert counted[0] == counted[1]
    assert counted[0][3] > 0 and counted[0][5] > 0

    limited = TenantQueryable(app, ["a"], now_ms=5 * HOUR)
    limited.max_series = len(counted[0][0]) - 1
    with pytest.raises(QueryLimitError):
        limited.evaluate_range(matchers, mint, maxt, "rate", eval_ts, 300_000)

    # A local block overlapping the head in time: each series is merged from both and evaluated alike.
    ulid = write_block(db.dir, random_series(rng, 30, 4 * HOUR, HOUR, max_samples=300, step=10_000), 4 * HOUR, 6 * HOUR,
                       tenant="a", source="test")
    db.blocks[ulid] = read_meta(db.dir / ulid)
    counted = []
    for read in (in_batch, in_storage):
        (labels, out, present), counts = _counted_read(app, read)
        counted.append((labels, np.where(present != 0, out, 0).tobytes(), present.tobytes(), *counts))
    assert counted[0] == counted[1]
    del db.blocks[ulid]
    app.config._values["querier.query_store_after"] = 0.0
    app.store_gateway = object()
    assert evaluate(TenantQueryable(app, ["a"], now_ms=5 * HOUR)) is None


@pytest.mark.parametrize("parts", [1, 2])
def test_querier_select_fold_counts_as_select_batch(tmp_path, monkeypatch, parts):
    """TenantQueryable.select_fold (only the ingester answers): the fold of the series select_batch reads,
    with the same query stats, chunk counts and series limit, from the head alone and from the head and a
    local block (in parts: decoded on the cores, then folded); None once the store-gateway is asked."""
    from mimird._fast.aggregate import group_series, select_fold
    from mimird.querier.queryable import QueryLimitError, TenantQueryable

    monkeypatch.setattr(cores, "PARTS", parts)
    monkeypatch.setattr(blockselect, "PARALLEL_MIN_SAMPLES", 1 if parts > 1 else 1 << 62)
    monkeypatch.setattr(blockselect, "FOLD_PARALLEL_MIN_SAMPLES", 1 if parts > 1 else 1 << 62)

    db, app, rng = _head_only_querier(tmp_path, 7)
    matchers = [Matcher(MatchType.REGEX, "__name__", "m[01]")]
    lookback = 300_000
    for times in (np.arange(4 * HOUR + 600_000, 5 * HOUR, 60_000, dtype=np.int64),
                  np.array([5 * HOUR - 1], dtype=np.int64)):
        mint, maxt, latest = int(times[0]) - lookback + 1, int(times[-1]), len(times) == 1

        def in_storage(queryable, mint=mint, maxt=maxt, latest=latest, times=times):
            return queryable.select_fold(matchers, mint, maxt, latest, "sum", times, lookback, ("__name__",),
                                         False)[2:]

        def in_batch(queryable, mint=mint, maxt=maxt, latest=latest, times=times):
            batch = queryable.select_batch(matchers, mint, maxt, latest)
            group_ids, keys = group_series(batch.labels, ("__name__",), False)
            return keys, *select_fold("sum", batch.ts, batch.vals, batch.offsets, times, lookback, group_ids,
                                      len(keys))

        for with_block in (False, True):
            # with a local block overlapping the head in time, each series is merged from both and folded
            if with_block:
                ulid = write_block(db.dir, random_series(rng, 30, 4 * HOUR, HOUR, max_samples=300, step=10_000),
                                   4 * HOUR, 6 * HOUR, tenant="a", source="test")
                db.blocks[ulid] = read_meta(db.dir / ulid)
            counted = []
            for read in (in_batch, in_storage):
                (keys, order, value, seen, selected, n_seen), counts = _counted_read(app, read)
                counted.append(([keys[g] for g in order], value.tobytes(), seen.tobytes(), selected, n_seen,
                                *counts))
            assert counted[0] == counted[1]
            assert len(counted[0][0]) == 2 and counted[0][5] > 0 and counted[0][7] > 0
            if with_block:
                del db.blocks[ulid]

    limited = TenantQueryable(app, ["a"], now_ms=5 * HOUR)
    limited.max_series = 3
    with pytest.raises(QueryLimitError):
        limited.select_fold(matchers, mint, maxt, False, "sum", times, lookback, ("__name__",), False)
    app.config._values["querier.query_store_after"] = 0.0
    app.store_gateway = object()
    assert TenantQueryable(app, ["a"], now_ms=5 * HOUR).select_fold(matchers, mint, maxt, False, "sum", times,
                                                                    lookback, ("__name__",), False) is None
