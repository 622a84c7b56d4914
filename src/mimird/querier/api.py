"""The querier's Prometheus HTTP API handlers (`<prometheus-http-prefix>/api/v1/...`): instant and range
queries, series, label names and values, metadata, exemplars and format_query.

Handlers parse parameters as Prometheus's web API does behind Mimir's query-frontend (which checks the
time range and limit first, and forwards only `query`, `time`/`start`/`end`/`step` and `stats` of query
requests), read through a `TenantQueryable` in a worker thread (or, for a query whose last run took
at most 3 ms, on the event loop: `InlineHistory`), and answer with Prometheus's JSON
envelope (`jsonfmt`). Query, series and label responses are written as the frontend's codec re-encodes
them (no HTML escaping); the other endpoints' as Prometheus's and Mimir's handlers write them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from mimird.config.schema import ConfigError
from mimird.frontend.limits import QueryLimits
from mimird.frontend.memcached import CacheClientMetrics, MemcachedClient
from mimird.frontend.remotecache import MemcachedResultsCache
from mimird.frontend.splitcache import CacheSettings, RangeQuerySplitter, ResultsCache, SplitCacheMetrics
from mimird.frontend.stats import current as current_stats
from mimird.frontend.stats import frontend
from mimird.http.request import Request, Response
from mimird.promql import ParseError, parse
from mimird.promql import ast as promql_ast
from mimird.promql.engine import Engine
from mimird.promql.printer import format_query
from mimird.promql.querystats import QueryStatistics
from mimird.querier import jsonfmt
from mimird.querier.params import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    ParamError,
    parse_duration,
    parse_limit,
    parse_match_params,
    parse_time,
    parse_time_or,
    to_tsdb_matchers,
    unescape_label_name,
    valid_label_name,
)
from mimird.querier.queryable import TENANT_LABEL, QueryLimitError, TenantQueryable, with_tenant_label
from mimird.tsdb.labels import go_quote

if TYPE_CHECKING:
    from mimird.app import App

MAX_POINTS_PER_SERIES = 11000
TRUNCATED_WARNING = "results truncated due to limit"

# prometheus.MetricMetadata.MetricType numbers as the metadata API names them.
METRIC_TYPE_NAMES = {0: "unknown", 1: "counter", 2: "gauge", 3: "histogram", 4: "gaugehistogram",
                     5: "summary", 6: "info", 7: "stateset"}


# A query whose last evaluation (rendering included) took at most this long runs on the event loop:
# handing it to a worker thread and back costs 0.1-0.3 ms of thread wake-ups and GIL hand-overs, a tenth or
# more of such a query. Blocking the loop this long is no worse than a worker thread does: while it runs
# Python code the worker holds the GIL, and the loop waits up to the 5 ms switch interval to get it back.
# (At 1 ms, dashboard queries near the bound flipped between inline and threaded runs with machine load.)
INLINE_MAX_SECONDS = 0.003
# Queries the inline decision remembers (least recently used forgotten first), and the longest query text it
# keeps (longer ones always run in a worker thread), which bound its memory.
INLINE_HISTORY_ENTRIES = 4096
INLINE_MAX_QUERY_CHARS = 2048
# A query ending at most this far behind now counts as "at now" for the inline decision: dashboards send
# the current time, which differs on every refresh. Older evaluation times are remembered exactly.
RECENT_QUERY_MS = 10 * 60 * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def _inline_key(tenants: Sequence[str], text: str, now_ms: int, at_ms: int, stats: str | None,
                *range_shape: int) -> Hashable | None:
    """The InlineHistory key of a query evaluated at (or, for a range query, ending at) `at_ms`: a time
    within RECENT_QUERY_MS of now counts as now; None for texts too long to remember."""
    if len(text) > INLINE_MAX_QUERY_CHARS:
        return None
    return (tuple(tenants), text, None if now_ms - at_ms <= RECENT_QUERY_MS else at_ms, stats, *range_shape)


class _Flag:
    """A one-way flag the loop raises and a worker thread reads (a threading.Event costs a lock and a
    condition per request, and nothing waits on this one)."""

    __slots__ = ("raised",)

    def __init__(self):
        self.raised = False

    def is_raised(self) -> bool:
        return self.raised


class InlineHistory:
    """How long each recent query's evaluation took, to run those known to be tiny on the event loop.

    Only a measured evaluation admits a query: its first run always goes to a worker thread. Every inline
    run is timed too, so a query whose data grew past the bound goes back to the thread next time. (Like
    the remote-write path, which appends on the event loop, an inline query may wait for the head's lock.)"""

    def __init__(self, max_seconds: float = INLINE_MAX_SECONDS, max_entries: int = INLINE_HISTORY_ENTRIES):
        self.max_seconds = max_seconds
        self.max_entries = max_entries
        self._seconds: OrderedDict[Hashable, float] = OrderedDict()
        self._lock = threading.Lock()  # worker threads record too

    def is_fast(self, key: Hashable) -> bool:
        """True if the last evaluation of `key` took at most the bound."""
        seconds = self._seconds.get(key)
        return seconds is not None and seconds <= self.max_seconds

    def record(self, key: Hashable, seconds: float) -> None:
        """Remember how long the evaluation of `key` just took."""
        with self._lock:
            self._seconds[key] = seconds
            self._seconds.move_to_end(key)
            if len(self._seconds) > self.max_entries:
                self._seconds.popitem(last=False)


def results_cache(frontend_config, registry) -> ResultsCache | MemcachedResultsCache:
    """The results cache `-query-frontend.results-cache.backend` selects: memcached, or (empty, this
    daemon's default where Mimir has none) the in-memory LRU."""
    cache_config = frontend_config.results_cache
    if cache_config.backend != "memcached":
        return ResultsCache()
    memcached = cache_config.memcached
    try:
        client = MemcachedClient(memcached.addresses, timeout_s=float(memcached.timeout),
                                 max_idle_connections=memcached.max_idle_connections,
                                 max_item_size=memcached.max_item_size,
                                 max_async_concurrency=memcached.max_async_concurrency,
                                 max_async_buffer_size=memcached.max_async_buffer_size,
                                 metrics=CacheClientMetrics(registry))
    except ValueError as exc:
        raise ConfigError(f"query-frontend results cache: {exc}") from None
    return MemcachedResultsCache(client, cache_config.compression)


def _stats_warning(stats: str | None) -> list[str]:
    if stats in (None, "", "true", "all"):
        return []
    return [f'value {go_quote(stats)} for parameter "stats" is deprecated and will be rejected in the next '
            'major release, use "true" or "all"']


def extract_selectors(expr: Any) -> list[list]:
    """The matchers of every vector selector in a parsed expression (Prometheus's ExtractSelectors)."""
    found: list[list] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_ast.VectorSelector):
            found.append(to_tsdb_matchers(node.matchers))
            return
        if dataclasses.is_dataclass(node):
            for field in dataclasses.fields(node):
                value = getattr(node, field.name)
                if isinstance(value, promql_ast.Node):
                    visit(value)
                elif isinstance(value, list | tuple):
                    for item in value:
                        if isinstance(item, promql_ast.Node):
                            visit(item)

    visit(expr)
    return found


class QuerierAPI:
    """Handlers of the read endpoints, running PromQL with `-querier.lookback-delta`, `-querier.max-samples`
    and `-querier.timeout`."""

    def __init__(self, app: App):
        self.app = app
        querier = app.config.querier
        self.timeout_s = float(querier.timeout)
        self.engine = Engine(int(querier.lookback_delta * 1000), int(querier.max_samples), self.timeout_s)
        frontend_config = app.config.frontend
        registry = getattr(app.metrics, "registry", None)
        self.inline_history = InlineHistory()
        self.splitter = RangeQuerySplitter(self.engine, int(frontend_config.split_queries_by_interval * 1000),
                                           results_cache(frontend_config, registry) if frontend_config.cache_results
                                           else None, SplitCacheMetrics(registry))

    def queryable(self, tenants: Sequence[str], mint: int = MIN_TIME_MS, maxt: int = MAX_TIME_MS) -> TenantQueryable:
        """The read view of `tenants` over [mint, maxt]."""
        return TenantQueryable(self.app, tenants, mint, maxt)

    # --- queries --------------------------------------------------------------------------------------
    @frontend
    async def query(self, request: Request) -> Response:
        """`/api/v1/query`: one expression evaluated at `time` (default now)."""
        now = _now_ms()
        try:
            at = parse_time_or(request.arg("time"), "time", now)
            text = request.arg("query", "") or ""
            self._check_query(text)
        except ParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        _, answered = QueryLimits.for_tenants(self.app.overrides, request.tenants).apply(text, at, at, now, False)
        if answered is not None:
            return answered
        engine = self.engine
        queryable = self.queryable(request.tenants)
        stats = request.arg("stats")
        inline_key = _inline_key(request.tenants, text, now, at, stats)
        return await self._run(lambda cancelled, statistics, inline: engine.instant(queryable, text, at,
                                                                                    cancelled=cancelled,
                                                                                    stats=statistics),
                               stats, inline_key)

    @frontend
    async def query_range(self, request: Request) -> Response:
        """`/api/v1/query_range`: an expression evaluated at every step from `start` to `end`."""
        try:
            start = parse_time(self._required(request, "start"), "start")
            end = parse_time(self._required(request, "end"), "end")
            if end < start:
                raise ParamError("end", "end timestamp must not be before start time")
            step = parse_duration(self._required(request, "step"), "step")
            if step <= 0:
                raise ParamError("step", "zero or negative query resolution step widths are not accepted. "
                                         "Try a positive integer")
            if (end - start) // step > MAX_POINTS_PER_SERIES:
                raise ParamError(None, "exceeded maximum resolution of 11,000 points per timeseries. "
                                       "Try decreasing the query resolution (?step=XX)")
            text = request.arg("query", "") or ""
            self._check_query(text)
        except ParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        limits = QueryLimits.for_tenants(self.app.overrides, request.tenants)
        start, answered = limits.apply(text, start, end, _now_ms(), True)
        if answered is not None:
            return answered
        start, end = limits.align(start, end, step)
        tenants = request.tenants
        settings = self._cache_settings(tenants)
        no_store = "no-store" in request.headers.get("cache-control", "")
        stats = request.arg("stats")
        # Without a results cache (whose backend may do network I/O) a tiny range query may run inline like
        # an instant one; a dashboard's range moves with now, so it is known by its length and step.
        inline_key = (None if self.splitter.cache is not None
                      else _inline_key(tenants, text, _now_ms(), end, stats, end - start, step))
        return await self._run(
            lambda cancelled, statistics, inline: self.splitter.run(
                lambda: self.queryable(tenants), "|".join(sorted(tenants)), text, start, end, step, cancelled,
                statistics, settings, no_store),
            stats, inline_key)

    def _cache_settings(self, tenants: Sequence[str]) -> CacheSettings:
        """The results cache's limits over the request's tenants, combined as Mimir combines them: the longest
        freshness and out-of-order windows, the smallest positive TTLs and max_query_parallelism; unaligned
        requests are cached only if every tenant allows it."""
        overrides = self.app.overrides
        return overrides.derived(("cache_settings", tuple(tenants)), lambda: self._combine_cache_settings(tenants))

    def _combine_cache_settings(self, tenants: Sequence[str]) -> CacheSettings:
        per_tenant = [self.app.overrides.for_tenant(tenant) for tenant in tenants]

        def smallest_positive(name: str):
            return min((limits[name] for limits in per_tenant if limits[name] > 0), default=0)

        return CacheSettings(
            max_freshness_ms=int(max(limits["max_cache_freshness"] for limits in per_tenant) * 1000),
            ttl_s=float(smallest_positive("results_cache_ttl")),
            cache_unaligned=all(limits["cache_unaligned_requests"] for limits in per_tenant),
            parallelism=smallest_positive("max_query_parallelism") or 1,
            ttl_in_ooo_window_s=float(smallest_positive("results_cache_ttl_for_out_of_order_time_window")),
            ooo_window_ms=int(max(limits["out_of_order_time_window"] for limits in per_tenant) * 1000))

    @staticmethod
    def _required(request: Request, name: str) -> str:
        value = request.arg(name)
        if not value:
            raise ParamError(None, f'missing required parameter "{name}"')
        return value

    @staticmethod
    def _check_query(text: str) -> None:
        try:
            parse(text)
        except ParseError as exc:
            raise ParamError("query", str(exc)) from None

    async def _run(self, evaluate: Callable[[Callable[[], bool], QueryStatistics | None, bool], Any],
                   stats: str | None, inline_key: Hashable | None = None) -> Response:
        """Evaluate in a worker thread and render the result or the error as Prometheus does.

        `evaluate(cancelled, statistics, inline)` runs the engine; `cancelled()` turns true when the request
        is abandoned (the engine's own deadline normally fires first; this is the backstop). A non-empty
        `stats` parameter adds Prometheus's `data.stats`, with per-step sample counts for `stats=all`.
        With an `inline_key` whose last evaluation was tiny (`InlineHistory`), the evaluation runs on the
        event loop instead, with the same result and errors, and `inline` tells it so: a query that small
        gains nothing from splitting or threads of its own."""
        abandoned = _Flag()
        timings = {}
        statistics = QueryStatistics(per_step=stats == "all") if stats else None

        def evaluate_and_render(inline: bool = False):
            # rendering a large result takes a while too: keep it off the event loop as well
            started = time.perf_counter()
            try:
                result = evaluate(abandoned.is_raised, statistics, inline)
                timings["evaluated"] = time.perf_counter() - started
                response = jsonfmt.success_value(
                    result.value, list(result.warnings) + _stats_warning(stats), list(result.infos),
                    jsonfmt.stats_json(statistics) if statistics is not None else None)
                timings["encoded"] = time.perf_counter() - started - timings["evaluated"]
                return response
            finally:
                if history is not None:
                    # failures count too: a query that fails slowly must not be run inline
                    history.record(inline_key, time.perf_counter() - started)

        history = self.inline_history if inline_key is not None else None
        try:
            if history is not None and history.is_fast(inline_key):
                response = evaluate_and_render(inline=True)
            else:
                response = await asyncio.wait_for(asyncio.to_thread(evaluate_and_render), self.timeout_s + 5)
        except TimeoutError:
            abandoned.raised = True
            return jsonfmt.error("timeout", "query timed out in expression evaluation")
        except asyncio.CancelledError:
            abandoned.raised = True
            raise
        except Exception as exc:  # the engine's QueryError subclasses carry Prometheus's errorType
            error_type = getattr(exc, "error_type", None)
            if error_type is None:
                return jsonfmt.error("internal", f"{type(exc).__name__}: {exc}")
            if error_type == "bad_data":
                # raised while preparing the query (type checks), which Prometheus reports against "query"
                return jsonfmt.error(error_type, str(ParamError("query", str(exc))))
            return jsonfmt.error(error_type, str(exc))
        stats_sink = current_stats()
        if stats_sink is not None:
            stats_sink.wall_time_s = timings["evaluated"]
            stats_sink.encode_time_s = timings["encoded"]
        return response

    # --- series and labels ----------------------------------------------------------------------------
    @staticmethod
    def _labels_series_params(request: Request) -> tuple[int, int, int]:
        """start, end and limit of a series or labels request, checked as Mimir's query-frontend decodes
        them (before the querier sees the request): the time range first, then an unsigned `limit`."""
        mint = parse_time_or(request.arg("start"), "start", MIN_TIME_MS)
        end_text = request.arg("end")
        maxt = parse_time_or(end_text, "end", MAX_TIME_MS)
        if end_text and maxt < mint:
            raise ParamError("end", "end timestamp must not be before start time")
        limit_text = request.arg("limit")
        if limit_text and not limit_text.isdecimal():
            raise ParamError(None, f"limit parameter must be greater than or equal to 0, got {limit_text}")
        return mint, maxt, parse_limit(limit_text)

    @frontend
    async def series(self, request: Request) -> Response:
        """`/api/v1/series`: label sets of the series matching any `match[]` selector. `DELETE` reaches
        Prometheus's dropSeries behind Mimir's frontend (which checks the time range and limit first) and
        is answered as it answers: 500 `internal`, "not implemented"."""
        if request.method == "DELETE":
            try:
                self._labels_series_params(request)
            except ParamError as exc:
                return jsonfmt.error("bad_data", str(exc))
            return jsonfmt.error("internal", "not implemented")
        try:
            mint, maxt, limit = self._labels_series_params(request)
            match_values = request.form.get("match[]") or []
            if not match_values:
                raise ParamError(None, "no match[] parameter provided")
            matcher_sets = parse_match_params(match_values, "match[]")
        except ParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        queryable = self.queryable(request.tenants, mint, maxt)

        def collect() -> tuple[str, list[str]]:
            if len(matcher_sets) == 1:
                series = queryable.series(matcher_sets[0], count=True)
            else:
                found = set()
                for matchers in matcher_sets:
                    found.update(queryable.series(matchers, count=True))
                series = sorted(found)
            warnings = []
            if limit and len(series) > limit:
                series = series[:limit]
                warnings.append(TRUNCATED_WARNING)
            return "[" + ",".join([jsonfmt.labels_json(s, html=False) for s in series]) + "]", warnings

        try:
            data, warnings = await asyncio.to_thread(collect)
        except QueryLimitError as exc:
            return jsonfmt.error(exc.error_type, str(exc))
        return jsonfmt.success(data, warnings, html=False)

    def _label_params(self, request: Request) -> tuple[int, int, int, list]:
        mint, maxt, limit = self._labels_series_params(request)
        try:
            matcher_sets = parse_match_params(request.form.get("match[]") or [])
        except ParamError as exc:
            raise ParamError(None, exc.message) from None
        return limit, mint, maxt, matcher_sets

    @frontend
    async def labels(self, request: Request) -> Response:
        """`/api/v1/labels`: label names, optionally of the series matching `match[]`."""
        try:
            limit, mint, maxt, matcher_sets = self._label_params(request)
        except ParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        queryable = self.queryable(request.tenants, mint, maxt)

        def collect():
            if not matcher_sets:
                return queryable.label_names()
            names = set()
            for matchers in matcher_sets:
                names.update(queryable.label_names(matchers))
            return sorted(names)

        return self._string_list(await asyncio.to_thread(collect), limit)

    @frontend
    async def label_values(self, request: Request) -> Response:
        """`/api/v1/label/{name}/values`: the values of one label."""
        name = unescape_label_name(request.params["name"])
        if not valid_label_name(name):
            return jsonfmt.error("bad_data", f"invalid label name: {jsonfmt.quote(name)}")
        try:
            limit, mint, maxt, matcher_sets = self._label_params(request)
        except ParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        queryable = self.queryable(request.tenants, mint, maxt)

        def collect():
            if not matcher_sets:
                return queryable.label_values(name)
            values = set()
            for matchers in matcher_sets:
                values.update(queryable.label_values(name, matchers))
            return sorted(values)

        return self._string_list(await asyncio.to_thread(collect), limit)

    @staticmethod
    def _string_list(values: list[str], limit: int) -> Response:
        warnings = []
        if limit and len(values) > limit:
            values = values[:limit]
            warnings.append(TRUNCATED_WARNING)
        return jsonfmt.success(jsonfmt.string_list_json(values, html=False), warnings, html=False)

    # --- metadata, exemplars, format_query ------------------------------------------------------------
    @frontend
    async def metadata(self, request: Request) -> Response:
        """`/api/v1/metadata` (Mimir's handler): metric families' type, help and unit from the heads."""
        limits = {}
        for param in ("limit", "limit_per_metric"):
            text = request.arg(param)
            limits[param] = -1
            if text:
                try:
                    limits[param] = int(text)
                except ValueError:
                    body = jsonfmt.dumps({"status": "error", "error": f"{param} must be a number"})
                    return Response(400, body, "application/json")
        limit, per_metric = limits["limit"], limits["limit_per_metric"]
        metric = request.arg("metric", "") or ""

        entries: dict[str, list[dict]] = {}
        for tenant in request.tenants:
            db = self.app.ingester.tenants.get(tenant)
            if db is None:
                continue
            for name, metas in db.head.metadata_entries():
                if metric and name != metric:
                    continue
                for meta in metas:
                    entry = {"type": METRIC_TYPE_NAMES.get(meta.type, "unknown"), "help": meta.help,
                             "unit": meta.unit}
                    if entry not in entries.setdefault(name, []):
                        entries[name].append(entry)
        out: dict[str, list[dict]] = {}
        for name in sorted(entries):
            if limit >= 0 and len(out) >= limit:
                break
            kept = entries[name] if per_metric <= 0 else entries[name][:per_metric]
            out[name] = kept
        return jsonfmt.success(jsonfmt.dumps(out))

    @frontend
    async def query_exemplars(self, request: Request) -> Response:
        """`/api/v1/query_exemplars`: exemplars of the series the query's selectors match."""
        try:
            mint = parse_time_or(request.arg("start"), "start", MIN_TIME_MS)
            maxt = parse_time_or(request.arg("end"), "end", MAX_TIME_MS)
        except ParamError as exc:
            return jsonfmt.error("bad_data", str(exc))
        if maxt < mint:
            return jsonfmt.error("bad_data", "end timestamp must not be before start timestamp")
        try:
            expr = parse(request.arg("query", "") or "")
        except ParseError as exc:
            return jsonfmt.error("bad_data", str(exc))
        selectors = extract_selectors(expr)
        if not selectors:
            return jsonfmt.success("null")
        federated = len(request.tenants) > 1
        grouped: dict[tuple, list[str]] = {}
        for tenant in sorted(request.tenants):
            db = self.app.ingester.tenants.get(tenant)
            if db is None:
                continue
            with db.head.lock:
                exemplars = list(db.head.exemplars)
            for series_labels, labels, value, ts in exemplars:
                if not mint <= ts <= maxt:
                    continue
                shown = with_tenant_label(series_labels, tenant) if federated else series_labels
                values = dict(shown)
                if not any(all(m.matches(values.get(m.name, "")) for m in matchers) for matchers in selectors):
                    continue
                grouped.setdefault(shown, []).append(
                    f'{{"labels":{jsonfmt.labels_json(labels)},"value":"{jsonfmt.format_float(value)}",'
                    f'"timestamp":{jsonfmt.format_timestamp(ts)}}}')
        items = [f'{{"seriesLabels":{jsonfmt.labels_json(series)},"exemplars":[{",".join(grouped[series])}]}}'
                 for series in sorted(grouped)]
        return jsonfmt.success("[" + ",".join(items) + "]")

    @frontend
    async def format_query(self, request: Request) -> Response:
        """`/api/v1/format_query`: the expression pretty-printed."""
        try:
            formatted = format_query(request.arg("query", "") or "")
        except ParseError as exc:
            return jsonfmt.error("bad_data", str(ParamError("query", str(exc))))
        return jsonfmt.success(jsonfmt.quote(formatted))


__all__ = ["METRIC_TYPE_NAMES", "QuerierAPI", "TENANT_LABEL", "extract_selectors"]
