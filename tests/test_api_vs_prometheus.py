"""Differential test of the non-PromQL query API against Debian's Prometheus 2.42: ``series``, ``labels``,
``label/<name>/values``, ``metadata`` and ``format_query`` asked of both with the same data must answer the
same, field by field (HTTP status, ``status``, ``errorType``, ``error``, ``data``, ``warnings``).

Data: ~280 series of five metric families (a counter, a gauge, a classic histogram, a summary, an info-style
gauge) plus ``batch`` series that exist only in the first or only in the second half of the data, one
sample per 30 s over 30 minutes ending a few minutes before now. It is pushed in time order, one remote
write request per round, to Prometheus's ``/api/v1/write`` and to our ``/api/v1/push`` (multi-tenancy off);
the first request to mimird carries the families' metadata (type, help, unit).

Where Prometheus 2.42 differs from 3.5 / Mimir by design, the test asserts the difference explicitly:

1. **Metadata source.** Prometheus's ``/api/v1/metadata`` reports the metadata of its scrape targets only;
   2.42's remote write receiver drops the metadata of write requests. A second Prometheus therefore scrapes
   a small OpenMetrics target in this process serving the same families with the same ``HELP``, ``TYPE``
   and ``UNIT``, and mimird's metadata (from remote write) is compared with that one's.
2. **Metadata errors.** Mimir answers metadata with its own handler: a bad ``limit`` is 400
   ``{"status":"error","error":"limit must be a number"}`` without ``errorType``, which Prometheus
   includes (``bad_data``).
3. **``limit_per_metric``** is a 3.x (and Mimir) parameter that 2.42 ignores; every family here has one
   metadata entry, so the answers still agree, and the parameter's effect is checked on mimird alone with
   a family that has two.
4. **``limit`` on ``series``, ``labels`` and ``label/<name>/values``** is 3.x (and Mimir): the answer is
   cut to ``limit`` entries with the warning ``results truncated due to limit``. 2.42 ignores the
   parameter, so the test asserts 2.42's full answer, and ours equals its first ``limit`` entries plus the
   warning (and is unchanged, without warning, when nothing is cut).
5. **Order of ``series``.** 2.42 answers one ``match[]`` in storage (postings) order and several sorted;
   Mimir merges and sorts. Series lists are compared as sets, and ours must be sorted.
6. **Bad ``start``/``end`` on series and labels.** Prometheus (2.42 and 3.x) says
   ``invalid parameter "start": Invalid time value for 'start': cannot parse ...`` (3.x: lower-case
   ``invalid``); Mimir's query-frontend parses the times first and answers without the inner prefix.
7. **Empty expressions.** 3.x prints the position of an error in an empty query as ``unknown position``
   where 2.42 says ``1:1`` (``format_query`` with an empty ``query``, ``series`` with an empty ``match[]``).
8. **Regular expressions** match newlines with ``.`` in 3.x: the anchored pattern in a regex error
   reads ``^(?s:...)$`` where 2.42 has ``^(?:...)$``.
9. **A 2.42 bug: the ``@`` token's description.** A selector followed by ``@`` is
   ``unexpected <op:@>`` in 3.x; 2.42 prints ``unexpected "<Item 57385>" <op:@>`` (its token table
   lacks ``@``).

``labels`` and ``label/<name>/values`` with ``match[]`` and a time range answer as Prometheus's (and Mimir's
ingester's) in-memory head does: every matching head series counts whenever the range overlaps the head, even
one without samples in the range (``test_matchers_with_a_range_take_the_whole_head``).

Skipped when ``/usr/bin/prometheus`` (``make peers``) is not installed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from conftest import PROMETHEUS, Daemon, encode_write_request, remote_write, running_prometheus

pytestmark = pytest.mark.slow

STEP_MS = 30_000
ROUNDS = 60  # 30 minutes
END_MS = (int(time.time() * 1000) // 60_000 - 4) * 60_000
START_MS = END_MS - (ROUNDS - 1) * STEP_MS
JOBS = ("api", "web")
INSTANCES = tuple(f"10.0.0.{n}:9100" for n in range(5))
METHODS = ("GET", "POST")
CODES = ("200", "404", "500")
SENSORS = ("s1", "s2", "s3", "s4")
BUCKETS = ("0.1", "0.5", "1", "5", "+Inf")
QUANTILES = ("0.5", "0.9", "0.99")
HALF = ROUNDS // 2
WRITE_HEADERS = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                 "X-Prometheus-Remote-Write-Version": "0.1.0"}
TRUNCATED = "results truncated due to limit"

# (remote write MetricType, family, help, unit) and the OpenMetrics type names of the scrape target.
METADATA = (
    (1, "api_http_requests", "Requests served, by method and code.", ""),
    (2, "api_temperature_celsius", "Sensor temperature.", "celsius"),
    (3, "api_request_duration_seconds", 'Request latency with "quotes" and a \\ backslash.', "seconds"),
    (5, "api_rpc_latency_seconds", "RPC latency summary.", "seconds"),
    (2, "api_build_info", "Build information.", ""),
)
OPENMETRICS_TYPES = {1: "counter", 2: "gauge", 3: "histogram", 5: "summary"}


def round_series(number: int) -> dict[tuple, list]:
    """The samples of one scrape round: {labels: [(ts, value)]}."""
    ts = START_MS + number * STEP_MS
    out: dict[tuple, list] = {}
    for job in JOBS:
        for index, instance in enumerate(INSTANCES):
            target = (("instance", instance), ("job", job))
            for method in METHODS:
                for code in CODES:
                    labels = (("__name__", "api_http_requests_total"), ("code", code), *target[:1],
                              ("job", job), ("method", method))
                    out[labels] = [(ts, float(number * (index + 1)))]
            for sensor in SENSORS:
                out[(("__name__", "api_temperature_celsius"), *target, ("sensor", sensor))] = [(ts, 20 + number / 4)]
            for le in BUCKETS:
                out[(("__name__", "api_request_duration_seconds_bucket"), *target, ("le", le))] = [(ts, number)]
            for suffix in ("_sum", "_count"):
                out[((("__name__", "api_request_duration_seconds" + suffix)), *target)] = [(ts, number)]
            for quantile in QUANTILES:
                out[(("__name__", "api_rpc_latency_seconds"), *target, ("quantile", quantile))] = [(ts, 0.1)]
            for suffix in ("_sum", "_count"):
                out[((("__name__", "api_rpc_latency_seconds" + suffix)), *target)] = [(ts, number)]
            version = "1.0" if index < 3 else "1.1"
            out[(("__name__", "api_build_info"), *target, ("version", version))] = [(ts, 1.0)]
    # batch series: one set in the first half only (with a label of its own), another in the second half
    for shard in range(3):
        if number < HALF:
            labels = (("__name__", "batch_last_run_seconds"), ("batch_id", f"b{shard}"), ("job", "batch"))
        else:
            labels = (("__name__", "batch_last_run_seconds"), ("job", "batch"), ("shard", f"n{shard}"))
        out[labels] = [(ts, float(ts // 1000))]
    return out


def openmetrics_text() -> str:
    """The scrape target's exposition: each family's metadata and one sample."""
    lines = []
    for mtype, family, help_text, unit in METADATA:
        lines.append(f"# TYPE {family} {OPENMETRICS_TYPES[mtype]}")
        escaped = help_text.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f"# HELP {family} {escaped}")
        if unit:
            lines.append(f"# UNIT {family} {unit}")
        if mtype == 1:
            lines.append(f"{family}_total 1")
        elif mtype == 3:
            lines += [f'{family}_bucket{{le="+Inf"}} 1', f"{family}_sum 1", f"{family}_count 1"]
        elif mtype == 5:
            lines += [f'{family}{{quantile="0.5"}} 1', f"{family}_sum 1", f"{family}_count 1"]
        else:
            lines.append(f"{family} 1")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class ScrapeTarget:
    """An OpenMetrics endpoint for the metadata Prometheus to scrape (module docstring, 1)."""

    def __init__(self):
        body = openmetrics_text().encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"condition not met after {timeout} s")
        time.sleep(0.1)


class Stores:
    """mimird's ``/prometheus`` API, the Prometheus holding the same data, the one holding the metadata."""

    def __init__(self, mimird: str, prometheus: str, metadata_prometheus: str):
        self.mimird, self.prometheus, self.metadata_prometheus = mimird, prometheus, metadata_prometheus

    def both(self, path: str, params=(), metadata: bool = False) -> tuple[httpx.Response, httpx.Response]:
        theirs = self.metadata_prometheus if metadata else self.prometheus
        return (httpx.get(self.mimird + "/prometheus" + path, params=params, timeout=20),
                httpx.get(theirs + path, params=params, timeout=20))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    if not PROMETHEUS.exists():
        pytest.skip("/usr/bin/prometheus is not installed (make peers)")
    mimird = Daemon(tmp_path_factory.mktemp("mimird"), ["-auth.multitenancy-enabled=false"]).start()
    target = ScrapeTarget()
    try:
        with contextlib.ExitStack() as peers:
            prometheus = peers.enter_context(running_prometheus(
                tmp_path_factory.mktemp("prometheus"), "global:\n  scrape_interval: 15s\n",
                "--web.enable-remote-write-receiver"))
            metadata_prometheus = peers.enter_context(running_prometheus(
                tmp_path_factory.mktemp("prometheus-metadata"),
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meta\n"
                f"    static_configs:\n      - targets: ['{target.address}']\n"))
            with httpx.Client(timeout=20) as client:
                for number in range(ROUNDS):
                    series = round_series(number)
                    response = remote_write(mimird, None, series, METADATA if number == 0 else ())
                    assert response.status_code == 200, response.text
                    response = client.post(prometheus + "/api/v1/write", content=encode_write_request(series),
                                           headers=WRITE_HEADERS)
                    assert response.status_code == 204, response.text
            wait_until(lambda: len(httpx.get(metadata_prometheus + "/api/v1/metadata").json()["data"])
                       == len(METADATA))
            yield Stores(mimird.url, prometheus, metadata_prometheus)
    finally:
        target.close()
        mimird.stop(signal.SIGKILL)


def seconds(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def rfc3339(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def at_round(number: float) -> str:
    return seconds(START_MS + round(number * STEP_MS))


def mimir_time_error(body: dict) -> dict:
    """Prometheus's error for a bad start/end as Mimir's frontend words it (module docstring, 6)."""
    error = body.get("error", "")
    for param in ("start", "end"):
        error = error.replace(f"Invalid time value for '{param}': ", "")
    return {**body, "error": error}


def assert_same(mine: httpx.Response, theirs: httpx.Response, as_set: bool = False, adjust=None) -> dict:
    """Status code and every field of the JSON bodies equal; ``as_set`` compares a list ``data`` unordered
    (and requires ours sorted); ``adjust`` maps Prometheus's body where a documented difference applies.
    Returns our body."""
    my_body, their_body = mine.json(), theirs.json()
    if adjust is not None:
        adjusted = adjust(their_body)
        assert adjusted != their_body, "the documented difference no longer shows"
        their_body = adjusted
    assert mine.status_code == theirs.status_code, (my_body, their_body)
    if as_set and my_body.get("status") == "success":
        key = lambda labels: sorted(labels.items())  # noqa: E731
        assert my_body["data"] == sorted(my_body["data"], key=key)
        my_body = {**my_body, "data": sorted(my_body["data"], key=key)}
        their_body = {**their_body, "data": sorted(their_body["data"], key=key)}
    assert my_body == their_body
    return my_body


SERIES_CASES = {
    "one metric": [("match[]", "api_http_requests_total")],
    "regex and a second selector": [("match[]", 'api_temperature_celsius{sensor=~"s[12]"}'),
                                    ("match[]", "api_build_info")],
    "overlapping selectors": [("match[]", 'api_http_requests_total{code="500"}'),
                              ("match[]", 'api_http_requests_total{method="GET",job!="web"}')],
    "name regex, negative matcher": [("match[]", '{__name__=~"api_request_duration_seconds_.*",le!="+Inf"}')],
    "empty-value matcher": [("match[]", '{__name__=~"batch_.*",shard=""}')],
    "all batch": [("match[]", '{job="batch"}')],
    "late range": [("match[]", '{job="batch"}'), ("start", at_round(HALF + 8)), ("end", at_round(HALF + 20))],
    "early range": [("match[]", '{job="batch"}'), ("start", at_round(5)), ("end", at_round(10))],
    "across the switch": [("match[]", '{job="batch"}'), ("start", at_round(HALF - 3)), ("end", at_round(HALF + 3))],
    "rfc3339 range": [("match[]", "batch_last_run_seconds"), ("start", rfc3339(START_MS + 40 * STEP_MS)),
                      ("end", rfc3339(START_MS + 45 * STEP_MS))],
    "before the data": [("match[]", "api_build_info"), ("start", at_round(-200)), ("end", at_round(-100))],
    "only start": [("match[]", '{job="batch"}'), ("start", at_round(HALF + 10))],
    "only end": [("match[]", '{job="batch"}'), ("end", at_round(HALF - 10))],
    "no such metric": [("match[]", "nonexistent_metric")],
    "no match[]": [],
    "bad selector": [("match[]", "api_build_info{")],
    "bad start": [("match[]", "api_build_info"), ("start", "yesterday")],
    "bad end": [("match[]", "api_build_info"), ("end", "2026-13-01T00:00:00Z")],
    "empty selector": [("match[]", "")],
    "matches everything": [("match[]", '{job=~".*"}')],
    "second selector bad": [("match[]", "api_build_info"), ("match[]", "api_build_info[5m]")],
    **{f"not a selector: {text}": [("match[]", text)] for text in (
        "sum(api_build_info)", "rate(x[5m])", "x offset 5m", "x @ 100", "1", "x + y", "foo bar", "x)", "x ]",
        '"str"', 'x{a="b"}[5m]', '{a="b"} x', "x{a=~'('}", "x{a=}", "x{0a='b'}")},
    "keyword as metric name": [("match[]", "sum"), ("match[]", "offset{job='api'}")],
}
TIME_ERROR_CASES = frozenset(("bad start", "bad end"))


def empty_query_position(body: dict) -> dict:
    """Module docstring, 7."""
    return {**body, "error": body["error"].replace("1:1: parse error", "unknown position: parse error")}


SERIES_ADJUSTMENTS = {
    **{case: mimir_time_error for case in TIME_ERROR_CASES},
    "empty selector": empty_query_position,
    "not a selector: x{a=~'('}": lambda body: {**body, "error": body["error"].replace("`^(?:", "`^(?s:")},
    "not a selector: x @ 100": lambda body: {**body, "error": body["error"].replace('"<Item 57385>" ', "")},
}


@pytest.mark.parametrize("case", SERIES_CASES)
def test_series(stores, case):
    body = assert_same(*stores.both("/api/v1/series", SERIES_CASES[case]), as_set=True,
                       adjust=SERIES_ADJUSTMENTS.get(case))
    if case == "one metric":
        assert len(body["data"]) == len(JOBS) * len(INSTANCES) * len(METHODS) * len(CODES)


LABELS_CASES = {
    "all": [],
    "range": [("start", at_round(HALF + 5)), ("end", at_round(HALF + 10))],
    "before the data": [("start", at_round(-200)), ("end", at_round(-100))],
    "one selector": [("match[]", '{job="batch"}')],
    "two selectors": [("match[]", "api_build_info"), ("match[]", 'api_temperature_celsius{sensor="s1"}')],
    "selector and range": [("match[]", '{job="batch"}'), ("start", at_round(HALF - 5)), ("end", at_round(HALF + 6))],
    "no such metric": [("match[]", "nonexistent_metric")],
    "bad selector": [("match[]", "sum(x)")],
    "bad end": [("end", "-")],
    "bad start": [("start", "1e400")],
}


@pytest.mark.parametrize("case", LABELS_CASES)
def test_labels(stores, case):
    adjust = mimir_time_error if case.startswith("bad ") and case != "bad selector" else None
    assert_same(*stores.both("/api/v1/labels", LABELS_CASES[case]), adjust=adjust)


def test_matchers_with_a_range_take_the_whole_head(stores):
    """The first-half batch series have no samples in the second half, yet the head counts them."""
    late = [("match[]", '{job="batch"}'), ("start", at_round(HALF + 5)), ("end", at_round(HALF + 6))]
    mine, theirs = stores.both("/api/v1/labels", late)
    assert theirs.json() == {"status": "success", "data": ["__name__", "batch_id", "job", "shard"]}
    assert_same(mine, theirs)
    assert_same(*stores.both("/api/v1/label/batch_id/values", late))
    # the series endpoint is precise in both (Prometheus selects by chunk, and the chunks end at the switch)
    assert_same(*stores.both("/api/v1/series", late), as_set=True)


LABEL_VALUES_CASES = {
    "metric names": ("__name__", []),
    "jobs": ("job", []),
    "instances": ("instance", []),
    "le": ("le", []),
    "quantile of one family": ("quantile", [("match[]", "api_rpc_latency_seconds")]),
    "version by selector": ("version", [("match[]", 'api_build_info{instance=~"10.0.0.[0-2]:9100"}')]),
    "code by two selectors": ("code", [("match[]", 'api_http_requests_total{code!="200"}'),
                                       ("match[]", 'api_temperature_celsius')]),
    "batch_id in range": ("batch_id", [("start", at_round(2)), ("end", at_round(4))]),
    "shard by selector and range": ("shard", [("match[]", '{job="batch"}'), ("start", at_round(HALF + 1)),
                                              ("end", at_round(HALF + 2))]),
    "no such label": ("nonexistent", []),
    "label of other series": ("sensor", [("match[]", "api_build_info")]),
    "invalid name": ("0day", []),
    "bad selector": ("job", [("match[]", "{}")]),
    "not a selector": ("job", [("match[]", "x[1m]")]),
}


@pytest.mark.parametrize("case", LABEL_VALUES_CASES)
def test_label_values(stores, case):
    name, params = LABEL_VALUES_CASES[case]
    assert_same(*stores.both(f"/api/v1/label/{name}/values", params))


@pytest.mark.parametrize("path, params", [
    ("/api/v1/series", [("match[]", "api_http_requests_total")]),
    ("/api/v1/labels", []),
    ("/api/v1/label/__name__/values", []),
    ("/api/v1/label/instance/values", [("match[]", "api_build_info")]),
], ids=["series", "labels", "label values", "label values with match[]"])
def test_limit_is_3x_only(stores, path, params):
    """Module docstring, 4: 2.42 ignores ``limit``; ours cuts the answer and warns."""
    limit = 3
    mine, theirs = stores.both(path, [*params, ("limit", str(limit))])
    full_mine, full_theirs = stores.both(path, params)
    assert theirs.json() == full_theirs.json()
    full = sorted(full_theirs.json()["data"], key=lambda item: sorted(item.items()) if isinstance(item, dict) else item)
    assert len(full) > limit
    assert mine.status_code == 200
    assert mine.json() == {"status": "success", "data": full[:limit], "warnings": [TRUNCATED]}
    # a limit that cuts nothing adds no warning
    mine, _ = stores.both(path, [*params, ("limit", str(len(full)))])
    assert mine.json() == {"status": "success", "data": full}
    assert full_mine.json()["data"] == full


METADATA_CASES = {
    "all": [],
    "one metric": [("metric", "api_request_duration_seconds")],
    "counter family": [("metric", "api_http_requests")],
    "no such metric": [("metric", "api_http_requests_total")],
    "limit 0": [("limit", "0")],
    "limit -1": [("limit", "-1")],
    "limit_per_metric 1": [("limit_per_metric", "1")],
    "metric and limit": [("metric", "api_temperature_celsius"), ("limit", "1")],
}


@pytest.mark.parametrize("case", METADATA_CASES)
def test_metadata(stores, case):
    body = assert_same(*stores.both("/api/v1/metadata", METADATA_CASES[case], metadata=True))
    if case == "all":
        assert body["data"] == {family: [{"type": {1: "counter", 2: "gauge", 3: "histogram", 5: "summary"}[mtype],
                                          "help": help_text, "unit": unit}]
                                for mtype, family, help_text, unit in METADATA}


def test_metadata_limit_picks_whole_families(stores):
    """With ``limit`` both answer that many families, each with its full metadata; which ones Prometheus
    picks follows its map order, ours are the first by name."""
    mine, theirs = stores.both("/api/v1/metadata", [("limit", "2")], metadata=True)
    everything = stores.both("/api/v1/metadata", [], metadata=True)[1].json()["data"]
    assert mine.status_code == theirs.status_code == 200
    for body in (mine.json(), theirs.json()):
        assert len(body["data"]) == 2
        assert all(everything[name] == entries for name, entries in body["data"].items())
    assert list(mine.json()["data"]) == sorted(everything)[:2]


def test_metadata_errors_differ_by_design(stores):
    """Module docstring, 2: Mimir's metadata handler leaves ``errorType`` out."""
    for param in ("limit", "limit_per_metric"):
        mine, theirs = stores.both("/api/v1/metadata", [(param, "x")], metadata=True)
        assert mine.status_code == 400
        assert mine.json() == {"status": "error", "error": f"{param} must be a number"}
        if param == "limit":
            assert theirs.status_code == 400
            assert theirs.json() == {"status": "error", "errorType": "bad_data", "error": "limit must be a number"}
        else:  # 2.42 does not know limit_per_metric (module docstring, 3)
            assert theirs.status_code == 200


def test_limit_per_metric_on_mimird(stores):
    """Module docstring, 3: a family with two metadata entries, cut to one by ``limit_per_metric``."""
    second = (2, "api_build_info", "Build information, second help.", "")
    assert remote_write_metadata(stores, [second]).status_code == 200
    body = httpx.get(stores.mimird + "/prometheus/api/v1/metadata", params={"metric": "api_build_info"}).json()
    assert sorted(body["data"]["api_build_info"], key=lambda entry: entry["help"]) == sorted([
        {"type": "gauge", "help": "Build information.", "unit": ""},
        {"type": "gauge", "help": second[2], "unit": ""}], key=lambda entry: entry["help"])
    body = httpx.get(stores.mimird + "/prometheus/api/v1/metadata",
                     params={"metric": "api_build_info", "limit_per_metric": "1"}).json()
    assert len(body["data"]["api_build_info"]) == 1


def remote_write_metadata(stores: Stores, metadata) -> httpx.Response:
    return httpx.post(stores.mimird + "/api/v1/push", content=encode_write_request({}, metadata),
                      headers=WRITE_HEADERS, timeout=10)


FORMAT_QUERIES = [
    "up",
    'http_requests_total{job="api",code=~"5.."}',
    "sum(rate(http_requests_total[5m])) by (job)",
    "sum without(instance)(rate(x[1m]))",
    "rate(x[5m] offset 1h)",
    "x @ 1609746000",
    "x @ start()",
    "x offset -5m",
    "max_over_time(rate(x[5m])[1h:1m])",
    "max_over_time(x[1h:])",
    "topk(3, sum by (a, b) (x))",
    "quantile(0.9, x)",
    'count_values("v", x)',
    'label_replace(up, "host", "$1", "instance", "(.*):.*")',
    "a + on(b) group_left(c) d",
    "a / ignoring(x, y) group_right b",
    "a and on() b or c unless d",
    "a > bool 1",
    "-x ^ 2",
    "(-x) ^ 2",
    "2 ^ 3 ^ 4",
    "(a + b) * c",
    "a - (b - c)",
    "a % b / c",
    "1e3 + 0x10 + Inf - NaN",
    '"a string"',
    "'single \\'quoted\\''",
    "`raw string`",
    'x{a="\\n\\t\\"",b!~"\\\\d+"}',
    '{__name__="x",a="b"}',
    "x[90s]",
    "x[1h30m]",
    "x[1d] offset 1w",
    "histogram_quantile(0.99, sum by (le) (rate(request_duration_seconds_bucket{job=\"api\"}[5m])))",
    "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / sum by (job) "
    "(rate(http_requests_total[5m])) > 0.05 and on (job) sum by (job) (up{environment=\"production\"}) > 3",
    "abs(sum(rate(node_cpu_seconds_total{mode!=\"idle\",instance=~\"node-[0-9]+.example.com:9100\"}[5m])) "
    "by (instance) - avg(node_load1) by (instance))",
    "foo{job=~\"very-long-job-name-number-one|very-long-job-name-number-two|very-long-job-name-three\"}",
    "vector(1)",
    "time()",
    "sort_desc(x)",
    "sum(",
    "x[5m",
    "foo bar",
    "rate(x)",
    "",
]


@pytest.mark.parametrize("query", FORMAT_QUERIES)
def test_format_query(stores, query):
    adjust = empty_query_position if query == "" else None
    assert_same(*stores.both("/api/v1/format_query", [("query", query)]), adjust=adjust)
