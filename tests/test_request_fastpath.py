"""The per-request fast paths of the query API: tiny instant queries evaluated on the event loop once a
measured run showed them tiny, the router's memory of resolved paths, the frontend queue's slot, the batch
statistics call and the cached request-metric children. Each must answer exactly as the slow path does."""

from __future__ import annotations

import asyncio
import threading
import time
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import held_slot, remote_write
from mimird.frontend.queue import TOO_MANY_OUTSTANDING, QueryQueue
from mimird.frontend.stats import QueryStats
from mimird.http.errors import HTTPError
from mimird.http.request import parse_query
from mimird.http.router import Router
from mimird.promql.value import ExecutionError, QueryResult, Sample, Vector
from mimird.querier.api import InlineHistory, QuerierAPI
from mimird.util.metrics import Metrics

P = "/prometheus/api/v1"
MINUTE = 60_000


# --- InlineHistory and QuerierAPI._run -------------------------------------------------------------------
def test_inline_history_admits_only_measured_fast_queries():
    history = InlineHistory(max_seconds=0.001, max_entries=2)
    assert not history.is_fast("q")
    history.record("q", 0.0004)
    assert history.is_fast("q")
    history.record("q", 0.004)  # the data grew: back to the worker thread
    assert not history.is_fast("q")
    history.record("a", 0.0001)
    history.record("b", 0.0001)
    history.record("c", 0.0001)  # over max_entries: the least recently recorded goes
    assert not history.is_fast("q") and not history.is_fast("a")
    assert history.is_fast("b") and history.is_fast("c")


def _api() -> QuerierAPI:
    api = QuerierAPI.__new__(QuerierAPI)
    api.timeout_s = 5.0
    api.inline_history = InlineHistory()
    return api


def _vector() -> Vector:
    return Vector([Sample((("__name__", "up"), ("job", "a")), 1_000, 1.5)])


def test_run_goes_inline_after_a_fast_measured_run_with_the_same_bytes():
    api = _api()
    threads = []
    inline_flags = []

    def evaluate(cancelled, statistics, inline):
        threads.append(threading.current_thread())
        inline_flags.append(inline)
        return QueryResult(_vector(), ["PromQL warning: w"], [])

    async def scenario():
        return [await api._run(evaluate, None, ("t", "up", None, None)) for _ in range(3)]

    responses = asyncio.run(scenario())
    main = threading.main_thread()
    assert threads[0] is not main  # first run: unmeasured, so in a worker thread
    assert threads[1] is main and threads[2] is main
    assert inline_flags == [False, True, True]  # what the evaluation is told, to run its split pieces in turn
    assert len({(r.status, r.body, tuple(r.headers)) for r in responses}) == 1
    assert responses[0].body == (b'{"status":"success","data":{"resultType":"vector","result":[{"metric":'
                                 b'{"__name__":"up","job":"a"},"value":[1,"1.5"]}]},"warnings":["PromQL warning: w"]}')


def test_run_without_key_or_when_slow_stays_in_worker_thread():
    api = _api()
    threads = []

    def evaluate(cancelled, statistics, inline):
        threads.append(threading.current_thread())
        return QueryResult(_vector())

    def slow(cancelled, statistics, inline):
        threads.append(threading.current_thread())
        time.sleep(0.003)
        return QueryResult(_vector())

    async def scenario():
        await api._run(evaluate, None)
        await api._run(evaluate, None)
        for _ in range(3):
            await api._run(slow, None, "slow")

    asyncio.run(scenario())
    assert all(thread is not threading.main_thread() for thread in threads)


def test_inline_errors_are_answered_as_in_the_thread():
    api = _api()
    calls = []

    def evaluate(cancelled, statistics, inline):
        calls.append(threading.current_thread())
        if len(calls) > 1:
            raise ExecutionError("boom")
        return QueryResult(_vector())

    async def scenario():
        return [await api._run(evaluate, None, "k") for _ in range(3)]

    first, inline_error, again = asyncio.run(scenario())
    assert calls[1] is threading.main_thread()
    assert first.status == 200
    assert inline_error.status == again.status == 422
    assert inline_error.body == again.body == b'{"status":"error","errorType":"execution","error":"boom"}'


def test_slow_failure_sends_the_query_back_to_the_thread():
    api = _api()
    calls = []

    def evaluate(cancelled, statistics, inline):
        calls.append(threading.current_thread())
        if len(calls) == 2:
            time.sleep(0.003)
            raise ExecutionError("slow failure")
        return QueryResult(_vector())

    async def scenario():
        for _ in range(3):
            await api._run(evaluate, None, "k")

    asyncio.run(scenario())
    assert calls[1] is threading.main_thread()
    assert calls[2] is not threading.main_thread()


# --- router, queue, statistics, metrics ------------------------------------------------------------------
async def _handler(request):
    return None


def test_router_memory_returns_fresh_params_and_forgets_on_add():
    router = Router()
    router.add("GET", "/api/v1/label/{name}/values", _handler)
    route, params = router.resolve("GET", "/api/v1/label/a%2Fb/values")
    assert params == {"name": "a/b"}
    params["name"] = "changed"
    again, params2 = router.resolve("GET", "/api/v1/label/a%2Fb/values")
    assert again is route and params2 == {"name": "a/b"}
    with pytest.raises(HTTPError) as missing:
        router.resolve("GET", "/nope")
    assert missing.value.status == 404
    with pytest.raises(HTTPError) as wrong_method:
        router.resolve("DELETE", "/api/v1/label/a/values")
    assert wrong_method.value.status == 405
    head, _ = router.resolve("HEAD", "/api/v1/label/x/values")
    assert head is route
    other = router.add("HEAD", "/api/v1/label/{name}/values", _handler)
    assert router.resolve("HEAD", "/api/v1/label/x/values")[0] is other


def test_queue_slot_waits_and_refuses_as_before():
    async def scenario():
        queue = QueryQueue(1, 1)
        async with held_slot(queue, "t") as waited:
            assert 0 <= waited < 0.1
            blocked = asyncio.ensure_future(_hold(queue, "t"))
            await asyncio.sleep(0.01)
            with pytest.raises(HTTPError) as refused:
                async with held_slot(queue, "t"):
                    pass
            assert refused.value.status == 429 and refused.value.message == TOO_MANY_OUTSTANDING
            assert queue.waiting == {"t": 1}
        waited_blocked = await blocked
        assert waited_blocked >= 0.005
        assert queue.waiting == {} and queue.free == 1 and not queue.waiters

    asyncio.run(scenario())


def test_queue_slot_cancelled_waiters_lose_nothing():
    async def scenario():
        queue = QueryQueue(1, 10)
        async with held_slot(queue, "t"):
            first = asyncio.ensure_future(_hold(queue, "t"))
            second = asyncio.ensure_future(_hold(queue, "t"))
            await asyncio.sleep(0.01)
            first.cancel()  # cancelled while waiting: leaves the line
            await asyncio.sleep(0)
            assert len(queue.waiters) == 1
        # the slot went to the second waiter, which has finished with it by now
        assert await second >= 0
        assert queue.free == 1 and not queue.waiters
        async with held_slot(queue, "t"):
            third = asyncio.ensure_future(_hold(queue, "t"))
            await asyncio.sleep(0.01)
        third.cancel()  # handed the slot in the same turn as its cancellation: it passes the slot on
        with pytest.raises(asyncio.CancelledError):
            await third
        assert queue.free == 1 and not queue.waiters and queue.waiting == {}

    asyncio.run(scenario())


async def _hold(queue: QueryQueue, tenant: str) -> float:
    async with held_slot(queue, tenant) as waited:
        return waited


def test_add_series_batch_counts_as_per_series_calls():
    one_by_one, batched = QueryStats(), QueryStats()
    for samples in (3, 0, 7):
        one_by_one.add_series(samples)
    batched.add_series_batch(3, 10)
    assert (one_by_one.series, one_by_one.samples, one_by_one.bytes) == (batched.series, batched.samples,
                                                                           batched.bytes) == (3, 10, 160)


def test_request_metrics_children_accumulate():
    metrics = Metrics()
    for status in (200, 200, 404):
        metrics.observe_request("GET", "api_v1_query", status, 0.002)
    get = metrics.registry.get_sample_value
    assert get("cortex_http_requests_total", {"method": "GET", "route": "api_v1_query", "status_code": "200"}) == 2
    assert get("cortex_request_duration_seconds_count",
               {"method": "GET", "route": "api_v1_query", "status_code": "404", "ws": "false"}) == 1


# --- through the daemon ----------------------------------------------------------------------------------
def test_repeated_small_queries_answer_identically(daemon):
    now = int(time.time() * 1000) // MINUTE * MINUTE
    series = {(("__name__", "fastpath_up"), ("job", job)): [(now - i * MINUTE, float(i)) for i in range(10, -1, -1)]
              for job in ("a", "b", "c")}
    assert remote_write(daemon, "fastpath", series).status_code == 200
    headers = {"X-Scope-OrgID": "fastpath"}
    cases = [{"query": "sum by (job) (fastpath_up)", "time": str(now / 1000)},
             {"query": "max_over_time(fastpath_up[10m])", "time": str(now / 1000)},
             {"query": "count(fastpath_up)"},  # no time: now, which changes between the requests
             {"query": "fastpath_up[5m]", "time": str(now / 1000)},
             {"query": 'label_replace(fastpath_up, "x", "$1", "job", "(")', "time": str(now / 1000)}]
    for params in cases:
        answers = [daemon.get(f"{P}/query", params=params, headers=headers) for _ in range(4)]
        first = answers[0]
        if "time" in params:
            assert {(a.status_code, a.content) for a in answers} == {(first.status_code, first.content)}, params
        else:
            assert {a.status_code for a in answers} == {200}
            assert {a.json()["data"]["result"][0]["value"][1] for a in answers} == {"3"}
        assert all(a.headers["content-type"] == "application/json" for a in answers)
        assert all(a.headers["server-timing"].startswith("querier_wall_time;dur=") for a in answers)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(["&", "=", "+", "%", "%2", "%41", "%e2%82%ac", "%ff", "a", "b", "é", " ", ";", "%3D",
                                 "%26", "query", "match[]"]), max_size=24).map("".join))
def test_parse_query_is_parse_qs(text):
    assert parse_query(text) == parse_qs(text, keep_blank_values=True)


class _Limits:
    def __init__(self, values):
        self.values = values

    def get(self, tenant, name):
        return self.values[name]

    def derived(self, key, compute):
        return compute()


@pytest.mark.parametrize("lookback,retention,size,length,align", [
    (0, 0, 0, 0, False), (3600.0, 0, 10, 0, True), (0, 7200.0, -1, 60.0, False), (60.0, 30.0, 5, 2.5, True),
    (-1, 5.0, 0, -1, False)])
def test_single_tenant_limits_equal_the_general_path(lookback, retention, size, length, align):
    from mimird.frontend.limits import QueryLimits

    overrides = _Limits({"max_query_lookback": lookback, "compactor_blocks_retention_period": retention,
                         "max_query_expression_size_bytes": size, "max_total_query_length": length,
                         "align_queries_with_step": align})
    assert QueryLimits.for_tenants(overrides, ["a"]) == QueryLimits.for_tenants(overrides, ["a", "a"])


def test_derived_limits_are_remembered_until_the_runtime_overrides_reload(tmp_path):
    from mimird.config.runtime import Overrides, RuntimeConfig
    from mimird.config.schema import load_config
    from mimird.frontend.limits import QueryLimits

    runtime_file = tmp_path / "runtime.yaml"
    runtime_file.write_text("overrides:\n  a:\n    max_query_expression_size_bytes: 10\n")
    config, _ = load_config([f"-runtime-config.file={runtime_file}"])
    runtime = RuntimeConfig([str(runtime_file)], 10.0)
    assert runtime.load()
    overrides = Overrides(config, runtime)
    first = QueryLimits.for_tenants(overrides, ["a"])
    assert first.max_expression_bytes == 10 and QueryLimits.for_tenants(overrides, ["a"]) is first
    assert QueryLimits.for_tenants(overrides, ["b"]).max_expression_bytes == 0
    runtime_file.write_text("overrides:\n  a:\n    max_query_expression_size_bytes: 20\n")
    assert runtime.load()
    assert QueryLimits.for_tenants(overrides, ["a"]).max_expression_bytes == 20
    calls = []
    for _ in range(3):
        overrides.derived("k", lambda: calls.append(1) or len(calls))
    assert calls == [1]


def test_repeated_small_range_queries_answer_identically(daemon):
    now = int(time.time() * 1000) // MINUTE * MINUTE
    series = {(("__name__", "fastpath_range"), ("job", job)): [(now - i * MINUTE, float(i)) for i in range(30, -1, -1)]
              for job in ("a", "b")}
    assert remote_write(daemon, "fastpath-range", series).status_code == 200
    headers = {"X-Scope-OrgID": "fastpath-range"}
    span = {"start": str((now - 20 * MINUTE) / 1000), "end": str(now / 1000), "step": "60"}
    cases = [{"query": "sum by (job) (rate(fastpath_range[5m]))", **span},
             {"query": "max_over_time(fastpath_range[10m])", **span},
             {"query": "avg_over_time(sum(fastpath_range)[10m:2m])", **span},
             {"query": "fastpath_range / on(job) group_left fastpath_range", **span},
             {"query": "vector(1)", **span, "stats": "all"}]
    for params in cases:
        # the first run is measured in a worker thread, the later ones run inline
        answers = [daemon.get(f"{P}/query_range", params=params, headers=headers) for _ in range(4)]
        if "stats" in params:  # the statistics carry timings, which differ from run to run
            bodies = [a.json() for a in answers]
            for body in bodies:
                del body["data"]["stats"]["timings"]
            assert all(a.status_code == 200 for a in answers) and all(b == bodies[0] for b in bodies)
        else:
            assert {(a.status_code, a.content) for a in answers} == {(200, answers[0].content)}, params
        assert answers[0].json()["data"]["resultType"] == "matrix"
    # a query whose inline run fails answers as the threaded run did
    bad = {"query": "fastpath_range / on() fastpath_range", **span}
    errors = [daemon.get(f"{P}/query_range", params=bad, headers=headers) for _ in range(3)]
    assert {(e.status_code, e.content) for e in errors} == {(422, errors[0].content)}
