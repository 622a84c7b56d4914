"""Per-request query statistics and the `Server-Timing` header the query-frontend writes when
`-query-frontend.query-stats-enabled` is on (the default).

Each request gets a `QueryStats` in a context variable; the querier's read view adds the samples and
bytes it loads (context variables follow `asyncio.to_thread` into the worker thread). The header is
`querier_wall_time;dur=<ms>, response_time;dur=<ms>, bytes_processed;val=<n>, samples_processed;val=<n>`
with durations in milliseconds formatted as Go's `strconv.FormatFloat(ms, 'f', -1, 64)`.

`samples_processed` counts the samples read from storage and `bytes_processed` their decoded size (16
bytes a sample); Mimir counts engine-processed samples and fetched chunk and index bytes, which this
storage does not measure separately.

A request with `X-Mimir-Response-Query-Stats: true` gets the detailed statistics appended, of those Mimir
documents the ones this single process measures: `encode_time_seconds`, `fetched_chunk_bytes` and
`fetched_chunks_count` (the encoded chunks the head and block readers decoded), `fetched_series_count`,
`query_wall_time_seconds`, `queue_time_seconds`, `response_size_bytes`, `response_time`,
`results_cache_hit_bytes` and `results_cache_miss_bytes` (16 bytes per sample answered from, resp. evaluated
for, the results cache), `sharded_queries` (no sharding: 0) and `split_queries` (the pieces a range query was
split into, when splitting is on). Index byte counts are left out.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal

from mimird._fast.jsonenc import format_float
from mimird.frontend.queue import QueryQueue, queue_for
from mimird.http.request import Request, Response

SERVER_TIMING = "Server-Timing"
# -query-frontend.max-body-size
MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class QueryStats:
    """What one request's queries read, and how long the querier worked on it."""

    samples: int = 0
    bytes: int = 0
    series: int = 0
    wall_time_s: float = 0.0
    encode_time_s: float = 0.0
    queue_time_s: float = 0.0
    chunks: int = 0
    chunk_bytes: int = 0
    split_queries: int = 0
    cache_hit_bytes: int = 0
    cache_miss_bytes: int = 0

    def add_series(self, samples: int) -> None:
        """One series read from storage with `samples` samples."""
        self.series += 1
        self.samples += samples
        self.bytes += 16 * samples

    def add_series_batch(self, series: int, samples: int) -> None:
        """`series` series read from storage with `samples` samples between them (one call per read,
        where `add_series` would be one per series)."""
        self.series += series
        self.samples += samples
        self.bytes += 16 * samples

    def merge(self, other: QueryStats | None) -> None:
        """Add what another evaluation of the same request (a split piece run in its own thread) read."""
        if other is None:
            return
        self.samples += other.samples
        self.bytes += other.bytes
        self.series += other.series
        self.chunks += other.chunks
        self.chunk_bytes += other.chunk_bytes


_current: contextvars.ContextVar[QueryStats | None] = contextvars.ContextVar("mimird_query_stats", default=None)


def current() -> QueryStats | None:
    """The statistics of the request being served, if it collects any."""
    return _current.get()


@contextlib.contextmanager
def collecting(stats: QueryStats | None) -> Iterator[None]:
    """Make `stats` the current statistics for the body of the `with` (None: collect nothing)."""
    token = _current.set(stats)
    try:
        yield
    finally:
        _current.reset(token)


def _ms(seconds: float) -> str:
    # Go's FormatFloat(ms, 'f', -1, 64): the shortest digits that read back, never an exponent. The query
    # JSON renderer writes exactly that from 1e-6 to 1e21, in a fraction of repr's time.
    millis = seconds * 1000
    if millis == 0 or 1e-6 <= abs(millis) < 1e21:
        return format_float(millis)
    return format(Decimal(repr(millis)), "f")  # the same digits in fixed notation


def server_timing(stats: QueryStats, response_time_s: float) -> str:
    """The `Server-Timing` value for a finished request."""
    return (f"querier_wall_time;dur={_ms(stats.wall_time_s)}, response_time;dur={_ms(response_time_s)}, "
            f"bytes_processed;val={stats.bytes}, samples_processed;val={stats.samples}")


def detailed_server_timing(stats: QueryStats, response_time_s: float, response_size: int) -> str:
    """The statistics added for `X-Mimir-Response-Query-Stats: true`, in Mimir's (alphabetical) order."""
    return ", ".join([
        f"encode_time_seconds;dur={_ms(stats.encode_time_s / 1000)}",
        f"fetched_chunk_bytes;val={stats.chunk_bytes}",
        f"fetched_chunks_count;val={stats.chunks}",
        f"fetched_series_count;val={stats.series}",
        f"query_wall_time_seconds;dur={_ms(stats.wall_time_s / 1000)}",
        f"queue_time_seconds;dur={_ms(stats.queue_time_s / 1000)}",
        f"response_size_bytes;val={response_size}",
        f"response_time;dur={_ms(response_time_s)}",
        f"results_cache_hit_bytes;val={stats.cache_hit_bytes}",
        f"results_cache_miss_bytes;val={stats.cache_miss_bytes}",
        "sharded_queries;val=0",
        f"split_queries;val={stats.split_queries}",
    ])


def _frontend_of(api) -> tuple[QueryQueue, bool]:
    """The app's query queue and whether it collects query statistics, for an API object with an `app`
    (the configuration is fixed for the app's life, so it is read once, and kept on the API object)."""
    found = api.__dict__.get("_frontend")
    if found is None:
        found = api._frontend = (queue_for(api.app), bool(api.app.config.frontend.query_stats_enabled))
    return found


def frontend(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Wrap a querier API method: refuse bodies over the frontend's limit, pass the request through the
    query queue, collect statistics and add `Server-Timing` when `-query-frontend.query-stats-enabled`."""

    @functools.wraps(handler)
    async def wrapped(self, request: Request) -> Response:
        if len(request.body) > MAX_BODY_BYTES:
            return Response.error(413, "http: request body too large")
        queue, stats_enabled = _frontend_of(self)
        started = time.perf_counter()
        waited = await queue.acquire("|".join(request.tenants))
        try:
            if not stats_enabled:
                return await handler(self, request)
            stats = QueryStats(queue_time_s=waited)
            token = _current.set(stats)
            try:
                response = await handler(self, request)
            finally:
                _current.reset(token)
        finally:
            queue.release()
        elapsed = time.perf_counter() - started
        stats.wall_time_s = stats.wall_time_s or elapsed
        timing = server_timing(stats, elapsed)
        if request.headers.get("x-mimir-response-query-stats", "").lower() == "true":
            timing += ", " + detailed_server_timing(stats, elapsed, len(response.body))
        response.headers.append((SERVER_TIMING, timing))
        return response

    return wrapped
