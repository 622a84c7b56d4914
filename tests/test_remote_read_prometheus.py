"""Remote read with a real client: Debian's Prometheus 2.42 reads mimird through its ``remote_read`` section.

Data is pushed into mimird only; Prometheus, with an empty local TSDB, is configured with
``remote_read: [{url: <mimird>/prometheus/api/v1/read, read_recent: true, headers: {X-Scope-OrgID: reader}}]``.
Prometheus 2.42 accepts ``headers`` in a ``remote_read`` section but does not send them (measured: its read
requests carry no ``X-Scope-OrgID``; ``test_prometheus_2_42_sends_no_configured_headers`` asserts it), so
mimird runs with ``-auth.multitenancy-enabled=false`` and the data lives in its ``anonymous`` tenant. Its own ``/api/v1/query`` (a range selector, whose answer
is the raw samples) and ``/api/v1/query_range`` (steps on the sample grid) must then give back every pushed
sample exactly.

Response types: the Prometheus 2.42 remote read client sends no ``accepted_response_types`` at all, so
servers answer SAMPLES; it cannot consume STREAMED_XOR_CHUNKS (streamed remote read in the client came with
Prometheus 3.x), and no ``remote_read`` option changes that. Prometheus is therefore pointed at a small
recording proxy in front of mimird, which asserts what Prometheus asked for; STREAMED_XOR_CHUNKS is checked
with a direct ReadRequest of the same selection, its frames and chunks decoded back to the pushed samples.

Skipped when ``/usr/bin/prometheus`` (``make peers``) is not installed.
"""

from __future__ import annotations

import signal
import struct
import time

import httpx
import pytest
import snappy

from conftest import PROMETHEUS, Daemon, RecordingProxy, remote_write, running_prometheus
from mimird import prompb
from mimird._fast.crc32c import crc32c
from mimird._fast.varint import decode_uvarint
from mimird._fast.xorchunk import decode

pytestmark = pytest.mark.slow

TENANT = "reader"  # the configured header, which 2.42 leaves out
STEP_MS = 15_000
SAMPLES_PER_SERIES = 121  # 30 minutes at 15 s; more than one 120-sample chunk in the streamed answer
# The data ends a few minutes before now on a whole step, so that Prometheus's query grid can sit on it.
END_MS = (int(time.time() * 1000) // 60_000 - 3) * 60_000
START_MS = END_MS - (SAMPLES_PER_SERIES - 1) * STEP_MS


def make_series() -> dict[tuple, list[tuple[int, float]]]:
    """Six series of two metrics; values distinct per series and sample, some non-integral."""
    series = {}
    for host_index, host in enumerate(("a", "b", "c")):
        for metric_index, metric in enumerate(("rr_cpu_seconds_total", "rr_temperature")):
            labels = (("__name__", metric), ("host", host), ("zone", "z1" if host != "c" else "z2"))
            series[labels] = [(START_MS + i * STEP_MS, host_index * 1000 + metric_index * 0.25 + i * 1.5)
                              for i in range(SAMPLES_PER_SERIES)]
    return series


SERIES = make_series()


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(mimird, proxy, prometheus URL): mimird holds the data, Prometheus reads it through the proxy."""
    if not PROMETHEUS.exists():
        pytest.skip("/usr/bin/prometheus is not installed (make peers)")
    mimird = Daemon(tmp_path_factory.mktemp("mimird"), ["-auth.multitenancy-enabled=false"]).start()
    proxy = RecordingProxy(mimird.url)
    workdir = tmp_path_factory.mktemp("prometheus")
    config = ("global:\n  scrape_interval: 15s\nscrape_configs: []\nremote_read:\n"
              f"  - url: {proxy.url}/prometheus/api/v1/read\n    read_recent: true\n"
              f"    headers:\n      X-Scope-OrgID: {TENANT}\n")
    try:
        with running_prometheus(workdir, config) as url:
            response = remote_write(mimird, None, SERIES)
            assert response.status_code == 200, response.text
            yield mimird, proxy, url
    finally:
        proxy.close()
        mimird.stop(signal.SIGKILL)


def read_requests(proxy: RecordingProxy) -> list[prompb.ReadRequest]:
    """The ReadRequests Prometheus sent through the proxy, in order."""
    requests = []
    for _, body in proxy.received:
        request = prompb.ReadRequest()
        request.ParseFromString(snappy.uncompress(body))
        requests.append(request)
    return requests


def prometheus_query(url: str, path: str, **params) -> list[dict]:
    response = httpx.get(url + path, params=params, timeout=20)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", body
    assert not body.get("warnings"), body
    return body["data"]["result"]


def labels_key(metric: dict) -> tuple:
    return tuple(sorted(metric.items()))


def test_instant_range_selector_returns_every_pushed_sample(stores):
    mimird, proxy, url = stores
    before = len(read_requests(proxy))
    # a 31-minute window at the data's end holds all 121 samples
    result = prometheus_query(url, "/api/v1/query", query='{__name__=~"rr_.*"}[31m]', time=END_MS / 1000)
    got = {labels_key(item["metric"]): [(round(float(t) * 1000), float(v)) for t, v in item["values"]]
           for item in result}
    assert got == SERIES
    # Prometheus 2.42's client asks for no response type: the server answers SAMPLES
    assert len(read_requests(proxy)) > before
    for request in read_requests(proxy)[before:]:
        assert list(request.accepted_response_types) == []


def test_instant_query_with_matchers_and_function(stores):
    _, proxy, url = stores
    result = prometheus_query(url, "/api/v1/query", query='rr_temperature{zone="z1",host!="b"}',
                              time=END_MS / 1000 + 30)
    assert {labels_key(item["metric"]): item["value"] for item in result} == {
        (("__name__", "rr_temperature"), ("host", "a"), ("zone", "z1")):
            [END_MS / 1000 + 30, repr(0.25 + 120 * 1.5)]}
    result = prometheus_query(url, "/api/v1/query", query='sum by (zone) (rr_cpu_seconds_total)', time=END_MS / 1000)
    assert {item["metric"]["zone"]: float(item["value"][1]) for item in result} == {
        "z1": 0 + 1000 + 2 * 120 * 1.5, "z2": 2000 + 120 * 1.5}
    # the selector's matchers travel in the read request
    wanted = {(m.type, m.name, m.value) for request in read_requests(proxy) for q in request.queries for m in q.matchers}
    assert {(0, "zone", "z1"), (1, "host", "b"), (0, "__name__", "rr_temperature")} <= wanted


def test_query_range_on_the_sample_grid(stores):
    _, _, url = stores
    result = prometheus_query(url, "/api/v1/query_range", query='{__name__=~"rr_.*"}', start=START_MS / 1000,
                              end=END_MS / 1000, step=STEP_MS / 1000)
    got = {labels_key(item["metric"]): [(round(float(t) * 1000), float(v)) for t, v in item["values"]]
           for item in result}
    assert got == SERIES
    # a sub-range, off the grid: every step takes the latest sample at or before it
    start, end = START_MS + 7_500, START_MS + 20 * STEP_MS + 7_500
    result = prometheus_query(url, "/api/v1/query_range", query="rr_cpu_seconds_total{host='b'}",
                              start=start / 1000, end=end / 1000, step=STEP_MS / 1000)
    assert len(result) == 1
    samples = SERIES[(("__name__", "rr_cpu_seconds_total"), ("host", "b"), ("zone", "z1"))]
    expected = [(start + i * STEP_MS, samples[i][1]) for i in range(21)]
    assert [(round(float(t) * 1000), float(v)) for t, v in result[0]["values"]] == expected


def test_no_data_outside_the_pushed_range(stores):
    _, _, url = stores
    assert prometheus_query(url, "/api/v1/query", query="rr_temperature", time=START_MS / 1000 - 3600) == []
    assert prometheus_query(url, "/api/v1/query", query="rr_nonexistent", time=END_MS / 1000) == []


def test_prometheus_2_42_sends_no_configured_headers(stores):
    _, proxy, url = stores
    prometheus_query(url, "/api/v1/query", query="rr_temperature", time=END_MS / 1000)
    assert proxy.headers
    for headers in proxy.headers:
        assert "x-scope-orgid" not in headers
        assert headers["x-prometheus-remote-read-version"] == "0.1.0"
        assert headers["content-encoding"] == "snappy"


def read_frames(body: bytes) -> list[prompb.ChunkedReadResponse]:
    """Split a STREAMED_XOR_CHUNKS body into its messages, checking each frame's CRC32-Castagnoli."""
    messages, position = [], 0
    while position < len(body):
        size, position = decode_uvarint(body, position)
        (checksum,) = struct.unpack(">I", body[position:position + 4])
        message = body[position + 4:position + 4 + size]
        assert crc32c(message) == checksum
        position += 4 + size
        decoded = prompb.ChunkedReadResponse()
        decoded.ParseFromString(message)
        messages.append(decoded)
    return messages


@pytest.mark.parametrize("response_type", [0, 1], ids=["SAMPLES", "STREAMED_XOR_CHUNKS"])
def test_direct_read_request_both_response_types(stores, response_type):
    """The same selection Prometheus made, asked directly for each response type."""
    mimird, proxy, url = stores
    if not read_requests(proxy):  # run on its own: let Prometheus read once, as the tests before it do
        prometheus_query(url, "/api/v1/query", query="rr_temperature", time=END_MS / 1000)
    assert read_requests(proxy), "Prometheus sent no read request"
    request = prompb.ReadRequest()
    query = request.queries.add(start_timestamp_ms=START_MS, end_timestamp_ms=END_MS)
    query.matchers.add(type=2, name="__name__", value="rr_.*")
    request.accepted_response_types.append(response_type)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Read-Version": "0.1.0"}
    response = mimird.post("/prometheus/api/v1/read", content=snappy.compress(request.SerializeToString()),
                           headers=headers)
    assert response.status_code == 200, response.text
    got = {}
    if response_type == 0:
        decoded = prompb.ReadResponse()
        decoded.ParseFromString(snappy.uncompress(response.content))
        for series in decoded.results[0].timeseries:
            labels = tuple((label.name, label.value) for label in series.labels)
            got[labels] = [(sample.timestamp, sample.value) for sample in series.samples]
    else:
        assert response.headers["content-type"].startswith("application/x-streamed-protobuf")
        for message in read_frames(response.content):
            assert message.query_index == 0
            for series in message.chunked_series:
                labels = tuple((label.name, label.value) for label in series.labels)
                samples = got.setdefault(labels, [])
                assert [chunk.type for chunk in series.chunks] == [1] * len(series.chunks)
                for chunk in series.chunks:
                    ts, vals = decode(chunk.data)
                    assert (int(ts[0]), int(ts[-1])) == (chunk.min_time_ms, chunk.max_time_ms)
                    samples.extend(zip(ts.tolist(), vals.tolist(), strict=True))
    assert got == SERIES
    assert list(got) == sorted(SERIES)
