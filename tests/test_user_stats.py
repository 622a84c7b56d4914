"""Ingestion statistics: `/api/v1/user_stats` and `/distributor/all_user_stats` through the real daemon
(with a fast `-ingester.rate-update-period`), and the EWMA directly."""

from __future__ import annotations

import time

import pytest

from distributor_support import module_daemon, now_ms, push
from mimird.distributor.stats import EwmaRate, IngestionRates

PERIOD = 0.2


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from module_daemon(tmp_path_factory, "stats", [f"-ingester.rate-update-period={int(PERIOD * 1000)}ms"])


def series(names, samples=1):
    start = now_ms() - samples
    return [((("__name__", name),), [(start + i, 1.0) for i in range(samples)]) for name in names]


def test_user_stats_needs_a_tenant(d):
    assert d.get("/api/v1/user_stats").status_code == 401


def test_user_stats_counts_series_and_rates(d):
    response = d.get("/api/v1/user_stats", headers={"X-Scope-OrgID": "nobody"})
    assert response.text == '{"ingestionRate":0,"numSeries":0,"APIIngestionRate":0,"RuleIngestionRate":0}'
    assert response.headers["content-type"] == "application/json"
    assert push(d, "alpha", series(["a", "b", "c"], samples=40)).status_code == 200
    time.sleep(PERIOD * 1.5)  # at least one tick: the first tick takes the measured rate as it is
    stats = d.get("/api/v1/user_stats", headers={"X-Scope-OrgID": "alpha"}).json()
    assert list(stats) == ["ingestionRate", "numSeries", "APIIngestionRate", "RuleIngestionRate"]
    assert stats["numSeries"] == 3
    assert stats["APIIngestionRate"] > 0 and stats["RuleIngestionRate"] == 0
    assert stats["ingestionRate"] == stats["APIIngestionRate"]
    # rule writes (Source = RULE) count separately
    assert push(d, "alpha", series(["rule_out"], samples=20), source=1).status_code == 200
    time.sleep(PERIOD * 1.5)
    stats = d.get("/api/v1/user_stats", headers={"X-Scope-OrgID": "alpha"}).json()
    assert stats["RuleIngestionRate"] > 0 and stats["numSeries"] == 4
    assert stats["ingestionRate"] == pytest.approx(stats["APIIngestionRate"] + stats["RuleIngestionRate"])


def test_all_user_stats_json_and_html(d):
    assert push(d, "beta", series(["x"])).status_code == 200
    assert push(d, "gamma", series(["x"])).status_code == 200
    assert push(d, "alpha", series(["more"])).status_code == 200
    rows = d.get("/distributor/all_user_stats", headers={"Accept": "application/json"}).json()
    assert [row["userID"] for row in rows] == ["alpha", "beta", "gamma"]  # by series count, then ID
    assert set(rows[0]) == {"userID", "ingestionRate", "numSeries", "APIIngestionRate", "RuleIngestionRate"}
    assert rows[0]["numSeries"] == 5
    page = d.get("/distributor/all_user_stats")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in ("Ingester Stats", "replication factor", "# Series", "Total Ingest Rate", "API Ingest Rate",
                 "Rule Ingest Rate", "<td>beta</td>"):
        assert text in page.text


def test_ewma():
    rate = EwmaRate(interval=1.0)
    rate.add(10)
    rate.tick()
    assert rate.rate == 10.0  # first tick: the instant rate
    rate.tick()
    assert rate.rate == pytest.approx(8.0)  # 10 + 0.2 * (0 - 10)
    rate.add(30)
    rate.tick()
    assert rate.rate == pytest.approx(8.0 + 0.2 * (30 - 8.0))
    rates = IngestionRates(interval=2.0)
    rates.add("t", 4)
    rates.add("t", 6, from_rule=True)
    rates.tick()
    assert rates.stats("t", 7) == {"ingestionRate": 5.0, "numSeries": 7, "APIIngestionRate": 2.0,
                                   "RuleIngestionRate": 3.0}


def test_index_links_the_usage_page(d):
    index = d.get("/").text
    assert 'href="/distributor/all_user_stats"' in index
    assert 'href="/distributor/ha_tracker"' not in index  # the HA tracker is off
