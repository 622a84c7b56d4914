"""The query-frontend's split by interval and results cache through the real daemon: responses compared
byte for byte with an unsplit, uncached daemon holding the same data, and the cache's extents, freshness
window and `Cache-Control: no-store` observed through data written after a response was cached."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
import urllib.parse
from dataclasses import replace

import numpy as np
import pytest

from conftest import Daemon, remote_write
from mimird.app import App
from mimird.config.schema import load_config
from mimird.frontend.splitcache import (
    CacheSettings,
    Extent,
    RangeQuerySplitter,
    ResultsCache,
    modifiers_uncacheable,
    next_interval_boundary,
    pin_at_modifiers,
    split_by_interval,
)
from mimird.http.request import Request
from mimird.promql import parse
from mimird.promql.printer import to_string
from mimird.promql.value import (
    ExecutionError,
    Matrix,
    QueryCanceledError,
    QueryResult,
    Series,
    TooManySamplesError,
)
from mimird.querier.queryable import QueryLimitError

P = "/prometheus/api/v1"
MINUTE = 60_000
HOUR = 60 * MINUTE
NOW_MS = int(time.time() * 1000)
BASE = (NOW_MS // MINUTE - 40) * MINUTE
T0 = BASE // 1000
END = NOW_MS // MINUTE * 60  # step-aligned (seconds)

SERIES = {
    (("__name__", "requests_total"), ("job", "a"), ("code", "200")): [
        (BASE + i * 30_000, 3.0 * i) for i in range(70)],
    (("__name__", "requests_total"), ("job", "b"), ("code", "500")): [
        (BASE + i * 45_000, float(i * i)) for i in range(40) if i % 7],
    (("__name__", "temperature"), ("room", "x")): [(BASE + i * 20_000, 20 + (i % 11) / 4) for i in range(100)],
}
QUERIES = [
    "requests_total",
    "rate(requests_total[3m])",
    "sum by (job) (increase(requests_total[5m]))",
    "max_over_time(temperature[4m:30s])",
    "temperature offset 3m",
    "temperature offset -2m",
    "temperature @ start()",
    "rate(requests_total[10m] @ end())",
    "timestamp(temperature)",
    "requests_total > 40",
    "avg_over_time(temperature[90s]) - temperature",
]


def test_split_pieces_follow_mimirs_boundaries():
    assert split_by_interval(0, 3 * 24 * HOUR, HOUR, 24 * HOUR) == [
        (0, 23 * HOUR), (24 * HOUR, 47 * HOUR), (48 * HOUR, 71 * HOUR), (72 * HOUR, 72 * HOUR)]
    # an unaligned start keeps its own grid: pieces end on the last step before each boundary
    assert split_by_interval(30 * MINUTE, 50 * HOUR, HOUR, 24 * HOUR) == [
        (30 * MINUTE, 23 * HOUR + 30 * MINUTE), (24 * HOUR + 30 * MINUTE, 47 * HOUR + 30 * MINUTE),
        (48 * HOUR + 30 * MINUTE, 50 * HOUR)]
    assert next_interval_boundary(10, 7, 100) == 94
    assert split_by_interval(5, 5, 1000, HOUR) == [(5, 5)]
    assert to_string(pin_at_modifiers(parse("rate(a[1m] @ start()) + b @ end()"), 1000, 5000)) == \
        "rate(a[1m] @ 1.000) + b @ 5.000"


def test_modifier_rules_follow_mimirs():
    def uncacheable(query: str, piece_end: int, max_cache: int = 10_000) -> bool:
        return modifiers_uncacheable(pin_at_modifiers(parse(query), 1000, 5000), piece_end, max_cache)

    assert not uncacheable("rate(a[1m] offset 5m)", 5000)
    assert uncacheable("a offset -1m", 5000)  # reads data newer than its steps
    assert uncacheable("max_over_time(a[5m:1m] offset -1m)", 5000)
    assert not uncacheable("a @ start()", 2000)
    assert uncacheable("a @ end()", 4000)  # after this piece's end
    assert not uncacheable("a @ end()", 5000)
    assert uncacheable("a @ 9", 20_000, max_cache=8000)  # inside the freshness window


def test_results_cache_is_bounded_and_expires():
    cache = ResultsCache(max_entries=2, max_samples=10)
    extent = Extent(0, 10, {(("a", "b"),): (np.arange(3), np.ones(3))})
    cache.put("k1", [extent], expires_s=100)
    cache.put("k2", [extent], expires_s=100)
    assert cache.get("k1", now_s=50)  # k1 becomes the most recently used
    cache.put("k3", [extent], expires_s=100)
    assert len(cache) == 2 and cache.get("k2", now_s=50) == [] and cache.get("k1", now_s=50)
    cache.put("k4", [extent, extent, extent, extent], expires_s=100)  # 12 samples: over the bound, not kept
    assert cache.get("k4", now_s=50) == []
    assert cache.get("k1", now_s=100) == []  # expired
    assert CacheSettings(0, 1.0, False).ttl_s == 1.0


def test_pieces_run_in_parallel_up_to_max_query_parallelism():
    class CountingEngine:
        def __init__(self):
            self.lock = threading.Lock()
            self.running = self.peak = 0

        def range(self, queryable, expr, start, end, step, cancelled=None):
            with self.lock:
                self.running += 1
                self.peak = max(self.peak, self.running)
            time.sleep(0.2)  # long enough for every worker thread to have started its piece
            with self.lock:
                self.running -= 1
            series = Series((("p", str(start)),), np.array([start], dtype=np.int64), np.array([1.0]))
            return QueryResult(Matrix([series]), [], [])

    for parallelism, peak in ((1, 1), (3, 3), (14, 6)):
        engine = CountingEngine()
        splitter = RangeQuerySplitter(engine, HOUR, None)
        result = splitter.run(lambda: None, "t", "up", 0, 6 * HOUR - MINUTE, MINUTE, None, None,
                              CacheSettings(0, 1.0, False, parallelism), False, whole=False)
        assert engine.peak == peak and splitter.split_queries == 6
        assert [series.labels for series in result.value] == sorted((("p", str(h * HOUR)),) for h in range(6))


def test_a_failing_piece_fails_the_query_with_its_own_error():
    class FailingEngine:
        def range(self, queryable, expr, start, end, step, cancelled=None):
            if start == 3 * HOUR:
                raise ExecutionError("piece failed")
            time.sleep(0.05)
            if cancelled is not None and cancelled():
                raise QueryCanceledError()
            return QueryResult(Matrix([]), [], [])

    splitter = RangeQuerySplitter(FailingEngine(), HOUR, None)
    for parallelism in (1, 2, 6):
        with pytest.raises(ExecutionError, match="piece failed"):
            splitter.run(lambda: None, "t", "up", 0, 6 * HOUR - MINUTE, MINUTE, None, None,
                         CacheSettings(0, 1.0, False, parallelism), False, whole=False)


def test_uncached_query_is_evaluated_whole_when_asked():
    calls = []

    class RecordingEngine:
        def range(self, queryable, expr, start, end, step, cancelled=None):
            calls.append((expr, start, end))
            return QueryResult(Matrix([]), [], [])

    splitter = RangeQuerySplitter(RecordingEngine(), HOUR, None)
    splitter.run(lambda: None, "t", "up", 0, 6 * HOUR - MINUTE, MINUTE, None, None,
                 CacheSettings(0, 1.0, False, 14), False, whole=True)
    assert calls == [("up", 0, 6 * HOUR - MINUTE)]
    # a whole evaluation over a per-query limit is redone in pieces, each held to the limit on its own
    for error in (QueryLimitError("over"), TooManySamplesError()):
        class LimitedEngine:
            def range(self, queryable, expr, start, end, step, cancelled=None, error=error):
                calls.append((expr, start, end))
                if end - start > HOUR:
                    raise error
                return QueryResult(Matrix([]), [], [])

        calls.clear()
        RangeQuerySplitter(LimitedEngine(), HOUR, None).run(
            lambda: None, "t", "up", 0, 6 * HOUR - MINUTE, MINUTE, None, None, CacheSettings(0, 1.0, False, 1),
            False, whole=True)
        assert len(calls) == 7 and calls[0] == ("up", 0, 6 * HOUR - MINUTE)
    # with the results cache, the pieces are still what is cached
    splitter = RangeQuerySplitter(RecordingEngine(), HOUR, ResultsCache())
    calls.clear()
    splitter.run(lambda: None, "t", "up", 0, 6 * HOUR - MINUTE, MINUTE, None, None,
                 CacheSettings(0, 1.0, False, 14), False, whole=True, now_ms=100 * HOUR)
    assert len(calls) == 6


def test_extents_expire_by_their_evaluation_time_sooner_in_the_ooo_window():
    class GridEngine:
        def __init__(self):
            self.calls = []

        def range(self, queryable, expr, start, end, step, cancelled=None):
            self.calls.append((start, end))
            ts = np.arange(start, end + 1, step, dtype=np.int64)
            return QueryResult(Matrix([Series((("a", "b"),), ts, np.ones(len(ts)))]), [], [])

    engine = GridEngine()
    splitter = RangeQuerySplitter(engine, 0, ResultsCache())
    now = 10 * HOUR
    ooo = CacheSettings(0, 7 * 86400.0, False, 1, ttl_in_ooo_window_s=600.0, ooo_window_ms=9 * HOUR)

    def run(end, at, settings=ooo):
        return splitter.run(lambda: None, "t", "up", 0, end, MINUTE, None, None, settings, False, now_ms=at)

    run(HOUR, now)
    run(2 * HOUR, now + 8 * MINUTE)  # the first hour from the cache, the second evaluated
    assert engine.calls == [(0, HOUR), (HOUR + MINUTE, 2 * HOUR)]
    # the merged extent keeps the first evaluation's time: 11 minutes on it is past the 10m TTL of
    # extents inside the out-of-order window, though the entry itself was stored 3 minutes ago
    result = run(2 * HOUR, now + 11 * MINUTE)
    assert engine.calls[2:] == [(0, 2 * HOUR)] and len(result.value[0].ts) == 121
    # outside the out-of-order window the results cache TTL (7d) applies
    run(2 * HOUR, now + 15 * MINUTE, replace(ooo, ooo_window_ms=0))
    assert len(engine.calls) == 3


@pytest.fixture(scope="module")
def daemons(tmp_path_factory):
    plain = Daemon(tmp_path_factory.mktemp("plain"), ["-query-frontend.split-queries-by-interval=0"]).start()
    split = Daemon(tmp_path_factory.mktemp("split"), [
        "-query-frontend.split-queries-by-interval=7m", "-query-frontend.cache-results=true",
        "-query-frontend.max-cache-freshness=5m"]).start()
    for proc in (plain, split):
        assert remote_write(proc, "t", SERIES).status_code == 200
    yield plain, split
    for proc in (plain, split):
        proc.stop(signal.SIGKILL)


def query_range(daemon: Daemon, query: str, start, end, step, tenant: str = "t", no_store: bool = False):
    headers = {"X-Scope-OrgID": tenant}
    if no_store:
        headers["Cache-Control"] = "no-store"
    response = daemon.get(P + "/query_range", params={"query": query, "start": str(start), "end": str(end),
                                                      "step": str(step)}, headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def test_split_and_cached_answers_equal_unsplit_ones(daemons):
    plain, split = daemons
    ranges = [(T0, END, 60), (T0 - 600, END - 60, 30), (T0 + 7, END, 45)]
    for query in QUERIES:
        for start, end, step in ranges:
            expected = query_range(plain, query, start, end, step)
            if (start, end, step) == ranges[0]:
                assert '"result":[]' not in expected
            for _ in range(2):  # the second answer comes from the cache where it may
                assert query_range(split, query, start, end, step) == expected, (query, start, end, step)
            assert query_range(split, query, start, end, step, no_store=True) == expected


def test_cache_serves_old_extents_and_recomputes_the_fresh_part(daemons):
    _, split = daemons
    end = int(time.time()) // 60 * 60  # now, step-aligned: this test's last step must lie in the fresh part
    first = end - 40 * 60
    old = {(("__name__", "load"), ("host", "h1")): [(first * 1000 + i * MINUTE, 1.0) for i in range(41)]}
    assert remote_write(split, "c", old).status_code == 200
    before = query_range(split, "count(load)", first, end, 60, tenant="c")
    # a second series written afterwards, both long ago (inside the cached extents) and just now
    late = {(("__name__", "load"), ("host", "h2")): [((first + 600) * 1000, 1.0), (end * 1000 - 30_000, 1.0)]}
    assert remote_write(split, "c", late).status_code == 200
    after = query_range(split, "count(load)", first, end, 60, tenant="c")
    bypass = query_range(split, "count(load)", first, end, 60, tenant="c", no_store=True)
    point = f'[{first + 600},"'
    assert point + '1"]' in before and point + '1"]' in after  # cached: the late old sample is not seen
    assert point + '2"]' in bypass  # Cache-Control: no-store evaluates everything
    assert f'[{end},"1"]' in before and f'[{end},"2"]' in after  # the last 5 minutes are never cached


def test_server_timing_reports_split_queries_and_cache_bytes(daemons):
    _, split = daemons
    headers = {"X-Scope-OrgID": "t", "X-Mimir-Response-Query-Stats": "true"}
    params = {"query": "sum(temperature)", "start": str(T0), "end": str(T0 + 1200), "step": "60"}

    def timing() -> dict[str, str]:
        response = split.get(P + "/query_range", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return dict(part.split(";", 1) for part in response.headers["server-timing"].split(", "))

    first, second = timing(), timing()
    params["query"] = "sum ( temperature )"  # another spelling of the same expression: the same cache entries
    respelled = timing()
    assert respelled["results_cache_hit_bytes"] == "val=336" and respelled["results_cache_miss_bytes"] == "val=0"
    # 20 minutes at a 7m interval: pieces at the boundaries of 7-minute multiples (3 or 4 of them)
    assert first["split_queries"] in ("val=3", "val=4") and first["split_queries"] == second["split_queries"]
    assert first["results_cache_hit_bytes"] == "val=0" and first["results_cache_miss_bytes"] == "val=336"
    assert second["results_cache_hit_bytes"] == "val=336" and second["results_cache_miss_bytes"] == "val=0"
    assert second["fetched_chunks_count"] == "val=0" and first["fetched_chunks_count"] != "val=0"


def test_query_api_evaluates_an_uncached_range_whole(tmp_path, monkeypatch):
    """Through the query API, with no results cache, a range over two UTC days is evaluated in one piece:
    no piece evaluations, and every step answered."""
    piece_runs = []
    evaluate_all = RangeQuerySplitter._evaluate_all

    def recording(self, *args, **kwargs):
        piece_runs.append(args)
        return evaluate_all(self, *args, **kwargs)

    monkeypatch.setattr(RangeQuerySplitter, "_evaluate_all", recording)

    async def scenario():
        config, _ = load_config([f"-blocks-storage.tsdb.dir={tmp_path}/tsdb",
                                 f"-blocks-storage.filesystem.dir={tmp_path}/bucket",
                                 "-auth.multitenancy-enabled=false", "-server.http-listen-port=0",
                                 "-log.level=warn"])
        app = App(config)
        await app.start()
        try:
            params = urllib.parse.urlencode({"query": "vector(1)", "start": 86400 * 20000 - 7200,
                                             "end": 86400 * 20000 + 7200, "step": 600})
            return await app.http.dispatch(Request("GET", "/prometheus/api/v1/query_range", params,
                                                   {"host": "x"}, b""))
        finally:
            await app.stop()

    response = asyncio.run(scenario())
    assert response.status == 200
    assert len(json.loads(response.body)["data"]["result"][0]["values"]) == 25
    assert piece_runs == []
