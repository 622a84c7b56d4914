"""Per-request query statistics and the `Server-Timing` header the query-frontend writes when
`-query-frontend.query-stats-enabled` is on (the default).

Each request gets a `QueryStats` in a context variable; the querier's read view adds the samples and
bytes it loads (context variables follow `asyncio.to_thread` into the worker thread). The header is
`querier_wall_time;dur=<ms>, response_time;dur=<ms>, bytes_processed;val=<n>, samples_processed;val=<n>`
with durations in milliseconds formatted as Go's `strconv.FormatFloat(ms, 'f', -1, 64)`.

`samples_processed` counts the samples read from storage and `bytes_processed` their decoded size (16
bytes a sample); Mimir counts engine-processed samples and fetched chunk and index bytes, which this
storage does not measure separately.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mimird.http.request import Request, Response

SERVER_TIMING = "Server-Timing"
# -query-frontend.max-body-size
MAX_BODY_BYTES = 10 * 1024 * 1024


@dataclass
class QueryStats:
    """What one request's queries read, and how long the querier worked on it."""

    samples: int = 0
    bytes: int = 0
    wall_time_s: float = 0.0

    def add_samples(self, count: int) -> None:
        self.samples += count
        self.bytes += 16 * count


_current: contextvars.ContextVar[QueryStats | None] = contextvars.ContextVar("mimird_query_stats", default=None)


def current() -> QueryStats | None:
    """The statistics of the request being served, if it collects any."""
    return _current.get()


def _ms(seconds: float) -> str:
    text = repr(seconds * 1000)
    if "e" in text:
        text = format(seconds * 1000, "f").rstrip("0").rstrip(".")
    return text[:-2] if text.endswith(".0") else text


def server_timing(stats: QueryStats, response_time_s: float) -> str:
    """The `Server-Timing` value for a finished request."""
    return (f"querier_wall_time;dur={_ms(stats.wall_time_s)}, response_time;dur={_ms(response_time_s)}, "
            f"bytes_processed;val={stats.bytes}, samples_processed;val={stats.samples}")


def frontend(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    """Wrap a querier API method: refuse bodies over the frontend's limit, collect statistics and add
    `Server-Timing` when `-query-frontend.query-stats-enabled`."""

    @functools.wraps(handler)
    async def wrapped(self, request: Request) -> Response:
        if len(request.body) > MAX_BODY_BYTES:
            return Response.error(413, "http: request body too large")
        if not self.app.config.frontend.query_stats_enabled:
            return await handler(self, request)
        started = time.perf_counter()
        stats = QueryStats()
        token = _current.set(stats)
        try:
            response = await handler(self, request)
        finally:
            _current.reset(token)
        elapsed = time.perf_counter() - started
        stats.wall_time_s = stats.wall_time_s or elapsed
        response.headers.append((SERVER_TIMING, server_timing(stats, elapsed)))
        return response

    return wrapped
