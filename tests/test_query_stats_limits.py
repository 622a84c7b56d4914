"""Query statistics (`stats=` → `data.stats`) and the querier's per-query chunk limits through the real
daemon: data pushed with remote write, counts compared with what Prometheus's engine reports for the same
data and query."""

from __future__ import annotations

import re
import signal
import time

import numpy as np
import pytest
import snappy

from conftest import Daemon, remote_write
from mimird import prompb
from mimird.tsdb.block import BlockReader, write_block
from mimird.tsdb.fetchobserver import chunk_fetch_observer
from mimird.tsdb.labels import Matcher

P = "/prometheus/api/v1"
MINUTE = 60_000
TWO_HOURS = 120 * MINUTE
BASE = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
# The chunk-limit checks count one chunk per series: keep the ten minutes of samples inside one 2h block
# range, since the head cuts chunks at range boundaries.
BASE = min(BASE, (BASE // TWO_HOURS + 1) * TWO_HOURS - 10 * MINUTE)
T0 = BASE // 1000

SERIES = {
    (("__name__", "up"), ("job", "a")): [(BASE + i * MINUTE, 1.0) for i in range(10)],
    (("__name__", "up"), ("job", "b")): [(BASE + i * MINUTE, 0.0) for i in range(10)],
}
TIMINGS = ("evalTotalTime", "resultSortTime", "queryPreparationTime", "innerEvalTime", "execQueueTime",
           "execTotalTime")


RUNTIME = ("overrides:\n  chunky:\n    max_fetched_chunks_per_query: 1\n"
           "  heavy:\n    max_fetched_chunk_bytes_per_query: 1\n"
           "  roomy:\n    max_fetched_chunk_bytes_per_query: 100000\n")
CHUNKS_ERROR = (
    "the query exceeded the maximum number of chunks (limit: 1 chunks) (err-mimir-max-chunks-per-query). "
    "Consider reducing the time range and/or number of series selected by the query. One way to reduce the "
    "number of selected series is to add more label matchers to the query. Otherwise, to adjust the related "
    "per-tenant limit, configure -querier.max-fetched-chunks-per-query, or contact your service administrator.")
CHUNK_BYTES_ERROR = (
    "the query exceeded the aggregated chunks size limit (limit: 1 bytes) (err-mimir-max-chunks-bytes-per-query). "
    "Consider reducing the time range and/or number of series selected by the query. One way to reduce the "
    "number of selected series is to add more label matchers to the query. Otherwise, to adjust the related "
    "per-tenant limit, configure -querier.max-fetched-chunk-bytes-per-query, or contact your service "
    "administrator.")


def _start(workdir) -> Daemon:
    (workdir / "runtime.yaml").write_text(RUNTIME)
    proc = Daemon(workdir, ["-runtime-config.file=runtime.yaml"]).start()
    for tenant in ("team-a", "chunky", "heavy", "roomy"):
        assert remote_write(proc, tenant, SERIES).status_code == 200
    return proc


@pytest.fixture(scope="module")
def querier(tmp_path_factory):
    proc = _start(tmp_path_factory.mktemp("querystats"))
    yield proc
    proc.stop(signal.SIGKILL)


def get(daemon: Daemon, path: str, tenant: str = "team-a", **params):
    return daemon.get(P + path, params=params, headers={"X-Scope-OrgID": tenant})


def _timings_valid(stats: dict) -> None:
    assert list(stats) == ["timings", "samples"]
    assert list(stats["timings"]) == list(TIMINGS)
    assert all(value >= 0 for value in stats["timings"].values())
    assert stats["timings"]["execTotalTime"] >= stats["timings"]["evalTotalTime"]


def test_range_query_stats_all(querier):
    response = get(querier, "/query_range", query="up", start=str(T0), end=str(T0 + 180), step="60", stats="all")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert list(data) == ["resultType", "result", "stats"]
    stats = data["stats"]
    _timings_valid(stats)
    # two series with a sample every minute: two samples at each of four steps
    assert stats["samples"] == {
        "totalQueryableSamplesPerStep": [[T0, 2], [T0 + 60, 2], [T0 + 120, 2], [T0 + 180, 2]],
        "totalQueryableSamples": 8, "peakSamples": 8}
    # the per-step pairs are written as Prometheus's stepStat ([seconds, count]) in key order
    assert re.search(r'"samples":\{"totalQueryableSamplesPerStep":\[\[\d+,2\],', response.text)


def test_range_function_counts_each_window(querier):
    data = get(querier, "/query_range", query="rate(up[2m])", start=str(T0), end=str(T0 + 180), step="60",
               stats="all").json()["data"]
    # the window (t-2m, t] holds one sample per series at the first step, two afterwards
    assert data["stats"]["samples"]["totalQueryableSamplesPerStep"] == [
        [T0, 2], [T0 + 60, 4], [T0 + 120, 4], [T0 + 180, 4]]
    assert data["stats"]["samples"]["totalQueryableSamples"] == 14


def test_instant_stats_true_has_no_per_step(querier):
    data = get(querier, "/query", query='up[3m]', time=str(T0 + 300), stats="true").json()["data"]
    assert data["resultType"] == "matrix"
    _timings_valid(data["stats"])
    assert data["stats"]["samples"] == {"totalQueryableSamples": 6, "peakSamples": 6}
    subquery = get(querier, "/query", query='up[5m:1m]', time=str(T0 + 300), stats="all").json()["data"]
    assert subquery["stats"]["samples"] == {"totalQueryableSamplesPerStep": [[T0 + 300, 10]],
                                            "totalQueryableSamples": 10, "peakSamples": 10}


def test_no_stats_without_parameter(querier):
    for params in ({}, {"stats": ""}):
        body = get(querier, "/query", query="up", time=str(T0 + 60), **params).json()
        assert "stats" not in body["data"]
    scalar = get(querier, "/query", query="1", time=str(T0), stats="all").json()["data"]
    assert scalar["stats"]["samples"] == {"totalQueryableSamplesPerStep": [[T0, 0]], "totalQueryableSamples": 0,
                                          "peakSamples": 0}


def _assert_limit_error(response, message: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json() == {"status": "error", "errorType": "execution", "error": message}


def _check_chunk_limits(daemon: Daemon) -> None:
    at = str(T0 + 540)
    # each series is one chunk: one series fits the limit of one chunk, both do not
    assert get(daemon, "/query", "chunky", query='up{job="a"}', time=at).status_code == 200
    _assert_limit_error(get(daemon, "/query", "chunky", query="up", time=at), CHUNKS_ERROR)
    _assert_limit_error(get(daemon, "/query_range", "chunky", query="sum(rate(up[5m]))", start=str(T0),
                            end=at, step="60"), CHUNKS_ERROR)
    _assert_limit_error(get(daemon, "/query", "heavy", query='up{job="a"}', time=at), CHUNK_BYTES_ERROR)
    assert len(get(daemon, "/query", "roomy", query="up", time=at).json()["data"]["result"]) == 2
    # series requests read no chunks
    assert get(daemon, "/series", "chunky", **{"match[]": "up"}).status_code == 200


def test_chunk_limits_on_head_reads(querier):
    _check_chunk_limits(querier)


def test_chunk_limits_on_block_reads(tmp_path):
    proc = _start(tmp_path)
    try:
        assert proc.post("/ingester/flush?wait=true").status_code == 204
        assert list((tmp_path / "data" / "tsdb" / "chunky").glob("*/meta.json"))
        _check_chunk_limits(proc)
    finally:
        proc.stop(signal.SIGKILL)


def test_readers_report_chunks_to_the_observer(tmp_path):
    ts = np.arange(0, 300 * 15_000, 15_000, dtype=np.int64)  # 300 samples: three chunks of at most 120
    ulid = write_block(tmp_path, [((("__name__", "m"),), ts, np.ones(300))], tenant="t", source="ingester")
    seen = []
    token = chunk_fetch_observer.set(lambda chunks, size: seen.append((chunks, size)))
    try:
        with BlockReader(tmp_path / ulid) as reader:
            assert len(list(reader.read_series_samples([Matcher("=", "__name__", "m")], 0, 10 * 15_000))) == 1
            list(reader.read_series_samples([Matcher("=", "__name__", "m")]))
    finally:
        chunk_fetch_observer.reset(token)
    assert [chunks for chunks, _ in seen] == [1, 3]
    assert 0 < seen[0][1] < seen[1][1]
    with BlockReader(tmp_path / ulid) as reader:  # no observer: nothing reported
        list(reader.read_series_samples([Matcher("=", "__name__", "m")]))
    assert len(seen) == 2


def test_remote_read_answers_chunk_limit_with_400(querier):
    request = prompb.ReadRequest()
    query = request.queries.add(start_timestamp_ms=BASE, end_timestamp_ms=BASE + 10 * MINUTE)
    query.matchers.add(type=0, name="__name__", value="up")
    response = querier.post(P + "/read", content=snappy.compress(request.SerializeToString()),
                            headers={"X-Scope-OrgID": "chunky", "Content-Type": "application/x-protobuf",
                                     "Content-Encoding": "snappy"})
    assert response.status_code == 400
    assert response.text.strip() == CHUNKS_ERROR
