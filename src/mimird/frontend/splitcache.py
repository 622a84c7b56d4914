"""The query-frontend's split-by-interval and results cache for range queries (Mimir's
splitAndCacheMiddleware), run in front of the PromQL engine.

* Splitting (`-query-frontend.split-queries-by-interval`, 24h, 0 disables): the range is cut at multiples
  of the interval (UTC day boundaries by default), each piece ending on the last step before a boundary
  so every piece stays on the request's step grid; `@ start()` / `@ end()` are pinned to the whole
  request's start and end first (as Mimir does), so each step sees what it would unsplit. The pieces
  (and the gaps the cache leaves) are evaluated in parallel worker threads, at most the tenants'
  smallest `max_query_parallelism` (14) at once, each with its own per-query limits, as each Mimir split
  query has; their results are merged in time order, so the answer is the unsplit one byte for byte.
  Where the cache takes no part, the range is evaluated whole instead (`run`'s `whole`, the default) and
  redone in pieces only when it hits a per-query limit: the kernels use every core on their own, and
  pieces only repeat the fixed costs. The split is counted either way, as Mimir counts it.
* Results cache (`-query-frontend.cache-results`, off by default): keyed by tenant(s), printed query, step and
  the piece's interval index (plus the start's offset into the step grid when unaligned: Mimir's key).
  All pieces' entries are looked up at once; an entry holds extents — time ranges already evaluated —
  and a request evaluates only the gaps, then stores the merged extents. Only step-aligned requests are
  cached (unless `cache_unaligned_requests`), nothing newer than now − `max_cache_freshness` (10m) is
  stored, entries live `results_cache_ttl` (7d), and a request with `Cache-Control: no-store` neither
  reads nor writes the cache. Each extent remembers when it was evaluated and is dropped once older than
  its TTL — `results_cache_ttl_for_out_of_order_time_window` (10m) for extents reaching into the tenant's
  `out_of_order_time_window`, whose data may still change. The entries live in this module's in-memory LRU (the default here) or in
  memcached (`remotecache`, `-query-frontend.results-cache.backend=memcached`).

Kept out of the cache, so that a cached answer is always what a fresh evaluation gives: pieces whose
query has a negative offset or an `@` time after the piece's end or inside the freshness window (Mimir's
rules; `@ start()` / `@ end()` count as the times they stand for, and the key holds them), and pieces
whose evaluation produced annotations (Mimir stores those too). Requests asking for `stats` run as one
unsplit, uncached evaluation, so that their `data.stats` describes it (Mimir's frontend splits and caches
them like any other request, and its response model has no `stats`: Mimir answers them without
`data.stats`).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from mimird.frontend import stats as query_stats
from mimird.promql import ast
from mimird.promql.parser import parse
from mimird.promql.printer import to_string
from mimird.promql.value import Matrix, QueryResult, Series, TooManySamplesError
from mimird.querier.queryable import QueryLimitError
from mimird.tsdb.labels import Labels

# Entries kept by the in-memory results cache (an entry is one query, step and interval).
MAX_CACHE_ENTRIES = 4096
# Samples kept by it over all entries (a sample is a timestamp and a value, 16 bytes).
MAX_CACHE_SAMPLES = 8_000_000
# Threads one query's pieces use at most, whatever max_query_parallelism allows.
MAX_PIECE_THREADS = 16

# Worker threads for split pieces, shared by all queries and started once: starting a pool per query cost
# more than the pieces of a small one.
_piece_pool: ThreadPoolExecutor | None = None
_piece_pool_lock = threading.Lock()


def _piece_threads() -> ThreadPoolExecutor:
    global _piece_pool
    with _piece_pool_lock:
        if _piece_pool is None:
            _piece_pool = ThreadPoolExecutor(max_workers=MAX_PIECE_THREADS, thread_name_prefix="query-piece")
        return _piece_pool


def next_interval_boundary(t_ms: int, step_ms: int, interval_ms: int) -> int:
    """The last step (on the grid through `t_ms`) before the interval boundary that follows `t_ms`."""
    start_of_next = (t_ms // interval_ms + 1) * interval_ms
    target = start_of_next - ((start_of_next - t_ms) % step_ms)
    if target == start_of_next:
        target -= step_ms
    return target


def split_by_interval(start_ms: int, end_ms: int, step_ms: int, interval_ms: int) -> list[tuple[int, int]]:
    """[start, end] pieces of a range query, each within one interval and on the step grid."""
    pieces = []
    start = start_ms
    while start <= end_ms:
        end = min(next_interval_boundary(start, step_ms, interval_ms), end_ms)
        pieces.append((start, end))
        start = end + step_ms
    return pieces


def pin_at_modifiers(node: ast.Node, start_ms: int, end_ms: int) -> ast.Node:
    """A copy of the tree with `@ start()` / `@ end()` replaced by the query's own start and end."""
    node = ast.map_children(node, lambda child: pin_at_modifiers(child, start_ms, end_ms))
    if isinstance(node, (ast.VectorSelector, ast.SubqueryExpr)) and node.start_or_end is not None:
        return replace(node, timestamp_ms=start_ms if node.start_or_end == "start" else end_ms, start_or_end=None)
    return node


def modifiers_uncacheable(node: ast.Node, end_ms: int, max_cache_ms: int) -> bool:
    """Mimir's areEvaluationTimeModifiersCachable, negated, for a tree with `@ start()` / `@ end()` already
    pinned: a negative offset (it reads data newer than the step), or an `@` time after the piece's end or
    inside the freshness window, keeps a piece out of the cache."""
    for child in ast.walk(node):
        if isinstance(child, (ast.VectorSelector, ast.SubqueryExpr)):
            if child.offset_ns < 0 or child.offset_expr is not None:
                return True  # an offset given as a duration expression may be negative too
            if child.timestamp_ms is not None and (child.timestamp_ms > end_ms or child.timestamp_ms > max_cache_ms):
                return True
    return False


@dataclass
class Extent:
    """An evaluated stretch [start_ms, end_ms] of one cache entry's step grid, series by label set."""

    start_ms: int
    end_ms: int
    series: dict[Labels, tuple[np.ndarray, np.ndarray]]
    annotated: bool = False  # its evaluation produced warnings or infos (it is then not stored)
    # when it was evaluated (ms; for a merged extent the oldest part's time): its TTL counts from here
    queried_ms: int = 0

    @property
    def samples(self) -> int:
        return sum(len(ts) for ts, _ in self.series.values())

    def clipped(self, end_ms: int) -> Extent:
        """The part up to `end_ms`."""
        kept = {}
        for labels, (ts, vals) in self.series.items():
            n = int(np.searchsorted(ts, end_ms, side="right"))
            if n:
                kept[labels] = (ts[:n], vals[:n])
        return Extent(self.start_ms, end_ms, kept, queried_ms=self.queried_ms)

    def within(self, start_ms: int, end_ms: int) -> dict[Labels, tuple[np.ndarray, np.ndarray]]:
        """The series' points in [start_ms, end_ms]."""
        out = {}
        for labels, (ts, vals) in self.series.items():
            lo = int(np.searchsorted(ts, start_ms, side="left"))
            hi = int(np.searchsorted(ts, end_ms, side="right"))
            if hi > lo:
                out[labels] = (ts[lo:hi], vals[lo:hi])
        return out


def _merge_extents(extents: list[Extent], step_ms: int) -> list[Extent]:
    """Extents sorted, with touching or overlapping ones joined (the later one's points win overlaps)."""
    merged: list[Extent] = []
    for extent in sorted(extents, key=lambda e: (e.start_ms, e.end_ms)):
        if merged and extent.start_ms <= merged[-1].end_ms + step_ms:
            last = merged[-1]
            if extent.end_ms <= last.end_ms:
                continue
            tail = extent.within(last.end_ms + step_ms, extent.end_ms)
            # Mimir keeps the older query time of the two (an unknown one, 0, gives way to a known one)
            queried = (min(last.queried_ms, extent.queried_ms) if last.queried_ms and extent.queried_ms
                       else max(last.queried_ms, extent.queried_ms))
            merged[-1] = Extent(last.start_ms, extent.end_ms, _concat([last.series, tail]), queried_ms=queried)
        else:
            merged.append(extent)
    return merged


def _concat(parts: Sequence[dict[Labels, tuple[np.ndarray, np.ndarray]]]
            ) -> dict[Labels, tuple[np.ndarray, np.ndarray]]:
    """Series of consecutive, non-overlapping time pieces joined per label set."""
    pieces: dict[Labels, list[tuple[np.ndarray, np.ndarray]]] = {}
    for part in parts:
        for labels, arrays in part.items():
            pieces.setdefault(labels, []).append(arrays)
    out = {}
    for labels, arrays in pieces.items():
        if len(arrays) == 1:
            out[labels] = arrays[0]
        else:
            out[labels] = (np.concatenate([ts for ts, _ in arrays]), np.concatenate([v for _, v in arrays]))
    return out


def _series_of(result: QueryResult) -> dict[Labels, tuple[np.ndarray, np.ndarray]]:
    return {series.labels: (series.ts, series.vals) for series in result.value}


class ResultsCache:
    """An in-memory LRU of cache entries (lists of extents), bounded by entries and samples; thread-safe."""

    def __init__(self, max_entries: int = MAX_CACHE_ENTRIES, max_samples: int = MAX_CACHE_SAMPLES):
        self.max_entries = max_entries
        self.max_samples = max_samples
        self._entries: OrderedDict[str, tuple[float, list[Extent], int]] = OrderedDict()
        self._samples = 0
        self._lock = threading.Lock()

    def get(self, key: str, now_s: float) -> list[Extent]:
        """The entry's extents (empty when absent or expired)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return []
            expires, extents, _ = entry
            if expires <= now_s:
                self._drop(key)
                return []
            self._entries.move_to_end(key)
            return extents

    def get_many(self, keys: Sequence[str], now_s: float) -> dict[str, list[Extent]]:
        """The extents of each key that has an unexpired entry."""
        found = {}
        for key in keys:
            extents = self.get(key, now_s)
            if extents:
                found[key] = extents
        return found

    def put(self, key: str, extents: list[Extent], expires_s: float) -> None:
        """Store the entry's extents; the least recently used entries make room."""
        samples = sum(extent.samples for extent in extents)
        if samples > self.max_samples:
            return
        with self._lock:
            self._drop(key)
            self._entries[key] = (expires_s, extents, samples)
            self._samples += samples
            while len(self._entries) > self.max_entries or self._samples > self.max_samples:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._samples -= entry[2]

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class CacheSettings:
    """The results cache's and the splitter's per-request settings (from the tenants' limits)."""

    max_freshness_ms: int
    ttl_s: float
    cache_unaligned: bool
    parallelism: int = 14  # max_query_parallelism: split pieces evaluated at once
    ttl_in_ooo_window_s: float = 600.0  # results_cache_ttl_for_out_of_order_time_window
    ooo_window_ms: int = 0  # out_of_order_time_window

    def ttl_for(self, extent: Extent, now_ms: int) -> float:
        """Mimir's getTTLForExtent: the shorter TTL for an extent reaching into the out-of-order window,
        whose data may still change."""
        if self.ooo_window_ms and extent.end_ms >= now_ms - self.ooo_window_ms:
            return self.ttl_in_ooo_window_s
        return self.ttl_s


class SplitCacheMetrics:
    """The split-and-cache middleware's counters, as Mimir's query-frontend names them."""

    def __init__(self, registry: CollectorRegistry | None):
        registry = registry if registry is not None else CollectorRegistry()
        self.split_queries = Counter("cortex_frontend_split_queries", "Total number of underlying query requests "
                                     "after the split by interval is applied.", registry=registry)
        self.cache_requests = Counter("cortex_frontend_query_result_cache_requests", "Total number of requests "
                                      "(or partial requests) looked up in the results cache.", ["request_type"],
                                      registry=registry)
        self.cache_hits = Counter("cortex_frontend_query_result_cache_hits", "Total number of requests (or partial "
                                  "requests) fetched from the results cache.", ["request_type"], registry=registry)
        self.cache_requests.labels("query_range")
        self.cache_hits.labels("query_range")
        self.cache_attempted = Counter("cortex_frontend_query_result_cache_attempted", "Total number of queries "
                                       "that were attempted to be fetched from cache.", registry=registry)
        self.cache_skipped = Counter("cortex_frontend_query_result_cache_skipped", "Total number of times a query "
                                     "was not cacheable because of a reason. This metric is tracked for each partial "
                                     "query when time-splitting is enabled.", ["reason"], registry=registry)
        for reason in ("unaligned-time-range", "too-new", "has-modifiers"):
            self.cache_skipped.labels(reason)


@dataclass
class _Piece:
    """One split piece: its range, its cache key (None when not cached) and how it is answered — cached
    points and ranges to evaluate, in time order."""

    start_ms: int
    end_ms: int
    key: str | None
    cached: list[Extent]
    segments: list[tuple[int, int] | dict] = field(default_factory=list)


def plan_piece(piece: _Piece, step_ms: int) -> list[tuple[int, int]]:
    """Fill `piece.segments` from its cached extents: their points where they cover the piece, (start, end)
    gaps elsewhere. Returns the gaps."""
    gaps = []
    cursor = piece.start_ms
    for extent in piece.cached:
        if extent.end_ms < cursor or extent.start_ms > piece.end_ms:
            continue
        if extent.start_ms > cursor:
            gaps.append((cursor, extent.start_ms - step_ms))
            piece.segments.append(gaps[-1])
        overlap_end = min(piece.end_ms, extent.end_ms)
        piece.segments.append(extent.within(max(cursor, extent.start_ms), overlap_end))
        cursor = overlap_end + step_ms
        if cursor > piece.end_ms:
            break
    if cursor <= piece.end_ms:
        gaps.append((cursor, piece.end_ms))
        piece.segments.append(gaps[-1])
    return gaps


class RangeQuerySplitter:
    """Runs range queries split by interval and, when enabled, through the results cache (in memory, or any
    object with the same `get_many` / `put`, e.g. the memcached one)."""

    def __init__(self, engine, interval_ms: int, cache, metrics: SplitCacheMetrics | None = None):
        self.engine = engine
        self.interval_ms = interval_ms
        self.cache = cache
        self.metrics = metrics or SplitCacheMetrics(None)
        self.split_queries = 0  # evaluations run for split pieces and cache gaps (for tests and metrics)

    def cache_key(self, tenant_key: str, query: str, start_ms: int, step_ms: int) -> str:
        """Mimir's results cache key: tenants, query, step and interval index, plus the start's offset into
        the step grid when the start is not a multiple of the step."""
        key = f"{tenant_key}:{query}:{step_ms}:{start_ms // (self.interval_ms or 1)}"
        return key if start_ms % step_ms == 0 else f"{key}:{start_ms % step_ms}"

    def run(self, new_queryable: Callable[[], object], tenant_key: str, query: str, start_ms: int, end_ms: int,
            step_ms: int, cancelled, stats, settings: CacheSettings, no_store: bool,
            now_ms: int | None = None, whole: bool = True) -> QueryResult:
        """The range query's result, identical to one unsplit, uncached evaluation. With `stats` (the
        request's `stats` parameter) it is one unsplit, uncached evaluation, so that `data.stats`
        describes it.

        With `whole` (the default), a query the cache takes no part in is evaluated whole: its pieces would
        only buy parallelism, which the kernels get on their own (decoding, range functions and folds split
        over the cores), while each piece repeats the fixed costs of an evaluation, a subquery's window and
        the reads of the blocks both pieces touch. 6 h over 10k series, crossing midnight UTC, over HTTP and
        each run after VictoriaMetrics' `sum by (job) (rate(...))` on the same cores: `sum by (job)
        (rate(...))` 40.7 -> 36.7 ms, `histogram_quantile(0.9, ...)` 75.2 -> 68.2, a 144-series sum 5.0 ->
        4.3 whole rather than in two pieces on two threads. The split is still counted in the metrics and
        `Server-Timing`, as Mimir's frontend counts it, and a whole evaluation that hits a per-query limit
        is redone in pieces, which each have their own. `whole=False` evaluates the pieces as Mimir's
        queriers would, in parallel."""
        use_cache = self.cache is not None and not no_store
        if stats is not None or (not self.interval_ms and not use_cache):
            return self.engine.range(new_queryable(), query, start_ms, end_ms, step_ms, cancelled=cancelled,
                                     stats=stats)
        expr = parse(query)
        pinned = pin_at_modifiers(expr, start_ms, end_ms)
        ranges = (split_by_interval(start_ms, end_ms, step_ms, self.interval_ms) if self.interval_ms
                  else [(start_ms, end_ms)])
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        aligned = start_ms % step_ms == 0 and end_ms % step_ms == 0
        cacheable = use_cache and (settings.cache_unaligned or aligned)
        request_stats = query_stats.current()
        if self.interval_ms:
            self.metrics.split_queries.inc(len(ranges))
            if request_stats is not None:
                request_stats.split_queries += len(ranges)
        if (len(ranges) == 1 or whole) and not cacheable:
            try:
                return self.engine.range(new_queryable(), query, start_ms, end_ms, step_ms, cancelled=cancelled)
            except (QueryLimitError, TooManySamplesError):
                if len(ranges) == 1:
                    raise
                # the pieces are held to the per-query limits one by one, as Mimir's split queries are
        max_cache_ms = now_ms - settings.max_freshness_ms

        # keyed by the (pinned) expression as printed (Mimir keys by the parsed query's String()), so spellings
        # of one query share entries
        printed = to_string(pinned) if cacheable else query
        pieces = []
        for start, end in ranges:
            reason = self._not_cacheable(use_cache, cacheable, pinned, start, end, max_cache_ms)
            pieces.append(_Piece(start, end, None if reason else self.cache_key(tenant_key, printed, start, step_ms), []))
        keys = [piece.key for piece in pieces if piece.key is not None]
        if keys:
            found = self.cache.get_many(keys, now_ms / 1000)
            self.metrics.cache_requests.labels("query_range").inc(len(keys))
            self.metrics.cache_hits.labels("query_range").inc(len(found))
            for piece in pieces:
                if piece.key is not None:
                    # extents evaluated longer ago than their TTL are dropped (unknown query times are kept)
                    piece.cached = [extent for extent in found.get(piece.key, [])
                                    if not extent.queried_ms
                                    or extent.queried_ms >= now_ms - settings.ttl_for(extent, now_ms) * 1000]
        gaps = [gap for piece in pieces for gap in plan_piece(piece, step_ms)]
        evaluated = dict(zip(gaps, self._evaluate_all(new_queryable, pinned, gaps, step_ms, cancelled,
                                                      settings.parallelism), strict=True))

        parts = []
        warnings: dict[str, None] = {}
        infos: dict[str, None] = {}
        for piece in pieces:
            fresh: list[Extent] = []
            piece_parts = []
            for segment in piece.segments:
                if isinstance(segment, dict):
                    piece_parts.append(segment)
                    continue
                result = evaluated[segment]
                warnings.update(dict.fromkeys(result.warnings))
                infos.update(dict.fromkeys(result.infos))
                fresh.append(Extent(*segment, _series_of(result), bool(result.warnings or result.infos), now_ms))
                piece_parts.append(fresh[-1].series)
            if piece.key is not None:
                self._store(piece, fresh, step_ms, max_cache_ms, now_ms, settings, piece_parts, request_stats)
            parts.append(_concat(piece_parts))
        joined = _concat(parts)
        matrix = Matrix(Series(labels, *joined[labels]) for labels in sorted(joined))
        return QueryResult(matrix, list(warnings), list(infos))

    def _not_cacheable(self, use_cache: bool, cacheable: bool, pinned, start_ms: int, end_ms: int,
                       max_cache_ms: int) -> str | None:
        """Why a piece is kept out of the cache (Mimir's isRequestCachable reasons, counted as it counts
        them), or None."""
        if not use_cache:
            return "disabled"
        self.metrics.cache_attempted.inc()
        if not cacheable:
            reason = "unaligned-time-range"
        elif start_ms > max_cache_ms:
            reason = "too-new"
        elif modifiers_uncacheable(pinned, end_ms, max_cache_ms):
            reason = "has-modifiers"
        else:
            return None
        self.metrics.cache_skipped.labels(reason).inc()
        return reason

    def _store(self, piece: _Piece, fresh: list[Extent], step_ms: int, max_cache_ms: int, now_ms: int,
               settings: CacheSettings, piece_parts, request_stats) -> None:
        # nothing newer than now - max_cache_freshness is stored: extents end on the last step before it
        storable = [extent.clipped(min(extent.end_ms, extent.start_ms + (max_cache_ms - extent.start_ms)
                                       // step_ms * step_ms))
                    for extent in fresh if extent.start_ms <= max_cache_ms and not extent.annotated]
        if storable:
            merged = _merge_extents(list(piece.cached) + storable, step_ms)
            self.cache.put(piece.key, merged, now_ms / 1000 + settings.ttl_for(merged[-1], now_ms))
        if request_stats is not None:
            # sizes as 16 bytes a sample (Mimir counts the cached responses' encoded bytes)
            evaluated = sum(extent.samples for extent in fresh)
            answered = sum(len(ts) for part in piece_parts for ts, _ in part.values())
            request_stats.cache_miss_bytes += 16 * evaluated
            request_stats.cache_hit_bytes += 16 * (answered - evaluated)

    def _evaluate_all(self, new_queryable, expr, ranges: list[tuple[int, int]], step_ms: int, cancelled,
                      parallelism: int) -> list[QueryResult]:
        """Evaluate every range, at most `parallelism` at once (Mimir schedules a query's split pieces in
        parallel up to max_query_parallelism): this thread and up to parallelism - 1 of the shared piece
        threads take the pieces in turn. Results in the order of `ranges`; the first error raised wins."""
        self.split_queries += len(ranges)
        workers = min(max(parallelism, 1), len(ranges), MAX_PIECE_THREADS)
        if workers <= 1:
            return [self.engine.range(new_queryable(), expr, start, end, step_ms, cancelled=cancelled)
                    for start, end in ranges]
        request_stats = query_stats.current()
        failed = threading.Event()
        errors: list[BaseException] = []
        todo = deque(enumerate(ranges))
        outcomes: list = [None] * len(ranges)

        def piece_cancelled() -> bool:
            return failed.is_set() or bool(cancelled and cancelled())

        def take_pieces() -> None:
            # each piece counts into its own statistics (merged below), so threads never share counters
            while not failed.is_set():
                try:
                    index, (start, end) = todo.popleft()
                except IndexError:
                    return
                piece_stats = query_stats.QueryStats() if request_stats is not None else None
                try:
                    with query_stats.collecting(piece_stats):
                        result = self.engine.range(new_queryable(), expr, start, end, step_ms,
                                                   cancelled=piece_cancelled)
                except BaseException as exc:
                    errors.append(exc)
                    failed.set()
                    return
                outcomes[index] = (result, piece_stats)

        pool = _piece_threads()
        helpers = [pool.submit(contextvars.copy_context().run, take_pieces) for _ in range(workers - 1)]
        try:
            take_pieces()
        finally:
            for helper in helpers:
                # one still queued behind other queries' pieces has nothing left to take
                if not helper.cancel():
                    helper.result()
        if errors:
            raise errors[0]
        if request_stats is not None:
            for _, piece_stats in outcomes:
                request_stats.merge(piece_stats)
        return [result for result, _ in outcomes]
