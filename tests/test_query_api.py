"""The querier's Prometheus API through the real daemon: data pushed with remote write, then every endpoint
compared with what Prometheus (behind Mimir) answers, byte for byte where the JSON is deterministic."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import time

import numpy as np
import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Daemon, held_slot, remote_write
from mimird import prompb
from mimird.frontend.queue import QueryQueue
from mimird.http.errors import HTTPError
from mimird.querier import jsonfmt
from mimird.querier.params import (
    MAX_TIME_FORMATTED,
    MAX_TIME_MS,
    ParamError,
    _float_seconds_ms,
    parse_duration,
    parse_limit,
    parse_match_params,
    parse_time,
    unescape_label_name,
)
from mimird.querier.queryable import merge_sorted_series, with_tenant_label
from mimird.util.durations import go_duration_ms as go_duration

P = "/prometheus/api/v1"
MINUTE = 60_000
# Recent data: the querier only asks ingesters about ranges ending within -querier.query-ingesters-within.
BASE = (int(time.time() * 1000) // MINUTE - 30) * MINUTE
# Ten minutes of samples per series, kept inside one 2h block range so each series is one head chunk.
BASE = min(BASE, (BASE // (120 * MINUTE) + 1) * 120 * MINUTE - 10 * MINUTE)
T0 = BASE // 1000


# --- formatting and parameter parsing (no daemon) -------------------------------------------------------

@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0"), (-0.0, "-0"), (1.0, "1"), (1.5, "1.5"), (100.0, "100"), (0.1 + 0.2, "0.30000000000000004"),
    (1e-5, "0.00001"), (1e-6, "0.000001"), (9e-7, "9e-07"), (1.5e-7, "1.5e-07"), (1e20, "100000000000000000000"),
    (1e21, "1e+21"), (-2.5e22, "-2.5e+22"), (2.0**53, "9007199254740992"), (123456789.123, "123456789.123"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_format_float_matches_prometheus(value, text):
    assert jsonfmt.format_float(value) == text


def test_format_timestamp_keeps_three_decimals():
    assert [jsonfmt.format_timestamp(t) for t in (0, 1000, 1500, 1435781451781, 5, -1500, -5)] == \
        ["0", "1", "1.500", "1435781451.781", "0.005", "-1.500", "-0.005"]


def test_go_json_escaping():
    assert jsonfmt.dumps({"a": "<b>&\u2028é\n"}) == '{"a":"\\u003cb\\u003e\\u0026\\u2028é\\n"}'
    assert jsonfmt.quote('q"\\\t\r\b\f\x01\x7f') == r'"q\"\\\t\r\u0008\u000c\u0001' + '\x7f"'
    assert jsonfmt.quote("\ud800!") == '"\\ufffd!"'
    assert jsonfmt.dumps({"n": [1, True, None]}) == '{"n":[1,true,null]}'


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10**11 - 1), st.text("0123456789", max_size=3), st.booleans())
def test_parse_time_decimal_shortcut_matches_the_float_path(whole, fraction, dot):
    text = str(whole) + ("." + fraction if dot or fraction else "")
    assert parse_time(text, "t") == _float_seconds_ms(text)


def test_parse_time_forms():
    assert parse_time("1435781451.781", "t") == 1435781451781
    assert parse_time("1.2345", "t") == 1234  # the fraction is rounded to ms before truncation, as Go does
    assert parse_time("1e3", "t") == 1_000_000
    assert parse_time("-1.5", "t") == -1500
    assert parse_time("2015-07-01T20:10:51.781Z", "t") == 1435781451781
    assert parse_time("2015-07-01T22:10:51.7819999+02:00", "t") == 1435781451781
    assert parse_time(MAX_TIME_FORMATTED, "t") == MAX_TIME_MS
    # whole seconds take a shortcut; it agrees with the float path up to where floats stop being exact
    for whole in ("0", "007", "1795950000", "999999999999999", "9007199254740993"):
        assert parse_time(whole, "t") == parse_time(whole + ".0", "t")
    # so do seconds with up to three decimals, as dashboards send them
    for text in ("1795978485.000", "1795978485.5", "1795978485.", "0.001", "99999999999.999"):
        assert parse_time(text, "t") == _float_seconds_ms(text)
    for bad in ("x", "", " 1", "1_0", "2015-07-01", "2015-13-01T00:00:00Z", "1..5", "1.5.5"):
        with pytest.raises(ParamError) as info:
            parse_time(bad, "start")
        assert str(info.value) == f'invalid parameter "start": cannot parse "{bad}" to a valid timestamp'


def test_parse_duration_and_limit():
    assert [parse_duration(t, "step") for t in ("15", "0.5", "5m", "1h30m", "1d", "0")] == \
        [15000, 500, 300000, 5400000, 86400000, 0]
    with pytest.raises(ParamError, match='invalid parameter "step": cannot parse "1.5m" to a valid duration$'):
        parse_duration("1.5m", "step")
    assert parse_duration("1e10", "step") == 10**13
    # whole seconds skip the float regex, with the float path's value, leading zeros and 12 digits included
    for text in ("007", "60", "86400", "999999999999", "1234567890123"):
        assert parse_duration(text, "step") == int(float(text) * 1000)
    with pytest.raises(ParamError, match="It overflows int64"):
        parse_duration("1e17", "step")
    assert parse_limit(None) == 0 and parse_limit("7") == 7
    with pytest.raises(ParamError, match='^invalid parameter "limit": limit must be non-negative$'):
        parse_limit("-1")
    with pytest.raises(ParamError, match=r'strconv.Atoi: parsing "x": invalid syntax'):
        parse_limit("x")


def test_match_params():
    (matchers,) = parse_match_params(['up{job=~"a|b"}'])
    assert sorted(str(m) for m in matchers) == ['__name__="up"', 'job=~"a|b"']
    with pytest.raises(ParamError, match="match\\[\\] must contain at least one non-empty matcher"):
        parse_match_params(['{job=~".*"}'])
    assert unescape_label_name("U__a_2e_b") == "a.b"
    assert unescape_label_name("job") == "job"


def test_merge_sorted_series_dedupes_overlaps():
    def series(name, ts, vals):
        return (("__name__", name),), np.array(ts, dtype=np.int64), np.array(vals, dtype=np.float64)

    ingester = [series("a", [1, 2, 3], [1.0, 2.0, 3.0]), series("c", [5], [5.0])]
    store = [series("a", [0, 2, 4], [0.5, 20.0, 4.0]), series("b", [1], [1.5])]
    merged = [(labels[0][1], ts.tolist(), vals.tolist()) for labels, ts, vals in merge_sorted_series([ingester, store])]
    assert merged == [("a", [0, 1, 2, 3, 4], [0.5, 1.0, 2.0, 3.0, 4.0]), ("b", [1], [1.5]), ("c", [5], [5.0])]
    assert with_tenant_label((("__tenant_id__", "x"), ("job", "j")), "t") == \
        (("__tenant_id__", "t"), ("job", "j"), ("original___tenant_id__", "x"))


# --- through the daemon ----------------------------------------------------------------------------------

SERIES = {
    (("__name__", "up"), ("job", "a"), ("instance", "1")): [(BASE + i * MINUTE, 1.0) for i in range(10)],
    (("__name__", "up"), ("job", "b"), ("instance", "2")): [(BASE + i * MINUTE, float(i % 2)) for i in range(10)],
    (("__name__", "http_requests_total"), ("job", "a"), ("code", "200")): [
        (BASE + i * MINUTE, 10.0 * i) for i in range(10)],
}
METADATA = [(1, "http_requests_total", "Total HTTP requests.", ""), (2, "up", "Target is up.", "")]


def _push_with_exemplar(daemon: Daemon, tenant: str) -> None:
    request = prompb.WriteRequest()
    series = request.timeseries.add()
    for name, value in (("__name__", "traces_total"), ("job", "t")):
        series.labels.add(name=name, value=value)
    series.samples.add(timestamp=BASE, value=1.0)
    exemplar = series.exemplars.add(timestamp=BASE + 1500, value=0.25)
    exemplar.labels.add(name="trace_id", value="abc<1>")
    response = daemon.post("/api/v1/push", content=snappy.compress(request.SerializeToString()),
                           headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                                    "X-Scope-OrgID": tenant})
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def querier(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("querier")
    (workdir / "runtime.yaml").write_text(
        "overrides:\n  limited:\n    max_fetched_series_per_query: 2\n"
        "  frontend-limits:\n    max_query_expression_size_bytes: 20\n    max_total_query_length: 1h\n"
        "    max_query_lookback: 20m\n"
        "  aligned:\n    align_queries_with_step: true\n")
    proc = Daemon(workdir, ["-tenant-federation.enabled=true", "-ingester.max-global-exemplars-per-user=100",
                            "-runtime-config.file=runtime.yaml"]).start()
    assert remote_write(proc, "team-a", SERIES, METADATA).status_code == 200
    assert remote_write(proc, "limited", SERIES).status_code == 200
    assert remote_write(proc, "aligned", SERIES).status_code == 200
    assert remote_write(proc, "frontend-limits", SERIES).status_code == 200
    recent = {(("__name__", "up"), ("job", "a"), ("instance", "1")): [(int(time.time() * 1000) - 60_000, 1.0)]}
    assert remote_write(proc, "frontend-limits", recent).status_code == 200
    assert remote_write(proc, "team-b", {(("__name__", "up"), ("job", "c")): [(BASE, 0.0)],
                                         (("__name__", "html"), ("v", "<a&b>")): [(BASE, 1.0)]}).status_code == 200
    _push_with_exemplar(proc, "team-a")
    yield proc
    proc.stop(signal.SIGKILL)


def get(daemon: Daemon, path: str, tenant: str = "team-a", **params):
    return daemon.get(P + path, params=params, headers={"X-Scope-OrgID": tenant})


def assert_bad_data(response, message: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.text == json.dumps({"status": "error", "errorType": "bad_data", "error": message},
                                       separators=(",", ":"))


def test_requires_tenant(querier):
    assert querier.get(P + "/labels").status_code == 401


def test_series(querier):
    response = get(querier, "/series", **{"match[]": "up"})
    assert response.status_code == 200
    assert response.text == ('{"status":"success","data":[{"__name__":"up","instance":"1","job":"a"},'
                             '{"__name__":"up","instance":"2","job":"b"}]}')
    both = get(querier, "/series", **{"match[]": ['up{job="a"}', "http_requests_total"]}).json()
    assert both["data"] == [{"__name__": "http_requests_total", "code": "200", "job": "a"},
                            {"__name__": "up", "instance": "1", "job": "a"}]


def test_series_post_form_limit_and_range(querier):
    response = querier.post(P + "/series", data={"match[]": '{job=~"a|b"}', "limit": "1"},
                            headers={"X-Scope-OrgID": "team-a"})
    assert response.text == ('{"status":"success","data":[{"__name__":"http_requests_total","code":"200",'
                             '"job":"a"}],"warnings":["results truncated due to limit"]}')
    # a range after every sample selects nothing
    later = get(querier, "/series", **{"match[]": "up", "start": str(T0 + 3600), "end": str(T0 + 7200)})
    assert later.json() == {"status": "success", "data": []}


def test_series_errors(querier):
    assert_bad_data(get(querier, "/series"), "no match[] parameter provided")
    assert_bad_data(get(querier, "/series", **{"match[]": "up", "start": "x"}),
                    'invalid parameter "start": cannot parse "x" to a valid timestamp')
    # start, end and limit are checked first, by the query-frontend, with its own texts
    assert_bad_data(get(querier, "/series", **{"match[]": "up", "limit": "-2"}),
                    "limit parameter must be greater than or equal to 0, got -2")
    assert_bad_data(get(querier, "/series", limit="x"), "limit parameter must be greater than or equal to 0, got x")
    assert_bad_data(get(querier, "/series", start="10", end="5"),
                    'invalid parameter "end": end timestamp must not be before start time')
    assert get(querier, "/series", **{"match[]": "up", "limit": "0"}).json()["data"] != []
    assert_bad_data(get(querier, "/series", **{"match[]": "up{"}),
                    'invalid parameter "match[]": 1:4: parse error: unexpected end of input inside braces')


def test_series_delete_answers_as_prometheus_behind_mimir(querier):
    # Mimir routes DELETE to Prometheus's dropSeries after its frontend checked start, end and limit
    for params in ({"match[]": "up"}, {}):
        response = querier.request("DELETE", P + "/series", params=params, headers={"X-Scope-OrgID": "team-a"})
        assert response.status_code == 500
        assert response.text == '{"status":"error","errorType":"internal","error":"not implemented"}'
    bad = querier.request("DELETE", P + "/series", params={"match[]": "up", "limit": "x"},
                          headers={"X-Scope-OrgID": "team-a"})
    assert_bad_data(bad, "limit parameter must be greater than or equal to 0, got x")
    assert get(querier, "/series", **{"match[]": "up"}).json()["data"]  # nothing was dropped
    assert querier.request("PUT", P + "/series", headers={"X-Scope-OrgID": "team-a"}).status_code == 405


def test_label_lookups_with_matchers_take_every_series_of_an_overlapping_head(querier):
    now = int(time.time())
    assert remote_write(querier, "label-range", {
        (("__name__", "m"), ("k", "old"), ("only_old", "x")): [(BASE, 1.0)],
        (("__name__", "m"), ("k", "new")): [((now - 60) * 1000, 1.0)]}).status_code == 200
    recent = {"start": str(now - 300), "end": str(now)}
    # the head overlaps the last five minutes, so the old series counts though its sample is older
    assert get(querier, "/label/k/values", tenant="label-range", **{"match[]": "m"}, **recent).json()["data"] == \
        ["new", "old"]
    assert get(querier, "/labels", tenant="label-range", **{"match[]": 'm{k="old"}'}, **recent).json()["data"] == \
        ["__name__", "k", "only_old"]
    # ranges wholly before or after the head's samples see nothing
    for start, end in ((T0 - 7200, T0 - 3600), (now + 3600, now + 7200)):
        assert get(querier, "/label/k/values", tenant="label-range", start=str(start), end=str(end),
                   **{"match[]": "m"}).json()["data"] == []
    # the series endpoint still asks for samples in the range
    assert get(querier, "/series", tenant="label-range", **{"match[]": "m"}, **recent).json()["data"] == [
        {"__name__": "m", "k": "new"}]


def test_labels_and_values(querier):
    assert get(querier, "/labels").text == \
        '{"status":"success","data":["__name__","code","instance","job"]}'
    assert get(querier, "/labels", **{"match[]": "up"}).json()["data"] == ["__name__", "instance", "job"]
    assert get(querier, "/labels", limit="2").json() == {
        "status": "success", "data": ["__name__", "code"], "warnings": ["results truncated due to limit"]}
    assert get(querier, "/label/job/values").text == '{"status":"success","data":["a","b","t"]}'
    assert get(querier, "/label/__name__/values").json()["data"] == ["http_requests_total", "traces_total", "up"]
    assert get(querier, "/label/job/values", **{"match[]": "up"}).json()["data"] == ["a", "b"]
    assert get(querier, "/label/U__job/values", **{"match[]": "up"}).json()["data"] == ["a", "b"]
    assert get(querier, "/label/nope/values").json() == {"status": "success", "data": []}
    assert_bad_data(get(querier, "/label/0abc/values"), 'invalid label name: "0abc"')
    assert_bad_data(get(querier, "/labels", end="soon"),
                    'invalid parameter "end": cannot parse "soon" to a valid timestamp')
    assert_bad_data(get(querier, "/label/job/values", limit="1.5"),
                    "limit parameter must be greater than or equal to 0, got 1.5")
    assert_bad_data(get(querier, "/labels", **{"match[]": '{job=~".*"}'}),
                    "match[] must contain at least one non-empty matcher")


def test_federated_reads(querier):
    response = get(querier, "/series", tenant="team-a|team-b", **{"match[]": "up"})
    assert response.json()["data"] == [
        {"__name__": "up", "__tenant_id__": "team-a", "instance": "1", "job": "a"},
        {"__name__": "up", "__tenant_id__": "team-a", "instance": "2", "job": "b"},
        {"__name__": "up", "__tenant_id__": "team-b", "job": "c"},
    ]
    only_b = get(querier, "/series", tenant="team-a|team-b", **{"match[]": 'up{__tenant_id__="team-b"}'})
    assert only_b.json()["data"] == [{"__name__": "up", "__tenant_id__": "team-b", "job": "c"}]
    assert "__tenant_id__" in get(querier, "/labels", tenant="team-a|team-b").json()["data"]
    assert get(querier, "/label/__tenant_id__/values", tenant="team-b|team-a|nobody").json()["data"] == \
        ["nobody", "team-a", "team-b"]
    assert get(querier, "/label/__tenant_id__/values", tenant="team-a|team-b",
               **{"match[]": '{__tenant_id__=~"team-b|x"}'}).json()["data"] == ["team-b"]


def test_metadata(querier):
    assert get(querier, "/metadata").text == (
        '{"status":"success","data":{"http_requests_total":[{"type":"counter","help":"Total HTTP requests.",'
        '"unit":""}],"up":[{"type":"gauge","help":"Target is up.","unit":""}]}}')
    assert list(get(querier, "/metadata", limit="1").json()["data"]) == ["http_requests_total"]
    assert list(get(querier, "/metadata", metric="up").json()["data"]) == ["up"]
    assert get(querier, "/metadata", limit="0").json() == {"status": "success", "data": {}}
    bad = get(querier, "/metadata", limit="x")
    assert bad.status_code == 400 and bad.text == '{"status":"error","error":"limit must be a number"}'
    assert get(querier, "/metadata", limit_per_metric="y").json()["error"] == "limit_per_metric must be a number"


def test_query_exemplars(querier):
    response = get(querier, "/query_exemplars", query='rate(traces_total{job="t"}[5m])',
                   start=str(T0 - 60), end=str(T0 + 60))
    assert response.text == (
        '{"status":"success","data":[{"seriesLabels":{"__name__":"traces_total","job":"t"},"exemplars":'
        f'[{{"labels":{{"trace_id":"abc\\u003c1\\u003e"}},"value":"0.25","timestamp":{T0 + 1}.500}}]}}]}}')
    assert get(querier, "/query_exemplars", query="up").json() == {"status": "success", "data": []}
    assert get(querier, "/query_exemplars", query="1 + 1").json() == {"status": "success", "data": None}
    assert_bad_data(get(querier, "/query_exemplars", query="up", start="10", end="5"),
                    "end timestamp must not be before start timestamp")
    assert_bad_data(get(querier, "/query_exemplars", query="up{"),
                    "1:4: parse error: unexpected end of input inside braces")


def test_format_query(querier):
    assert get(querier, "/format_query", query="sum by(job)(rate(x[5m]))").text == \
        '{"status":"success","data":"sum by (job) (rate(x[5m]))"}'
    post = querier.post(P + "/format_query", data={"query": "foo{a='b'}"}, headers={"X-Scope-OrgID": "team-a"})
    assert post.json()["data"] == 'foo{a="b"}'
    assert_bad_data(get(querier, "/format_query", query="foo{"),
                    'invalid parameter "query": 1:5: parse error: unexpected end of input inside braces')


def test_instant_query_shapes(querier):
    at = str(T0 + 9 * 60)
    vector = get(querier, "/query", query="up", time=at)
    assert vector.status_code == 200
    assert vector.headers["content-type"] == "application/json"
    result = sorted(vector.json()["data"]["result"], key=lambda item: item["metric"]["job"])
    assert vector.json()["data"]["resultType"] == "vector"
    assert result == [{"metric": {"__name__": "up", "instance": "1", "job": "a"}, "value": [T0 + 540, "1"]},
                      {"metric": {"__name__": "up", "instance": "2", "job": "b"}, "value": [T0 + 540, "1"]}]
    assert get(querier, "/query", query="sum(up)", time=f"{at}.25").text == \
        f'{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{}},"value":[{at}.250,"2"]}}]}}}}'
    deprecated = get(querier, "/query", query="1", time="100", stats="yes").json()
    assert deprecated["warnings"] == ['value "yes" for parameter "stats" is deprecated and will be rejected in the '
                                      'next major release, use "true" or "all"']
    assert get(querier, "/query", query="1/0", time="100").text == \
        '{"status":"success","data":{"resultType":"scalar","result":[100,"+Inf"]}}'
    assert get(querier, "/query", query='"hi"', time="1.5").text == \
        '{"status":"success","data":{"resultType":"string","result":[1.500,"hi"]}}'
    matrix = get(querier, "/query", query='up{job="a"}[2m]', time=at).json()["data"]
    assert matrix == {"resultType": "matrix", "result": [{"metric": {"__name__": "up", "instance": "1", "job": "a"},
                                                          "values": [[T0 + 480, "1"], [T0 + 540, "1"]]}]}


def test_range_query(querier):
    response = querier.post(P + "/query_range", data={"query": 'http_requests_total', "start": str(T0),
                                                       "end": str(T0 + 120), "step": "1m"},
                            headers={"X-Scope-OrgID": "team-a"})
    assert response.text == (
        '{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"http_requests_total",'
        f'"code":"200","job":"a"}},"values":[[{T0},"0"],[{T0 + 60},"10"],[{T0 + 120},"20"]]}}]}}}}')
    federated = get(querier, "/query_range", tenant="team-a|team-b", query="count by (__tenant_id__) (up)",
                    start=str(T0), end=str(T0), step="15")
    assert federated.json()["data"]["result"] == [
        {"metric": {"__tenant_id__": "team-a"}, "values": [[T0, "2"]]},
        {"metric": {"__tenant_id__": "team-b"}, "values": [[T0, "1"]]}]


def test_query_parameter_errors(querier):
    def range_query(**params):
        return get(querier, "/query_range", **{"query": "up", "start": "0", "end": "100", "step": "10", **params})

    assert_bad_data(get(querier, "/query", query="up", time="x"),
                    'invalid parameter "time": cannot parse "x" to a valid timestamp')
    assert_bad_data(get(querier, "/query", query="up{"),
                    'invalid parameter "query": 1:4: parse error: unexpected end of input inside braces')
    assert_bad_data(get(querier, "/query"),
                    'invalid parameter "query": unknown position: parse error: no expression found in input')
    # durations that come out NaN or infinite are bad data, not server errors
    assert_bad_data(get(querier, "/query", query="up offset NaN"),
                    'invalid parameter "query": 1:11: parse error: duration out of range')
    assert_bad_data(get(querier, "/query", query="up offset (2^1500)"),
                    'invalid parameter "query": 11:17: duration is out of range')
    assert_bad_data(range_query(start="x"), 'invalid parameter "start": cannot parse "x" to a valid timestamp')
    assert_bad_data(range_query(end="-1"), 'invalid parameter "end": end timestamp must not be before start time')
    assert_bad_data(range_query(step="0"), 'invalid parameter "step": zero or negative query resolution step '
                                           'widths are not accepted. Try a positive integer')
    assert_bad_data(range_query(step="x"), 'invalid parameter "step": cannot parse "x" to a valid duration')
    assert_bad_data(range_query(end="11001", step="1"),
                    "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query "
                    "resolution (?step=XX)")
    assert range_query(end="11000", step="1").status_code == 200
    assert_bad_data(get(querier, "/query_range", query="up", end="1", step="1"),
                    'missing required parameter "start"')
    assert_bad_data(get(querier, "/query_range", query="up", start="x", step="1"),
                    'invalid parameter "start": cannot parse "x" to a valid timestamp')
    assert_bad_data(get(querier, "/query_range", query="up", start="1", end="2"),
                    'missing required parameter "step"')
    assert_bad_data(range_query(query="up[5m]"), 'invalid parameter "query": invalid expression type "range '
                                                 'vector" for range query, must be Scalar or instant Vector')


def test_execution_error(querier):
    query = 'label_replace(label_replace(up, "job", "x", "job", ".*"), "instance", "y", "instance", ".*")'
    response = get(querier, "/query", query=query, time=str(T0 + 60))
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "execution"


def test_max_fetched_series_per_query(querier):
    message = ("the query exceeded the maximum number of series (limit: 2 series) (err-mimir-max-series-per-query). "
               "Consider reducing the time range and/or number of series selected by the query. One way to reduce "
               "the number of selected series is to add more label matchers to the query. Otherwise, to adjust the "
               "related per-tenant limit, configure -querier.max-fetched-series-per-query, or contact your service "
               "administrator.")
    at = str(T0 + 60)
    assert get(querier, "/query", tenant="limited", query="up", time=at).status_code == 200
    # a series fetched twice in one query counts once
    assert get(querier, "/query", tenant="limited", query="up + up", time=at).status_code == 200
    for response in (get(querier, "/query", tenant="limited", query='{job="a"} or up', time=at),
                     get(querier, "/series", tenant="limited", **{"match[]": '{job=~".+"}'})):
        assert response.status_code == 422
        assert response.json() == {"status": "error", "errorType": "execution", "error": message}


def test_server_timing_header(querier):
    response = get(querier, "/query", query="up", time=str(T0 + 60))
    parts = response.headers["server-timing"].split(", ")
    assert [p.split(";")[0] for p in parts] == ["querier_wall_time", "response_time", "bytes_processed",
                                                 "samples_processed"]
    assert parts[0].startswith("querier_wall_time;dur=") and float(parts[0].split("=")[1]) > 0
    assert parts[3] == "samples_processed;val=4"  # two series, two samples each in the 5m lookback window
    assert get(querier, "/labels").headers["server-timing"].endswith("samples_processed;val=0")
    detailed = querier.get(P + "/query", params={"query": "up", "time": str(T0 + 60)},
                           headers={"X-Scope-OrgID": "team-a", "X-Mimir-Response-Query-Stats": "true"})
    names = [p.split(";")[0] for p in detailed.headers["server-timing"].split(", ")]
    assert names[4:] == ["encode_time_seconds", "fetched_chunk_bytes", "fetched_chunks_count",
                         "fetched_series_count", "query_wall_time_seconds",
                         "queue_time_seconds", "response_size_bytes", "response_time", "results_cache_hit_bytes",
                         "results_cache_miss_bytes", "sharded_queries", "split_queries"]
    assert f"response_size_bytes;val={len(detailed.content)}" in detailed.headers["server-timing"]
    assert "fetched_series_count;val=2" in detailed.headers["server-timing"]
    assert "fetched_chunks_count;val=2" in detailed.headers["server-timing"]  # one head chunk per series


def test_frontend_limits(querier):
    def query(path, **params):
        return get(querier, path, tenant="frontend-limits", **params)

    now = int(time.time())
    assert_bad_data(query("/query", query="up" + " " * 19, time=str(now)),
                    "the raw query size in bytes exceeds the limit (query size: 21, limit: 20) "
                    "(err-mimir-max-query-expression-size-bytes). To adjust the related per-tenant limit, "
                    "configure -query-frontend.max-query-expression-size-bytes, or contact your service "
                    "administrator.")
    assert_bad_data(query("/query_range", query="up", start=str(now - 600), end=str(now + 3001), step="60"),
                    "the total query time range exceeds the limit (query length: 1h0m1s, limit: 1h0m0s) "
                    "(err-mimir-max-total-query-length). To adjust the related per-tenant limit, configure "
                    "-query-frontend.max-total-query-length, or contact your service administrator.")
    # the lookback clamp comes first: a start 2h ago is moved up to 20m ago, and the length is then fine
    clamped = query("/query_range", query='up{job="a"}', start=str(now - 7200), end=str(now), step="60")
    assert clamped.status_code == 200
    first_t = clamped.json()["data"]["result"][0]["values"][0][0]
    assert now - 1200 - 2 <= first_t <= now
    # ending before now-20m: an empty success without running the query
    assert query("/query_range", query="up", start=str(T0), end=str(T0 + 60), step="60").text == \
        '{"status":"success","data":{"resultType":"matrix","result":[]}}'
    assert query("/query", query="up", time=str(T0)).json()["data"] == {"resultType": "matrix", "result": []}
    # the querier clamps series and label lookups too: the data ends 21m ago, before the 20m lookback
    assert query("/series", **{"match[]": "http_requests_total"}).json() == {"status": "success", "data": []}
    # label values with match[] take every matching series of a head overlapping the clamped range (as
    # Mimir's ingester does): the recent sample keeps the head inside it
    assert query("/label/job/values", **{"match[]": '{job=~".+"}'}).json()["data"] == ["a", "b"]
    assert get(querier, "/series", tenant="limited", **{"match[]": 'up{job="a"}'}).json()["data"] != []


def test_go_duration():
    assert [go_duration(ms) for ms in (0, 5, 999, 1000, 1500, 61_000, 3_600_000, 3_601_000, 90_061_500)] == \
        ["0s", "5ms", "999ms", "1s", "1.5s", "1m1s", "1h0m0s", "1h0m1s", "25h1m1.5s"]


def test_align_queries_with_step(querier):
    params = {"query": 'http_requests_total', "start": str(T0 + 61), "end": str(T0 + 179), "step": "60"}
    aligned = get(querier, "/query_range", tenant="aligned", **params).json()["data"]["result"][0]["values"]
    assert aligned == [[T0 + 60, "10"], [T0 + 120, "20"]]
    as_given = get(querier, "/query_range", **params).json()["data"]["result"][0]["values"]
    assert as_given == [[T0 + 61, "10"], [T0 + 121, "20"]]


# --- the store-gateway path ------------------------------------------------------------------------------

def test_blocks_from_the_store_gateway_merge_without_duplicates(tmp_path):
    (tmp_path / "runtime.yaml").write_text("overrides:\n  store-only:\n    query_ingesters_within: 10m\n")
    daemon = Daemon(tmp_path, ["-querier.query-store-after=0s", "-blocks-storage.bucket-store.sync-interval=0.2s",
                               "-runtime-config.file=runtime.yaml"]).start()
    try:
        series = {(("__name__", "flushed"), ("n", str(i))): [(BASE + k * MINUTE, float(k)) for k in range(10)]
                  for i in range(3)}
        for tenant in ("both", "store-only"):
            assert remote_write(daemon, tenant, series).status_code == 200
        assert daemon.post("/ingester/flush?wait=true").status_code == 204
        query = {"query": "count_over_time(flushed[1h])", "time": str(T0 + 9 * 60)}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the store-gateway has opened the shipped blocks
            only_store = get(daemon, "/query", tenant="store-only", **query).json()["data"]["result"]
            if only_store:
                break
            time.sleep(0.1)
        # the ingester (local block) and the store-gateway (bucket block) both hold every sample: counted once
        both = get(daemon, "/query", tenant="both", **query).json()["data"]["result"]
        assert [(s["metric"]["n"], s["value"][1]) for s in both] == [("0", "10"), ("1", "10"), ("2", "10")]
        # ranges ending before now - query_ingesters_within are answered by the store-gateway alone
        assert [(s["metric"]["n"], s["value"][1]) for s in only_store] == [("0", "10"), ("1", "10"), ("2", "10")]
        assert get(daemon, "/series", tenant="store-only", start=str(T0), end=str(T0 + 600),
                   **{"match[]": "flushed"}).json()["data"] == [{"__name__": "flushed", "n": str(i)} for i in range(3)]
    finally:
        daemon.stop(signal.SIGKILL)


def test_query_queue_limits_outstanding_requests_per_tenant():
    async def scenario():
        queue = QueryQueue(max_concurrent=1, max_outstanding_per_tenant=1)
        release = asyncio.Event()
        waits = []

        async def request(tenant):
            async with held_slot(queue, tenant) as waited:
                waits.append((tenant, waited))
                await release.wait()

        running = asyncio.create_task(request("a"))
        await asyncio.sleep(0.01)
        queued = [asyncio.create_task(request("a")), asyncio.create_task(request("b"))]
        await asyncio.sleep(0.01)
        assert queue.waiting == {"a": 1, "b": 1}
        with pytest.raises(HTTPError) as refused:
            async with held_slot(queue, "a"):
                pass
        assert (refused.value.status, refused.value.message) == (429, "too many outstanding requests")
        release.set()
        await asyncio.gather(running, *queued)
        assert queue.waiting == {} and [tenant for tenant, _ in waits] == ["a", "a", "b"]
        assert waits[0][1] < 0.01 <= waits[1][1]

    asyncio.run(scenario())


def test_html_escaping_as_mimir(querier):
    # Prometheus's API escapes <, > and &; Mimir's frontend re-encodes query, series and label results without
    series = get(querier, "/series", tenant="team-b", **{"match[]": "html"})
    assert series.text == '{"status":"success","data":[{"__name__":"html","v":"<a&b>"}]}'
    assert get(querier, "/label/v/values", tenant="team-b").text == '{"status":"success","data":["<a&b>"]}'
    query = get(querier, "/query", tenant="team-b", query="html", time=str(T0))
    assert query.text == ('{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"html",'
                          f'"v":"<a&b>"}},"value":[{T0},"1"]}}]}}}}')
