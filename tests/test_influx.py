"""Influx line protocol: the parser case by case, the series it makes, and the endpoint on the daemon."""

from __future__ import annotations

import gzip
import signal
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Daemon
from mimird.distributor import influx
from mimird.tsdb.labels import Matcher, MatchType

NOW_NS = 1_700_000_000_123_456_789
SRC = ("__proxy_source__", "influx")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("influx")
    (workdir / "runtime.yaml").write_text("overrides:\n  limited:\n    ingestion_rate: 1\n    ingestion_burst_size: 2\n")
    proc = Daemon(workdir, ["-distributor.influx-endpoint-enabled=true", "-runtime-config.file=runtime.yaml",
                            "-distributor.max-influx-request-size=100000"]).start()
    yield proc
    proc.stop(signal.SIGKILL)


def series_of(body: bytes, precision: str = "ns") -> list[tuple[dict, int, float]]:
    pairs, offsets, timestamps, values = influx.points_to_series(influx.parse_points(body, precision, NOW_NS))
    assert offsets == list(range(len(pairs) + 1))
    return [(dict(labels), t, v) for labels, t, v in zip(pairs, timestamps, values, strict=True)]


# Each case: a body, then the (labels, timestamp ms, value) it must produce.
PARSE_CASES = [
    ("plain float", b"cpu value=1.5 1000000000", [({"__name__": "cpu"}, 1000, 1.5)]),
    ("field name appended", b"cpu usage=2 1000000000", [({"__name__": "cpu_usage"}, 1000, 2.0)]),
    ("integer", b"m f=-42i 0", [({"__name__": "m_f"}, 0, -42.0)]),
    ("exponent float", b"m f=1e3,g=-.5,h=3. 0",
     [({"__name__": "m_f"}, 0, 1000.0), ({"__name__": "m_g"}, 0, -0.5), ({"__name__": "m_h"}, 0, 3.0)]),
    ("booleans", b"m a=t,b=TRUE,c=false,d=F,e=True 0",
     [({"__name__": "m_a"}, 0, 1.0), ({"__name__": "m_b"}, 0, 1.0), ({"__name__": "m_c"}, 0, 0.0),
      ({"__name__": "m_d"}, 0, 0.0), ({"__name__": "m_e"}, 0, 1.0)]),
    ("strings and unsigned are skipped", b'm s="text, with = and \\" quote",u=7u,x=1 0',
     [({"__name__": "m_x"}, 0, 1.0)]),
    ("tags", b"cpu,host=a,region=eu-1 value=1 0", [({"__name__": "cpu", "host": "a", "region": "eu-1"}, 0, 1.0)]),
    ("escaped measurement", b"my\\ cpu\\,x value=1 0", [({"__name__": "my_cpu_x"}, 0, 1.0)]),
    ("escaped tags", b"m,tag\\ key=va\\,l\\=ue\\ x value=1 0", [({"__name__": "m", "tag_key": "va,l=ue x"}, 0, 1.0)]),
    ("escaped field key", b"m f\\=1\\ a=2 0", [({"__name__": "m_f_1_a"}, 0, 2.0)]),
    ("other backslashes stay", b"m,t=a\\b value=1 0", [({"__name__": "m", "t": "a\\b"}, 0, 1.0)]),
    ("sanitised names", b"http.requests,http.method=GET 5xx=1 0",
     [({"__name__": "http_requests_5xx", "http_method": "GET"}, 0, 1.0)]),
    ("leading digit", b"1m value=1 0", [({"__name__": "_1m"}, 0, 1.0)]),
    ("reserved tags dropped", b"m,__name__=x,__proxy_source__=y,a=b value=1 0", [({"__name__": "m", "a": "b"}, 0, 1.0)]),
    ("no timestamp", b"m value=1", [({"__name__": "m"}, NOW_NS // 1_000_000, 1.0)]),
    ("comments and blanks", b"# a comment\n\n   \n  m value=1 0\n# m value=2 0\n", [({"__name__": "m"}, 0, 1.0)]),
    ("newline in a string field", b'm s="a\nb",value=3 0\nn value=4 0',
     [({"__name__": "m"}, 0, 3.0), ({"__name__": "n"}, 0, 4.0)]),
    ("negative timestamp", b"m value=1 -1500000", [({"__name__": "m"}, -1, 1.0)]),
    ("several spaces", b"m  value=1   0  ", [({"__name__": "m"}, 0, 1.0)]),
    ("floats without digits on one side", b"m a=5.,b=.5,c=-0.5e-1 0",
     [({"__name__": "m_a"}, 0, 5.0), ({"__name__": "m_b"}, 0, 0.5), ({"__name__": "m_c"}, 0, -0.05)]),
    ("escaped quote only escapes in field keys", b'm\\"x,t\\"k=v\\"w f\\"k=1 0',
     [({"__name__": 'm_x_f_k', 't__k': 'v\\"w'}, 0, 1.0)]),
    ("tab-separated sections are not sections", b"m\tx value=1 0", [({"__name__": "m_x"}, 0, 1.0)]),
]


@pytest.mark.parametrize("body, expected", [case[1:] for case in PARSE_CASES], ids=[case[0] for case in PARSE_CASES])
def test_parse(body, expected):
    got = series_of(body)
    for labels, _, _ in got:
        assert labels.pop("__proxy_source__") == "influx"
    assert sorted(got, key=lambda s: s[0]["__name__"]) == sorted(expected, key=lambda s: s[0]["__name__"])


@pytest.mark.parametrize("precision, stamp, expected_ms", [
    ("ns", b"1700000000123456789", 1_700_000_000_123),
    ("us", b"1700000000123456", 1_700_000_000_123),
    ("ms", b"1700000000123", 1_700_000_000_123),
    ("s", b"1700000000", 1_700_000_000_000),
])
def test_precision(precision, stamp, expected_ms):
    ((_, t, _),) = series_of(b"m value=1 " + stamp, precision)
    assert t == expected_ms


def test_missing_timestamp_is_truncated_to_the_precision():
    ((_, t, _),) = series_of(b"m value=1", "s")
    assert t == NOW_NS // 1_000_000_000 * 1000


@pytest.mark.parametrize("line, error", [
    (b"cpu", "missing fields"),
    (b"cpu ", "invalid field format"),
    (b"cpu,host=a", "missing fields"),
    (b",host=a value=1", "missing measurement"),
    (b"cpu,host value=1", "missing tag value"),
    (b"cpu,host= value=1", "missing tag value"),
    (b"cpu,=a value=1", "missing tag key"),
    (b"cpu,a=1,a=2 value=1", "duplicate tags"),
    (b"cpu value", "invalid field format"),
    (b"cpu =1", "missing field key"),
    (b"cpu value=", "missing field value"),
    (b"cpu value=abc", "invalid boolean"),
    (b"cpu value=+1", "invalid boolean"),
    (b"cpu,host=a=b value=1", "invalid tag format"),
    (b"cpu a=1,b", "invalid field format"),
    (b"cpu a=1,=2", "missing field key"),
    (b"cpu value=-", "invalid number"),
    (b"cpu value=1.5i", "invalid number"),
    (b"cpu value=1.2.3", "invalid number"),
    (b"cpu value=1e400", "invalid float"),
    (b"cpu value=-5u", "invalid number"),
    (b"cpu value=1 -", 'strconv.ParseInt: parsing "-": invalid syntax'),
    (b"cpu value=1 99999999999999999999", "value out of range"),
    (b"cpu value=1x", "invalid number"),
    (b"cpu value=NaN", "invalid number"),
    (b"cpu value=tru", "invalid boolean"),
    (b'cpu value="open', "unbalanced quotes"),
    (b"cpu value=99999999999999999999i", 'unable to parse integer 99999999999999999999: strconv.ParseInt: '
     'parsing "99999999999999999999": value out of range'),
    (b"cpu value=1 12ab", "bad timestamp"),
    (b"cpu value=1 1 2", "point is invalid"),
])
def test_parse_errors(line, error):
    with pytest.raises(influx.InfluxParseError) as info:
        influx.parse_points(b"ok value=1 0\n" + line)
    prefix = f"can't parse points: unable to parse '{line.decode()}': "
    message = str(info.value)
    assert message.startswith(prefix) and error in message[len(prefix):]


def test_bad_precision_and_time_range():
    with pytest.raises(influx.InfluxParseError, match="precision supplied is not valid: h"):
        influx.parse_points(b"m value=1 0", "h")
    with pytest.raises(influx.InfluxParseError, match="time outside range"):
        influx.parse_points(b"m value=1 9300000000", "s")


def test_every_bad_line_is_reported():
    with pytest.raises(influx.InfluxParseError) as info:
        influx.parse_points(b"a\nok value=1\nb")
    assert str(info.value) == "can't parse points: unable to parse 'a': missing fields\nunable to parse 'b': missing fields"


# ---------------------------------------------------------------------------------------------------
# The endpoint

def write(daemon: Daemon, body: bytes, tenant: str, precision: str | None = None, **headers):
    path = "/api/v1/push/influx/write" + (f"?precision={precision}" if precision else "")
    return daemon.post(path, content=body, headers={"X-Scope-OrgID": tenant, **headers})


def stored(daemon: Daemon, tenant: str) -> dict[tuple, list[tuple[int, float]]]:
    from mimird.tsdb.block import BlockReader

    assert daemon.post(f"/ingester/flush?wait=true&tenant={tenant}").status_code == 204
    found: dict[tuple, list] = {}
    for meta in (Path(daemon.workdir) / "data" / "blocks" / tenant).glob("*/meta.json"):
        with BlockReader(meta.parent) as reader:
            for labels, ts, values in reader.read_series_samples([Matcher(MatchType.NOT_EQUAL, "__name__", "")]):
                found.setdefault(tuple(labels), []).extend(zip(ts.tolist(), values.tolist(), strict=True))
    return found


def test_write_and_read_back(server):
    now_s = int(time.time())
    body = (f"cpu,host=a,region=eu usage_user=12.5,usage_idle=80i,up=true,note=\"ok\" {now_s}\n"
            f"disk\\ io,dev=sda value=3 {now_s}\n").encode()
    response = write(server, body, "t1", precision="s")
    assert response.status_code == 204 and response.content == b""
    samples = stored(server, "t1")
    expected = {
        (("__name__", "cpu_usage_user"), SRC, ("host", "a"), ("region", "eu")): 12.5,
        (("__name__", "cpu_usage_idle"), SRC, ("host", "a"), ("region", "eu")): 80.0,
        (("__name__", "cpu_up"), SRC, ("host", "a"), ("region", "eu")): 1.0,
        (("__name__", "disk_io"), SRC, ("dev", "sda")): 3.0,
    }
    assert {labels: values[0][1] for labels, values in samples.items()} == expected
    assert all(values == [(now_s * 1000, values[0][1])] for values in samples.values())


def test_the_size_limit_applies_to_the_decompressed_text(server):
    now_ns = time.time_ns()
    # Concatenated gzip members are one stream; empty ones make the body big and the text small.
    body = gzip.compress(f"multi value=1 {now_ns}".encode()) + gzip.compress(b"") * 6000
    assert len(body) > 100_000
    assert write(server, body, "t5", **{"Content-Encoding": "gzip"}).status_code == 204
    assert list(stored(server, "t5")) == [(("__name__", "multi"), SRC)]
    too_big = gzip.compress(b"#" + b"x" * 100_000)
    assert len(too_big) < 100_000
    assert write(server, too_big, "t6", **{"Content-Encoding": "gzip"}).status_code == 400


def test_gzip_and_default_precision(server):
    now_ns = time.time_ns()
    body = gzip.compress(f"gz,k=v value=7 {now_ns}\nnotime value=8\n".encode())
    response = write(server, body, "t2", **{"Content-Encoding": "gzip"})
    assert response.status_code == 204
    samples = stored(server, "t2")
    assert samples[(("__name__", "gz"), SRC, ("k", "v"))] == [(now_ns // 1_000_000, 7.0)]
    ((t, value),) = samples[(("__name__", "notime"), SRC)]
    assert value == 8.0 and abs(t - time.time() * 1000) < 60_000


@pytest.mark.parametrize("body, headers, query", [
    (b"good value=1\nbad", {}, None),
    (b"good value=1", {}, "h"),
    (b"not gzip at all", {"Content-Encoding": "gzip"}, None),
    (b"x" * 100_001, {}, None),
])
def test_malformed_requests_store_nothing(server, body, headers, query):
    response = write(server, body, "t3", precision=query, **headers)
    assert response.status_code == 400 and response.content == b""
    assert daemon_has_no_series(server, "t3")


def daemon_has_no_series(daemon: Daemon, tenant: str) -> bool:
    response = daemon.get("/ingester/tenants")
    return tenant not in response.text


def test_validation_errors_keep_the_status_without_body(server):
    too_far = (time.time_ns() + 3_600 * 10**9)
    response = write(server, f"future value=1 {too_far}".encode(), "t4")
    assert response.status_code == 400 and response.content == b""


def test_rate_limited_without_body(server):
    now_ns = time.time_ns()
    response = write(server, f"m a=1,b=2,c=3 {now_ns}".encode(), "limited")
    assert response.status_code == 429 and response.content == b""
    assert int(response.headers["retry-after"]) >= 3


def test_needs_tenant(server):
    assert server.post("/api/v1/push/influx/write", content=b"m value=1").status_code == 401


def test_disabled_by_default(start_daemon):
    daemon = start_daemon()
    response = daemon.post("/api/v1/push/influx/write", content=b"m value=1", headers={"X-Scope-OrgID": "a"})
    assert response.status_code == 404


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["m", "cpu", "a,b=c", "x,t=1,u=2", ",", "=", " ", "  ", "v=1", "v=-2.5", "v=3i",
                                 "v=4u", "v=t", "v=FALSE", "v=1e3", "v=.", "v=-", "w=5.", "v=1,w=2", "v=x",
                                 "1700000000", "-5", "99999999999999999999", "12a", "a=b=c", "n=NaN"]),
                min_size=1, max_size=6))
def test_fast_path_agrees_with_the_scanner(parts):
    line = "".join(parts).lstrip(" ")
    if not line or line.startswith("#"):
        return
    fast = influx._parse_plain_line(line, NOW_NS, "ns")
    try:
        exact = influx._parse_line_exactly(line, NOW_NS, "ns")
    except influx.InfluxParseError:
        exact = None
    if fast is not None:
        assert fast == exact, line
