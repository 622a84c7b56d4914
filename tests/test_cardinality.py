"""Cardinality analysis endpoints through the daemon: disabled by default (plain-text 400 after parameter
validation), and with `-querier.cardinality-analysis-enabled` the label_names, label_values and
active_series answers, their orders, limits and error texts."""

from __future__ import annotations

import json
import signal
import time

import pytest

from conftest import Daemon, remote_write

P = "/prometheus/api/v1/cardinality"
NOW = int(time.time() * 1000)
OLD = NOW - 3600_000  # older than the 20m active-series idle timeout

SERIES = {
    (("__name__", "up"), ("job", "api"), ("instance", "1")): [(NOW - 1000, 1.0)],
    (("__name__", "up"), ("job", "api"), ("instance", "2")): [(NOW - 1000, 1.0)],
    (("__name__", "up"), ("job", "db"), ("instance", "3")): [(NOW - 1000, 1.0)],
    (("__name__", "requests"), ("job", "api")): [(NOW - 1000, 5.0)],
    (("__name__", "stale"), ("job", "old")): [(OLD, 1.0)],
}


@pytest.fixture(scope="module")
def enabled(tmp_path_factory):
    proc = Daemon(tmp_path_factory.mktemp("cardinality"), ["-querier.cardinality-analysis-enabled=true"]).start()
    assert remote_write(proc, "t1", SERIES).status_code == 200
    yield proc
    proc.stop(signal.SIGKILL)


def get(daemon, path, **params):
    return daemon.get(P + path, params=params, headers={"X-Scope-OrgID": "t1"})


def assert_bad_data(response, message):
    assert response.status_code == 400
    assert response.json() == {"status": "error", "errorType": "bad_data", "error": message}


def test_disabled_by_default(start_daemon):
    daemon = start_daemon()
    for path in ("/label_names", "/label_values?label_names[]=job", "/active_series?selector=up",
                 "/active_native_histogram_metrics?selector=up"):
        response = daemon.get(P + path, headers={"X-Scope-OrgID": "t1"})
        assert response.status_code == 400
        assert response.text == "cardinality analysis is disabled for the tenant: t1\n"
    # parameters are validated first, as the query-frontend does
    assert_bad_data(daemon.get(P + "/label_names?limit=-1", headers={"X-Scope-OrgID": "t1"}),
                    "'limit' param cannot be less than '0'")


def test_label_names(enabled):
    response = get(enabled, "/label_names")
    assert response.status_code == 200
    assert response.text == json.dumps({
        "label_values_count_total": 9, "label_names_count": 3,
        "cardinality": [{"label_name": "__name__", "label_values_count": 3},
                        {"label_name": "instance", "label_values_count": 3},
                        {"label_name": "job", "label_values_count": 3}]}, separators=(",", ":"))
    limited = get(enabled, "/label_names", selector="up", limit="1").json()
    assert limited == {"label_values_count_total": 6, "label_names_count": 3,
                       "cardinality": [{"label_name": "instance", "label_values_count": 3}]}
    active = get(enabled, "/label_names", count_method="active").json()
    assert active["label_values_count_total"] == 7  # the stale series' name and job are not counted


def test_label_values(enabled):
    response = get(enabled, "/label_values", **{"label_names[]": ["job", "instance"], "selector": '{job=~".+"}'})
    assert response.json() == {
        "series_count_total": 5,
        "labels": [
            {"label_name": "job", "label_values_count": 3, "series_count": 5,
             "cardinality": [{"label_value": "api", "series_count": 3}, {"label_value": "db", "series_count": 1},
                             {"label_value": "old", "series_count": 1}]},
            {"label_name": "instance", "label_values_count": 3, "series_count": 3,
             "cardinality": [{"label_value": "1", "series_count": 1}, {"label_value": "2", "series_count": 1},
                             {"label_value": "3", "series_count": 1}]},
        ]}
    # series_count_total is the tenant's whole series count, whatever the selector
    selected = get(enabled, "/label_values", **{"label_names[]": "instance", "selector": 'up{instance="1"}'})
    assert selected.json() == {"series_count_total": 5, "labels": [
        {"label_name": "instance", "label_values_count": 1, "series_count": 1,
         "cardinality": [{"label_value": "1", "series_count": 1}]}]}
    limited = get(enabled, "/label_values", **{"label_names[]": "job", "limit": "1", "count_method": "active"})
    assert limited.json() == {"series_count_total": 4, "labels": [
        {"label_name": "job", "label_values_count": 2, "series_count": 4,
         "cardinality": [{"label_value": "api", "series_count": 3}]}]}


def test_active_series(enabled):
    response = get(enabled, "/active_series", selector='{job=~"api|old"}')
    assert response.json() == {"data": [{"__name__": "requests", "job": "api"},
                                        {"__name__": "up", "instance": "1", "job": "api"},
                                        {"__name__": "up", "instance": "2", "job": "api"}]}


def test_active_native_histogram_metrics(enabled):
    # float samples only: no series is a native histogram
    assert get(enabled, "/active_native_histogram_metrics", selector="up").json() == {"data": []}
    assert_bad_data(get(enabled, "/active_native_histogram_metrics"), "missing 'selector' parameter")


def test_parameter_errors(enabled):
    assert_bad_data(get(enabled, "/label_names", limit="501"), "'limit' param cannot be greater than '500'")
    assert_bad_data(get(enabled, "/label_names", count_method="x"),
                    "invalid 'count_method' param 'x'. valid options are: [active,inmemory]")
    assert_bad_data(get(enabled, "/label_names", selector=["up", "up"]),
                    "multiple 'selector' params are not allowed")
    assert_bad_data(get(enabled, "/label_names", selector="up{"),
                    "failed to parse selector: 1:4: parse error: unexpected end of input inside braces")
    assert_bad_data(get(enabled, "/label_values"), "'label_names[]' param is required")
    assert_bad_data(get(enabled, "/label_values", **{"label_names[]": "a-b"}), "invalid 'label_names' param 'a-b'")
    assert_bad_data(get(enabled, "/label_values", **{"label_names[]": [f"l{i}" for i in range(101)]}),
                    "label values cardinality request label names limit (limit: 100 actual: 101) exceeded")
    assert_bad_data(get(enabled, "/active_series"), "missing 'selector' parameter")
