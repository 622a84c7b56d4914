"""The querier's read view of one or more tenants: series, samples, label names and values, merged from
the ingester (head and local blocks) and, when this build has one, the store-gateway (bucket blocks).

This is the `Queryable` the PromQL engine and the HTTP handlers read through. Like Mimir's querier:

* the ingester is asked only when the range ends within `-querier.query-ingesters-within` of now, and
  the store-gateway only for the part of the range older than `-querier.query-store-after` (0
  disables either rule);
* where both answer for a series, samples are merged by timestamp and duplicates dropped (the
  ingester's sample wins, as it holds what was written last);
* with several tenants (tenant federation) every series gets a `__tenant_id__` label, a series that
  already has one keeps it as `original___tenant_id__`, and matchers on `__tenant_id__` pick tenants.

Store-gateway hook: `app.store_gateway`, when the attribute exists and is not None, must provide
`select(tenant, matchers, mint, maxt)` yielding (labels, ts, vals) sorted by labels; it may also
provide `select_batch(tenant, matchers, mint, maxt) -> SeriesBatch` (the same as one batch),
`series_labels(tenant, matchers, mint, maxt) -> list[Labels]`, `label_names(tenant, mint=,
maxt=)` and `label_values(tenant, name, mint=, maxt=)`, which are used when present.

All methods block (they read blocks from disk): call them off the event loop.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from mimird.frontend import stats as query_stats
from mimird.tsdb.block import BlockReader
from mimird.tsdb.fetchobserver import chunk_fetch_observer
from mimird.tsdb.head import Head, merge_samples
from mimird.tsdb.labels import Labels, Matcher
from mimird.tsdb.seriesbatch import SeriesBatch, merge_batches

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

TENANT_LABEL = "__tenant_id__"
ORIGINAL_TENANT_LABEL = "original___tenant_id__"

SeriesSamples = tuple[Labels, np.ndarray, np.ndarray]

# Mimir's limiter message for -querier.max-fetched-series-per-query (pkg/util/limiter/errors.go).
MAX_SERIES_MESSAGE = (
    "the query exceeded the maximum number of series (limit: {limit} series) (err-mimir-max-series-per-query). "
    "Consider reducing the time range and/or number of series selected by the query. One way to reduce the "
    "number of selected series is to add more label matchers to the query. Otherwise, to adjust the related "
    "per-tenant limit, configure -querier.max-fetched-series-per-query, or contact your service administrator.")
# The chunk limits' messages (globalerror.MaxChunksPerQuery / MaxChunkBytesPerQuery with the cardinality strategy).
_CARDINALITY_STRATEGY = (
    "Consider reducing the time range and/or number of series selected by the query. One way to reduce the "
    "number of selected series is to add more label matchers to the query")
MAX_CHUNKS_MESSAGE = (
    "the query exceeded the maximum number of chunks (limit: {limit} chunks) (err-mimir-max-chunks-per-query). "
    f"{_CARDINALITY_STRATEGY}. Otherwise, to adjust the related per-tenant limit, configure "
    "-querier.max-fetched-chunks-per-query, or contact your service administrator.")
MAX_CHUNK_BYTES_MESSAGE = (
    "the query exceeded the aggregated chunks size limit (limit: {limit} bytes) "
    f"(err-mimir-max-chunks-bytes-per-query). {_CARDINALITY_STRATEGY}. Otherwise, to adjust the related "
    "per-tenant limit, configure -querier.max-fetched-chunk-bytes-per-query, or contact your service administrator.")


class QueryLimitError(Exception):
    """A per-query limit was hit; Prometheus's API answers it as an `execution` error (422)."""

    error_type = "execution"


def merge_sorted_series(streams: Sequence[Iterable[SeriesSamples]]) -> Iterator[SeriesSamples]:
    """Merge label-sorted series streams; a series in several streams gets its samples merged by
    timestamp, the earlier stream's sample kept where two share a timestamp."""
    if len(streams) == 1:
        yield from streams[0]
        return
    tagged = [((labels, index, ts, vals) for labels, ts, vals in stream) for index, stream in enumerate(streams)]
    current: Labels | None = None
    ts = vals = None
    for labels, _, more_ts, more_vals in heapq.merge(*tagged, key=lambda item: (item[0], item[1])):
        if labels != current:
            if current is not None:
                yield current, ts, vals
            current, ts, vals = labels, more_ts, more_vals
        else:
            ts, vals = merge_samples(ts, vals, more_ts, more_vals)
    if current is not None:
        yield current, ts, vals


def with_tenant_label(labels: Labels, tenant: str) -> Labels:
    """A federated series' labels: `__tenant_id__` added, an existing one kept as `original___tenant_id__`."""
    pairs = []
    for name, value in labels:
        pairs.append((ORIGINAL_TENANT_LABEL if name == TENANT_LABEL else name, value))
    pairs.append((TENANT_LABEL, tenant))
    pairs.sort()
    return tuple(pairs)


def _overlaps(lo: int, hi: int, mint: int, maxt: int) -> bool:
    return hi >= mint and lo <= maxt


def _block_readers(db, lo: int, hi: int) -> list[BlockReader]:
    """The shared readers of the tenant's local blocks overlapping [lo, hi], oldest ULID first."""
    return [db.block_reader(ulid) for ulid, meta in sorted(db.blocks.items())
            if _overlaps(meta.min_time, meta.max_time - 1, lo, hi)]


class TenantQueryable:
    """Read access to `tenants`' data between `mint` and `maxt` (ms, inclusive)."""

    def __init__(self, app, tenants: Sequence[str], mint: int = INT64_MIN, maxt: int = INT64_MAX,
                 now_ms: int | None = None):
        self.app = app
        self.tenants = list(tenants)
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        lookback_ms, self.max_series, self.max_chunks, self.max_chunk_bytes = app.overrides.derived(
            ("queryable_limits", tuple(tenants)), self._limits)
        # Mimir's querier clamps every read to -querier.max-query-lookback.
        self.mint = max(mint, self.now_ms - lookback_ms) if lookback_ms else mint
        self.maxt = maxt
        # (Config.get: attribute access on the config raises and catches an AttributeError per section)
        self.store_after_ms = int(app.config.get("querier.query_store_after") * 1000)
        # One queryable serves one query: the series limit counts distinct series over all its selects.
        self._seen: set[Labels] = set()
        # Chunks and their encoded bytes fetched by this query from the head, local and bucket blocks,
        # counted as the readers decode them (Mimir's QueryLimiter.AddChunks / AddChunkBytes).
        self.fetched_chunks = 0
        self.fetched_chunk_bytes = 0
        self._stats = None  # the request's QueryStats, when it collects them (set by select)

    def _limits(self) -> tuple[int, int, int, int]:
        """(lookback ms, max series, max chunks, max chunk bytes) over the tenants: with several tenants the
        smallest non-zero limit of each applies, as Mimir's limiter does."""
        def smallest(name: str) -> float:
            return min((n for n in (self.app.overrides.get(t, name) for t in self.tenants) if n > 0), default=0)

        return (int(smallest("max_query_lookback") * 1000), int(smallest("max_fetched_series_per_query")),
                int(smallest("max_fetched_chunks_per_query")), int(smallest("max_fetched_chunk_bytes_per_query")))

    def count_chunks(self, chunks: int, chunk_bytes: int) -> None:
        """Count chunks a reader fetched for this query against the chunk and chunk-bytes limits (raises
        QueryLimitError once a total passes its limit)."""
        self.fetched_chunks += chunks
        self.fetched_chunk_bytes += chunk_bytes
        if self._stats is not None:
            self._stats.chunks += chunks
            self._stats.chunk_bytes += chunk_bytes
        if self.max_chunks and self.fetched_chunks > self.max_chunks:
            raise QueryLimitError(MAX_CHUNKS_MESSAGE.format(limit=self.max_chunks))
        if self.max_chunk_bytes and self.fetched_chunk_bytes > self.max_chunk_bytes:
            raise QueryLimitError(MAX_CHUNK_BYTES_MESSAGE.format(limit=self.max_chunk_bytes))

    @property
    def federated(self) -> bool:
        return len(self.tenants) > 1

    # --- range and tenant selection -------------------------------------------------------------------
    def _range(self, mint: int | None, maxt: int | None) -> tuple[int, int]:
        lo = self.mint if mint is None else max(self.mint, mint)
        hi = self.maxt if maxt is None else min(self.maxt, maxt)
        return lo, hi

    def _split(self, matchers: Sequence[Matcher]) -> tuple[list[str], list[Matcher]]:
        """The tenants the `__tenant_id__` matchers accept, and the other matchers."""
        if not self.federated:
            return self.tenants, list(matchers)
        tenant_matchers = [m for m in matchers if m.name == TENANT_LABEL]
        rest = [m for m in matchers if m.name != TENANT_LABEL]
        tenants = [t for t in sorted(self.tenants) if all(m.matches(t) for m in tenant_matchers)]
        return tenants, rest

    def _ingester_range(self, tenant: str, mint: int, maxt: int) -> tuple[int, int] | None:
        # Mimir's ShouldQueryIngesters: a yes/no on the query's end, the range itself is not cut.
        within_ms = int(self.app.overrides.get(tenant, "query_ingesters_within") * 1000)
        if within_ms and maxt < self.now_ms - within_ms:
            return None
        return mint, maxt

    def _store(self):
        return getattr(self.app, "store_gateway", None)

    def _store_range(self, mint: int, maxt: int) -> tuple[int, int] | None:
        if self._store() is None:
            return None
        if self.store_after_ms:
            maxt = min(maxt, self.now_ms - self.store_after_ms)
        return (mint, maxt) if mint <= maxt else None

    # --- samples --------------------------------------------------------------------------------------
    def _tenant_select(self, tenant: str, matchers: Sequence[Matcher], mint: int, maxt: int
                       ) -> Iterator[SeriesSamples]:
        streams = []
        ingester_range = self._ingester_range(tenant, mint, maxt)
        if ingester_range is not None:
            streams.append(self.app.ingester.select(tenant, matchers, *ingester_range))
        store_range = self._store_range(mint, maxt)
        if store_range is not None:
            streams.append(self._store().select(tenant, matchers, *store_range))
        if not streams:
            return iter(())
        return merge_sorted_series(streams)

    def count_series(self, labels: Labels) -> None:
        """Count a fetched series against -querier.max-fetched-series-per-query (raises QueryLimitError)."""
        if self.max_series and labels not in self._seen:
            self._seen.add(labels)
            if len(self._seen) > self.max_series:
                raise QueryLimitError(MAX_SERIES_MESSAGE.format(limit=self.max_series))

    def select(self, matchers: Sequence[Matcher], mint_ms: int | None = None, maxt_ms: int | None = None
               ) -> Iterator[SeriesSamples]:
        """(labels, timestamps int64, values float64) of each matching series with samples in
        [mint_ms, maxt_ms] (clipped to this queryable's range), sorted by labels."""
        stats = self._stats = query_stats.current()
        observer = self.count_chunks if self.max_chunks or self.max_chunk_bytes or stats is not None else None
        token = chunk_fetch_observer.set(observer)
        try:
            series = self._select(matchers, mint_ms, maxt_ms)  # federated reads happen here already
        finally:
            chunk_fetch_observer.reset(token)
        if not self.max_series and observer is None:
            return series
        return self._counted(series, stats, observer)

    def select_batch(self, matchers: Sequence[Matcher], mint_ms: int | None = None, maxt_ms: int | None = None,
                     latest_only: bool = False) -> SeriesBatch:
        """What `select` yields, as one SeriesBatch: the PromQL engine's read, with no per-series arrays
        when only the ingester answers. With `latest_only` (an instant selection at maxt_ms) the ingesters'
        heads may give only each series' newest sample in the range (`Head.select_batch`)."""
        stats, observer, mint, maxt, tenants, tenant_matchers = self._read_plan(matchers, mint_ms, maxt_ms)
        ingester_only = self._ingester_only(tenants, mint, maxt)
        if ingester_only is not None:
            if not ingester_only:
                return SeriesBatch.empty()
            batch, fetched = self._ingester_read(observer, self.app.ingester.select_batch, tenants[0],
                                                 tenant_matchers, mint, maxt, latest_only)
            self._count_selected(batch.labels, batch.num_samples, stats)
            if observer is not None and (fetched[0] or fetched[1]):
                observer(*fetched)
            return batch
        token = chunk_fetch_observer.set(observer)
        try:
            if mint > maxt or not tenants:
                batch = SeriesBatch.empty()
            elif not self.federated:
                batch = self._tenant_select_batch(tenants[0], tenant_matchers, mint, maxt, latest_only)
            else:
                batches = []
                for tenant in tenants:
                    part = self._tenant_select_batch(tenant, tenant_matchers, mint, maxt, latest_only)
                    batches.append(SeriesBatch([with_tenant_label(labels, tenant) for labels in part.labels],
                                               part.ts, part.vals, part.offsets))
                batch = merge_batches(batches)
        finally:
            chunk_fetch_observer.reset(token)
        self._count_selected(batch.labels, batch.num_samples, stats)
        return batch

    def _tenant_select_batch(self, tenant: str, matchers: Sequence[Matcher], mint: int, maxt: int,
                             latest_only: bool = False) -> SeriesBatch:
        """`_tenant_select` as one SeriesBatch: the ingester's and the store-gateway's batches merged (the
        ingester's sample wins a tie, as in `merge_sorted_series`)."""
        batches = []
        ingester_range = self._ingester_range(tenant, mint, maxt)
        if ingester_range is not None:
            batches.append(self.app.ingester.select_batch(tenant, matchers, *ingester_range, latest_only))
        store_range = self._store_range(mint, maxt)
        if store_range is not None:
            store = self._store()
            if hasattr(store, "select_batch"):
                batches.append(store.select_batch(tenant, matchers, *store_range))
            else:
                batches.append(SeriesBatch.from_series(store.select(tenant, matchers, *store_range)))
        return merge_batches(batches)

    def _count_selected(self, labels: list[Labels], num_samples: int, stats) -> None:
        # The series read (those with samples in the range) and their samples, against the series limit and
        # into the query's statistics.
        if self.max_series and labels:
            self._seen.update(labels)
            if len(self._seen) > self.max_series:
                raise QueryLimitError(MAX_SERIES_MESSAGE.format(limit=self.max_series))
        if stats is not None:
            stats.add_series_batch(len(labels), num_samples)

    def _read_plan(self, matchers: Sequence[Matcher], mint_ms: int | None, maxt_ms: int | None):
        """(stats, chunk observer, mint, maxt, tenants, their matchers) of a batched read: the request's query
        stats (noted for the counts), the chunk counter when a limit or the stats want chunks, the range
        clipped to this queryable's, and the tenants the `__tenant_id__` matchers accept."""
        stats = self._stats = query_stats.current()
        observer = self.count_chunks if self.max_chunks or self.max_chunk_bytes or stats is not None else None
        mint, maxt = self._range(mint_ms, maxt_ms)
        return (stats, observer, mint, maxt, *self._split(matchers))

    def _ingester_only(self, tenants: list[str], mint: int, maxt: int) -> bool | None:
        """For a read of [mint, maxt]: True when only the ingester answers it, in one piece; False when nothing
        does (outside -querier.query-ingesters-within with no store to ask); None when the store-gateway
        or several tenants take part."""
        if mint <= maxt and not self.federated and tenants and self._store_range(mint, maxt) is None:
            return self._ingester_range(tenants[0], mint, maxt) is not None
        return None

    @staticmethod
    def _ingester_read(observer, read, *args) -> tuple[object, list[int]]:
        # (read(*args), [chunks, chunk bytes] it fetched): the caller counts the chunks after the series, as
        # Mimir's querier counts each ingester response.
        fetched = [0, 0]

        def collect(chunks: int, chunk_bytes: int) -> None:
            fetched[0] += chunks
            fetched[1] += chunk_bytes

        token = chunk_fetch_observer.set(collect if observer is not None else None)
        try:
            return read(*args), fetched
        finally:
            chunk_fetch_observer.reset(token)

    def select_fold(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int, latest_only: bool, *fold_args):
        """An aggregation of a vector selector folded where the samples are (`Head.select_fold`), when only the
        ingester answers the read and its head alone holds the range: what `select_batch` would read, counted
        as it counts, each series folded as it is decoded. Returns `Head.select_fold`'s tuple, or None (the
        engine then reads the series with `select_batch`)."""
        stats, observer, mint, maxt, tenants, tenant_matchers = self._read_plan(matchers, mint_ms, maxt_ms)
        if not self._ingester_only(tenants, mint, maxt):
            return None
        folded, fetched = self._ingester_read(observer, self.app.ingester.select_fold, tenants[0], tenant_matchers,
                                              mint, maxt, latest_only, *fold_args)
        if folded is None:
            return None
        labels, num_samples = folded[:2]
        self._count_selected(labels, num_samples, stats)
        if observer is not None and (fetched[0] or fetched[1]):
            observer(*fetched)
        return folded

    def evaluate_range(self, matchers: Sequence[Matcher], mint_ms: int, maxt_ms: int, *kernel_args):
        """A range function evaluated where the samples are (`TenantTSDB.evaluate_range`: the head's, or its
        local blocks' and head's series merged one at a time), when only the ingester answers the read: what
        `select_batch` would read, counted as it counts, with the kernel run on each series as it is decoded.
        None otherwise (the engine then reads the series with `select_batch`)."""
        stats, observer, mint, maxt, tenants, tenant_matchers = self._read_plan(matchers, mint_ms, maxt_ms)
        if not self._ingester_only(tenants, mint, maxt):
            return None
        evaluated, fetched = self._ingester_read(observer, self.app.ingester.evaluate_range, tenants[0],
                                                 tenant_matchers, mint, maxt, *kernel_args)
        if evaluated is None:
            return None
        labels, _, _, counts = evaluated
        read = counts[:, 0]
        with_samples = labels if read.all() else [labels[i] for i in np.flatnonzero(read).tolist()]
        self._count_selected(with_samples, int(read.sum()), stats)
        if observer is not None and (fetched[0] or fetched[1]):
            observer(*fetched)
        return evaluated

    def _counted(self, series: Iterator[SeriesSamples], stats, observer) -> Iterator[SeriesSamples]:
        while True:
            # The readers run while the next series is pulled: they report their chunks to this query only
            # then (the variable is set and reset around each step, as the caller's context is shared).
            token = chunk_fetch_observer.set(observer)
            try:
                item = next(series, None)
            finally:
                chunk_fetch_observer.reset(token)
            if item is None:
                return
            if self.max_series:
                self.count_series(item[0])
            if stats is not None:
                stats.add_series(len(item[1]))
            yield item

    def _select(self, matchers: Sequence[Matcher], mint_ms: int | None, maxt_ms: int | None
                ) -> Iterator[SeriesSamples]:
        mint, maxt = self._range(mint_ms, maxt_ms)
        if mint > maxt:
            return iter(())
        tenants, matchers = self._split(matchers)
        if not self.federated:
            return self._tenant_select(tenants[0], matchers, mint, maxt) if tenants else iter(())
        collected = []
        for tenant in tenants:
            for labels, ts, vals in self._tenant_select(tenant, matchers, mint, maxt):
                collected.append((with_tenant_label(labels, tenant), ts, vals))
        collected.sort(key=lambda item: item[0])
        return iter(collected)

    # --- series and labels ----------------------------------------------------------------------------
    def _tenant_series(self, tenant: str, matchers: Sequence[Matcher], mint: int, maxt: int) -> list[Labels]:
        """The tenant's matching series with data in the range, sorted and unique."""
        parts: list[list[Labels]] = []
        ingester_range = self._ingester_range(tenant, mint, maxt)
        db = self.app.ingester.tenants.get(tenant)
        if db is not None and ingester_range is not None:
            lo, hi = ingester_range
            parts.append(db.head.series_labels(matchers, lo, hi))
            for reader in _block_readers(db, lo, hi):
                in_block = []
                for ref in reader.select(matchers).tolist():
                    labels, chunks = reader.series(ref)
                    if any(_overlaps(c_lo, c_hi, lo, hi) for c_lo, c_hi, _ in chunks):
                        in_block.append(labels)
                parts.append(in_block)
        store_range = self._store_range(mint, maxt)
        if store_range is not None:
            store = self._store()
            if hasattr(store, "series_labels"):
                parts.append(list(store.series_labels(tenant, matchers, *store_range)))
            else:
                parts.append([labels for labels, _, _ in store.select(tenant, matchers, *store_range)])
        parts = [part for part in parts if part]
        if len(parts) == 1:
            return parts[0]  # each source lists its series sorted and once
        return sorted({labels for part in parts for labels in part})

    def series(self, matchers: Sequence[Matcher], mint_ms: int | None = None, maxt_ms: int | None = None,
               count: bool = False) -> list[Labels]:
        """Label sets of the matching series that have data in the range, sorted; with `count` they are
        counted against the series limit (the series endpoint does, label lookups do not)."""
        mint, maxt = self._range(mint_ms, maxt_ms)
        if mint > maxt:
            return []
        tenants, matchers = self._split(matchers)
        if not self.federated:
            result = self._tenant_series(tenants[0], matchers, mint, maxt) if tenants else []
        else:
            result = sorted(with_tenant_label(labels, tenant) for tenant in tenants
                            for labels in self._tenant_series(tenant, matchers, mint, maxt))
        if count:
            for labels in result:
                self.count_series(labels)
        return result

    def _local_indexes(self, tenant: str, mint: int, maxt: int) -> tuple[Head | None, list[BlockReader]]:
        """The tenant's head (None unless it holds series overlapping the ingester's part of [mint, maxt])
        and the shared readers of its local blocks overlapping that part, oldest ULID first."""
        ingester_range = self._ingester_range(tenant, mint, maxt)
        db = self.app.ingester.tenants.get(tenant)
        if db is None or ingester_range is None:
            return None, []
        lo, hi = ingester_range
        head = db.head
        with head.lock:
            head_overlaps = head.num_series and _overlaps(head.min_time, head.max_time, lo, hi)
        return (head if head_overlaps else None), _block_readers(db, lo, hi)

    def _tenant_label_series(self, tenant: str, matchers: Sequence[Matcher], mint: int, maxt: int) -> set[Labels]:
        """The tenant's series matching `matchers` as label names and values with `match[]` see them: every
        matching series of the head if the head's time range overlaps the range, and of each block that
        does. Prometheus's index readers (behind Mimir's ingester and store-gateway) ask no per-series
        time question there, so a series whose samples all lie outside the range still counts."""
        found: set[Labels] = set()
        head, readers = self._local_indexes(tenant, mint, maxt)
        if head is not None:
            found.update(head.series_labels(matchers))
        for reader in readers:
            found.update(reader.series(ref)[0] for ref in reader.select(matchers).tolist())
        store_range = self._store_range(mint, maxt)
        if store_range is not None:
            store = self._store()
            if hasattr(store, "series_labels"):
                found.update(store.series_labels(tenant, matchers, *store_range))
            else:
                found.update(labels for labels, _, _ in store.select(tenant, matchers, *store_range))
        return found

    def _label_series(self, matchers: Sequence[Matcher], mint: int, maxt: int) -> set[Labels]:
        """Series for label names and values with matchers (federated ones with `__tenant_id__`)."""
        tenants, matchers = self._split(matchers)
        if not self.federated:
            return self._tenant_label_series(tenants[0], matchers, mint, maxt) if tenants else set()
        return {with_tenant_label(labels, tenant) for tenant in tenants
                for labels in self._tenant_label_series(tenant, matchers, mint, maxt)}

    def _tenant_label_index(self, tenant: str, mint: int, maxt: int, name: str | None) -> set[str]:
        """Label names (name None) or one label's values of the tenant's data overlapping the range,
        read from the indexes without matching series."""
        out: set[str] = set()
        head, readers = self._local_indexes(tenant, mint, maxt)
        if head is not None:
            with head.lock:
                out.update(head.index.label_names() if name is None else head.index.label_values(name))
        for reader in readers:
            out.update(reader.label_names() if name is None else reader.label_values(name))
        store_range = self._store_range(mint, maxt)
        if store_range is not None:
            store = self._store()
            lo, hi = store_range
            if name is None and hasattr(store, "label_names"):
                out.update(store.label_names(tenant, mint=lo, maxt=hi))
            elif name is not None and hasattr(store, "label_values"):
                out.update(store.label_values(tenant, name, mint=lo, maxt=hi))
            else:
                for labels, _, _ in store.select(tenant, [Matcher("=~", "__name__", ".+")], *store_range):
                    if name is None:
                        out.update(label for label, _ in labels)
                    else:
                        out.update(value for label, value in labels if label == name)
        out.discard("")
        return out

    def label_names(self, matchers: Sequence[Matcher] = (), mint_ms: int | None = None,
                    maxt_ms: int | None = None) -> list[str]:
        """Sorted label names of the series with data in the range, or (with matchers) of the matching series
        of the head and blocks whose time range overlaps it."""
        mint, maxt = self._range(mint_ms, maxt_ms)
        if mint > maxt:
            return []
        if matchers:
            return sorted({name for labels in self._label_series(matchers, mint, maxt) for name, _ in labels})
        tenants, _ = self._split(())
        names: set[str] = set()
        for tenant in tenants:
            names |= self._tenant_label_index(tenant, mint, maxt, None)
        if self.federated:
            names.add(TENANT_LABEL)
        return sorted(names)

    def label_values(self, name: str, matchers: Sequence[Matcher] = (), mint_ms: int | None = None,
                     maxt_ms: int | None = None) -> list[str]:
        """Sorted values of label `name` on the series with data in the range, or (with matchers) on the
        matching series of the head and blocks whose time range overlaps it."""
        mint, maxt = self._range(mint_ms, maxt_ms)
        if mint > maxt:
            return []
        if self.federated and name == TENANT_LABEL:
            # Mimir's merge querier answers the tenant IDs themselves, filtered by the __tenant_id__ matchers only
            return sorted(self._split(matchers)[0])
        if matchers:
            return sorted({value for labels in self._label_series(matchers, mint, maxt)
                           for label, value in labels if label == name})
        tenants, _ = self._split(())
        values: set[str] = set()
        if self.federated and name == ORIGINAL_TENANT_LABEL:
            name = TENANT_LABEL
        for tenant in tenants:
            values |= self._tenant_label_index(tenant, mint, maxt, name)
        return sorted(values)
