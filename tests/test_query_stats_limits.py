"""Query statistics (`stats=` → `data.stats`) and the querier's per-query chunk limits through the real
daemon: data pushed with remote write, counts compared with what Prometheus's engine reports for the same
data and query."""

from __future__ import annotations

import re
import signal
import time

import pytest

from conftest import Daemon, remote_write

P = "/prometheus/api/v1"
MINUTE = 60_000
BASE = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
T0 = BASE // 1000

SERIES = {
    (("__name__", "up"), ("job", "a")): [(BASE + i * MINUTE, 1.0) for i in range(10)],
    (("__name__", "up"), ("job", "b")): [(BASE + i * MINUTE, 0.0) for i in range(10)],
}
TIMINGS = ("evalTotalTime", "resultSortTime", "queryPreparationTime", "innerEvalTime", "execQueueTime",
           "execTotalTime")


@pytest.fixture(scope="module")
def querier(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("querystats")
    proc = Daemon(workdir, []).start()
    assert remote_write(proc, "team-a", SERIES).status_code == 200
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
