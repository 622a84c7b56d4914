"""OTLP ingestion: the real OpenTelemetry SDK against the daemon, hand-built protobuf and JSON bodies,
compression, the error answers, and the translator's rules unit by unit."""

from __future__ import annotations

import base64
import gzip
import json
import math
import signal
import struct
import time
from pathlib import Path

import pytest

from conftest import Daemon
from mimird import otlpb
from mimird.distributor import otlp
from mimird.tsdb.labels import Matcher, MatchType

TENANT = "otel"
MAX_SIZE = 200_000
NOW_NS = time.time_ns()
NOW_MS = NOW_NS // 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("otlp")
    (workdir / "runtime.yaml").write_text(
        "overrides:\n"
        "  limited:\n    ingestion_rate: 1\n    ingestion_burst_size: 5\n"
        "  exemplars:\n    max_global_exemplars_per_user: 100\n"
        "  suffixed:\n    otel_metric_suffixes_enabled: true\n"
        "    promote_otel_resource_attributes: [k8s.namespace.name]\n")
    proc = Daemon(workdir, [f"-distributor.max-otlp-request-size={MAX_SIZE}", "-runtime-config.file=runtime.yaml"]).start()
    yield proc
    proc.stop(signal.SIGKILL)


def stored_samples(daemon: Daemon, tenant: str) -> dict[tuple, list[tuple[int, float]]]:
    """Flush the tenant's head and read every series with its samples back from the shipped blocks."""
    from mimird.tsdb.block import BlockReader

    assert daemon.post(f"/ingester/flush?wait=true&tenant={tenant}").status_code == 204
    found: dict[tuple, list] = {}
    for meta in (Path(daemon.workdir) / "data" / "blocks" / tenant).glob("*/meta.json"):
        with BlockReader(meta.parent) as reader:
            for labels, ts, values in reader.read_series_samples([Matcher(MatchType.NOT_EQUAL, "__name__", "")]):
                found.setdefault(tuple(labels), []).extend(zip(ts.tolist(), values.tolist(), strict=True))
    return found


def by_name(samples: dict, name: str) -> dict[tuple, list]:
    return {labels: values for labels, values in samples.items() if dict(labels)["__name__"] == name}


def kv(key: str, value) -> otlpb.KeyValue:
    pair = otlpb.KeyValue(key=key)
    if isinstance(value, bool):
        pair.value.bool_value = value
    elif isinstance(value, int):
        pair.value.int_value = value
    elif isinstance(value, float):
        pair.value.double_value = value
    else:
        pair.value.string_value = value
    return pair


def new_request(resource: dict | None = None):
    """A request with one ResourceMetrics and one ScopeMetrics; returns (request, scope metrics)."""
    request = otlpb.ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    for key, value in (resource or {}).items():
        resource_metrics.resource.attributes.append(kv(key, value))
    return request, resource_metrics.scope_metrics.add()


def post(daemon: Daemon, body: bytes, content_type: str = "application/x-protobuf", tenant: str = TENANT,
         **headers):
    return daemon.post("/otlp/v1/metrics", content=body,
                       headers={"Content-Type": content_type, "X-Scope-OrgID": tenant, **headers})


def status_of(response) -> tuple[int, str]:
    status = otlpb.Status()
    if response.headers["content-type"] == "application/json":
        payload = response.json()
        return payload.get("code", 0), payload.get("message", "")
    status.ParseFromString(response.content)
    return status.code, status.message


# ---------------------------------------------------------------------------------------------------
# The OpenTelemetry SDK end to end

def test_sdk_export_counters_gauges_histograms(server):
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(endpoint=server.url + "/otlp/v1/metrics", headers={"X-Scope-OrgID": "sdk"})
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": "checkout", "service.namespace": "shop",
                                "service.instance.id": "i-1", "deployment.environment": "test"})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("test-meter", "1.0")
    orders = meter.create_counter("orders.placed", unit="{order}", description="Orders placed")
    orders.add(3, {"payment.method": "card"})
    orders.add(2, {"payment.method": "card"})
    queue = meter.create_up_down_counter("queue.size")
    queue.add(5)
    queue.add(-2)
    meter.create_observable_gauge("cpu.temperature", callbacks=[lambda options: [Observation(42.5, {"core": "0"})]])
    latency = meter.create_histogram("http.server.duration", unit="s")
    for value in (0.05, 0.3, 7):
        latency.record(value, {"route": "/pay"})
    assert provider.force_flush(10_000)
    provider.shutdown()

    samples = stored_samples(server, "sdk")
    identity = {"job": "shop/checkout", "instance": "i-1"}

    (labels, values), = by_name(samples, "orders_placed").items()
    assert dict(labels) == {"__name__": "orders_placed", "payment_method": "card", **identity}
    assert values[-1][1] == 5.0
    assert abs(values[-1][0] - time.time() * 1000) < 60_000
    (labels, values), = by_name(samples, "queue_size").items()
    assert dict(labels) == {"__name__": "queue_size", **identity} and values[-1][1] == 3.0
    (labels, values), = by_name(samples, "cpu_temperature").items()
    assert dict(labels) == {"__name__": "cpu_temperature", "core": "0", **identity} and values[-1][1] == 42.5

    buckets = {dict(labels)["le"]: values[-1][1] for labels, values in by_name(samples, "http_server_duration_bucket").items()}
    assert buckets["0"] == 0 and buckets["5"] == 2 and buckets["10"] == 3 and buckets["+Inf"] == 3
    assert list(by_name(samples, "http_server_duration_count").values())[0][-1][1] == 3
    assert list(by_name(samples, "http_server_duration_sum").values())[0][-1][1] == pytest.approx(7.35)
    for labels in by_name(samples, "http_server_duration_bucket"):
        assert dict(labels)["route"] == "/pay" and dict(labels)["job"] == "shop/checkout"

    (labels, values), = by_name(samples, "target_info").items()
    info = dict(labels)
    assert info["deployment_environment"] == "test" and info["telemetry_sdk_language"] == "python"
    assert info["job"] == "shop/checkout" and info["instance"] == "i-1"
    assert "service_name" not in info and "service_instance_id" not in info
    assert all(value == 1.0 for _, value in values)


# ---------------------------------------------------------------------------------------------------
# Hand-built bodies through the daemon

def every_type_request():
    request, scope = new_request({"service.name": "svc", "host.name": "h1"})
    gauge = scope.metrics.add(name="temp.celsius", description="temperature", unit="Cel")
    gauge.gauge.data_points.add(time_unix_nano=NOW_NS, as_double=21.5).attributes.append(kv("room", "a"))
    gauge.gauge.data_points.add(time_unix_nano=NOW_NS, as_int=7).attributes.append(kv("room", "b"))
    counter = scope.metrics.add(name="jobs.done")
    counter.sum.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE
    counter.sum.is_monotonic = True
    point = counter.sum.data_points.add(time_unix_nano=NOW_NS, as_int=12)
    exemplar = point.exemplars.add(time_unix_nano=NOW_NS, as_double=1.0, trace_id=bytes(range(1, 17)),
                                   span_id=bytes(range(1, 9)))
    exemplar.filtered_attributes.append(kv("user", "u1"))
    updown = scope.metrics.add(name="conns")
    updown.sum.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE
    updown.sum.data_points.add(time_unix_nano=NOW_NS, as_double=-4)
    histogram = scope.metrics.add(name="rpc.latency")
    histogram.histogram.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE
    histogram.histogram.data_points.add(time_unix_nano=NOW_NS, count=6, sum=3.5, explicit_bounds=[0.25, 1],
                                        bucket_counts=[1, 2, 3])
    summary = scope.metrics.add(name="gc.pause")
    summary.summary.data_points.add(time_unix_nano=NOW_NS, count=4, sum=0.8).quantile_values.add(
        quantile=0.99, value=0.4)
    stale = scope.metrics.add(name="gone")
    stale.gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1, flags=1)
    return request


def expected_every_type() -> dict[tuple, float]:
    base = {"job": "svc"}

    def key(**labels):
        return tuple(sorted({**base, **labels}.items()))

    return {
        key(__name__="temp_celsius", room="a"): 21.5,
        key(__name__="temp_celsius", room="b"): 7.0,
        key(__name__="jobs_done"): 12.0,
        key(__name__="conns"): -4.0,
        key(__name__="rpc_latency_bucket", le="0.25"): 1.0,
        key(__name__="rpc_latency_bucket", le="1"): 3.0,
        key(__name__="rpc_latency_bucket", le="+Inf"): 6.0,
        key(__name__="rpc_latency_count"): 6.0,
        key(__name__="rpc_latency_sum"): 3.5,
        key(__name__="gc_pause", quantile="0.99"): 0.4,
        key(__name__="gc_pause_count"): 4.0,
        key(__name__="gc_pause_sum"): 0.8,
        key(__name__="gone"): math.nan,
        # No instance, but a job and a descriptive attribute: target_info is emitted.
        tuple(sorted({"__name__": "target_info", "job": "svc", "host_name": "h1"}.items())): 1.0,
    }


def check_stored(samples: dict, expected: dict) -> None:
    assert set(samples) == set(expected)
    for labels, value in expected.items():
        (t, stored), = samples[labels]
        assert t == NOW_MS
        if math.isnan(value):
            assert struct.pack("<d", stored) == struct.pack("<Q", 0x7FF0000000000002)
        else:
            assert stored == value


def test_protobuf_body_every_type(server):
    response = post(server, every_type_request().SerializeToString())
    assert response.status_code == 200, response.content
    assert response.headers["content-type"] == "application/x-protobuf"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == b""  # an empty ExportMetricsServiceResponse
    check_stored(stored_samples(server, TENANT), expected_every_type())


def test_exemplars_and_metadata_reach_the_read_path(server):
    assert post(server, every_type_request().SerializeToString(), tenant="exemplars").status_code == 200
    headers = {"X-Scope-OrgID": "exemplars"}
    window = {"start": (NOW_MS - 60_000) / 1000, "end": (NOW_MS + 60_000) / 1000}
    found = server.get("/prometheus/api/v1/query_exemplars", params={"query": "jobs_done", **window},
                       headers=headers).json()["data"]
    (entry,) = found
    assert entry["seriesLabels"] == {"__name__": "jobs_done", "job": "svc"}
    (exemplar,) = entry["exemplars"]
    assert exemplar["labels"] == {"trace_id": bytes(range(1, 17)).hex(), "span_id": bytes(range(1, 9)).hex(),
                                  "user": "u1"}
    assert float(exemplar["value"]) == 1.0
    metadata = server.get("/prometheus/api/v1/metadata", headers=headers).json()["data"]
    assert metadata["temp_celsius"] == [{"type": "gauge", "help": "temperature", "unit": "Cel"}]
    assert {name: entries[0]["type"] for name, entries in metadata.items()} == {
        "temp_celsius": "gauge", "jobs_done": "counter", "conns": "gauge", "rpc_latency": "histogram",
        "gc_pause": "summary", "gone": "gauge"}


def test_json_body_gzip(server):
    document = {"resourceMetrics": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}},
                                    {"key": "host.name", "value": {"stringValue": "h1"}}]},
        "scopeMetrics": [{"scope": {"name": "s"}, "metrics": [
            {"name": "temp.celsius", "unit": "Cel", "gauge": {"dataPoints": [
                {"attributes": [{"key": "room", "value": {"stringValue": "a"}}],
                 "timeUnixNano": str(NOW_NS), "asDouble": 21.5},
                {"attributes": [{"key": "room", "value": {"stringValue": "b"}}],
                 "timeUnixNano": str(NOW_NS), "asInt": "7"}]}},
            {"name": "jobs.done", "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": [
                {"timeUnixNano": str(NOW_NS), "asInt": "12", "exemplars": [
                    {"timeUnixNano": str(NOW_NS), "asDouble": 1, "traceId": bytes(range(1, 17)).hex(),
                     "spanId": bytes(range(1, 9)).hex()}]}]}},
            {"name": "conns", "sum": {"aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                                      "dataPoints": [{"timeUnixNano": str(NOW_NS), "asDouble": -4}]}},
            {"name": "rpc.latency", "histogram": {"aggregationTemporality": 2, "dataPoints": [
                {"timeUnixNano": str(NOW_NS), "count": "6", "sum": 3.5, "explicitBounds": [0.25, 1],
                 "bucketCounts": ["1", "2", "3"]}]}},
            {"name": "gc.pause", "summary": {"dataPoints": [
                {"timeUnixNano": str(NOW_NS), "count": "4", "sum": 0.8,
                 "quantileValues": [{"quantile": 0.99, "value": 0.4}]}]}},
            {"name": "gone", "gauge": {"dataPoints": [{"timeUnixNano": str(NOW_NS), "asDouble": 1, "flags": 1}]}},
            {"name": "ignored.field.test", "someFutureField": 1, "gauge": {"dataPoints": []}},
        ]}]}]}
    response = post(server, gzip.compress(json.dumps(document).encode()), "application/json",
                    tenant="json", **{"Content-Encoding": "gzip"})
    # The metric without data points is reported, the rest is stored.
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"code": 400,
                               "message": "otlp parse error: empty data points. ignored.field.test is dropped"}
    check_stored(stored_samples(server, "json"), expected_every_type())


def test_gzip_members_are_one_stream(server):
    body = every_type_request().SerializeToString()
    half = len(body) // 2
    response = post(server, gzip.compress(body[:half]) + gzip.compress(body[half:]), tenant="members",
                    **{"Content-Encoding": "gzip"})
    assert response.status_code == 200, response.content
    check_stored(stored_samples(server, "members"), expected_every_type())
    truncated = gzip.compress(body)[:-10]
    response = post(server, truncated, tenant="members", **{"Content-Encoding": "gzip"})
    assert response.status_code == 400 and status_of(response) == (400, "read write request: unexpected EOF")


def lz4_frame(payload: bytes) -> bytes:
    """An LZ4 frame holding `payload`: one compressed block (literals, then one overlapping match)."""
    assert payload == b"abc" * 40
    # token: 3 literals, match length 15 + extra; the match copies 117 bytes at offset 3.
    block = bytes([0x3F]) + b"abc" + bytes([3, 0]) + bytes([117 - 4 - 15])
    header = struct.pack("<I", 0x184D2204) + bytes([0x60, 0x40, 0x82])
    return header + struct.pack("<I", len(block)) + block + struct.pack("<I", 0)


def test_lz4_frame_decoder():
    assert otlp.decompress_lz4_frame(lz4_frame(b"abc" * 40), 1000) == b"abc" * 40
    with pytest.raises(otlp.LZ4FrameError) as info:
        otlp.decompress_lz4_frame(lz4_frame(b"abc" * 40), 50)
    assert info.value.too_large
    stored = struct.pack("<I", 0x184D2204) + bytes([0x60, 0x40, 0x82]) + struct.pack("<I", 0x80000003) + b"xyz"
    assert otlp.decompress_lz4_frame(stored + struct.pack("<I", 0), 10) == b"xyz"
    with pytest.raises(otlp.LZ4FrameError):
        otlp.decompress_lz4_frame(b"\x00\x01\x02\x03", 10)


def test_lz4_body(server):
    request, scope = new_request()
    scope.metrics.add(name="lz4.metric").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=5)
    body = request.SerializeToString()
    frame = struct.pack("<I", 0x184D2204) + bytes([0x60, 0x40, 0x82]) + struct.pack("<I", 0x80000000 | len(body))
    response = post(server, frame + body + struct.pack("<I", 0), tenant="lz4", **{"Content-Encoding": "lz4"})
    assert response.status_code == 200, response.content
    assert by_name(stored_samples(server, "lz4"), "lz4_metric")


GAUGE_WITH_BAD_VALUE = b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"gauge": ' \
    b'{"dataPoints": [{"asDouble": "x"}]}}]}]}]}'
EXEMPLAR_WITH_BAD_TRACE_ID = b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"sum": ' \
    b'{"dataPoints": [{"exemplars": [{"traceId": "zz"}]}]}}]}]}]}'


@pytest.mark.parametrize("content_type, encoding, body, status, message", [
    ("text/plain", None, b"", 415,
     "unsupported content type: text/plain, supported: [application/json, application/x-protobuf]"),
    ("application/json; charset=utf-8", None, b"{}", 415,
     "unsupported content type: application/json; charset=utf-8, supported: [application/json, "
     "application/x-protobuf]"),
    ("application/x-protobuf", "br", b"", 415,
     'unsupported compression: br. Only "gzip", "lz4", or no compression supported'),
    ("application/x-protobuf", None, b"\x0a\x05\x01", 400, None),
    ("application/json", None, b"{not json", 400, None),
    ("application/json", None, b'{"resourceMetrics": 5}', 400, None),
    ("application/json", None, b"[]", 400, "ReadObjectCB: expect { or n, but found ["),
    ("application/json", None, GAUGE_WITH_BAD_VALUE, 400, None),
    ("application/json", None, EXEMPLAR_WITH_BAD_TRACE_ID, 400, "parse traceId: invalid hex id 'zz'"),
    ("application/x-protobuf", "gzip", b"not gzip", 400, None),
])
def test_bad_bodies(server, content_type, encoding, body, status, message):
    headers = {"Content-Encoding": encoding} if encoding else {}
    response = post(server, body, content_type, tenant="bad", **headers)
    assert response.status_code == status
    code, text = status_of(response)
    assert code == status  # parse errors carry the HTTP status in the Status code, as httpgrpc errors do
    if message is not None:
        assert text == message
    expected_type = "application/json" if content_type == "application/json" else "application/x-protobuf"
    assert response.headers["content-type"] == expected_type


def test_size_limits(server):
    request, scope = new_request()
    metric = scope.metrics.add(name="big")
    for index in range(8000):
        metric.gauge.data_points.add(time_unix_nano=NOW_NS, as_double=index).attributes.append(kv("i", str(index)))
    body = request.SerializeToString()
    assert len(body) > MAX_SIZE
    response = post(server, body, tenant="big")
    assert response.status_code == 413
    assert status_of(response) == (413, (
        f"the incoming OTLP request has been rejected because its message size of {len(body)} bytes is larger "
        f"than the allowed limit of {MAX_SIZE} bytes (err-mimir-distributor-max-otlp-request-size). To adjust "
        "the related limit, configure -distributor.max-otlp-request-size, or contact your service administrator."))
    compressed = gzip.compress(body)
    assert len(compressed) < MAX_SIZE
    response = post(server, compressed, tenant="big", **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "its message size is larger than the allowed limit" in status_of(response)[1]


def test_untranslatable_metrics_only(server):
    request, scope = new_request()
    delta = scope.metrics.add(name="delta.sum")
    delta.sum.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_DELTA
    delta.sum.data_points.add(time_unix_nano=NOW_NS, as_int=1)
    exponential = scope.metrics.add(name="exp.hist")
    exponential.exponential_histogram.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE
    exponential.exponential_histogram.data_points.add(time_unix_nano=NOW_NS, count=1, scale=2)
    response = post(server, request.SerializeToString(), tenant="untranslatable")
    assert response.status_code == 400
    assert status_of(response) == (400, (
        'otlp parse error: invalid temporality and type combination for metric "delta.sum"; exponential '
        "histogram exp.hist is dropped: native histograms are not supported by this server"))


def test_validation_error_is_a_status(server):
    request, scope = new_request()
    point = scope.metrics.add(name="dup").gauge.data_points.add(time_unix_nano=NOW_NS + 3_600_000_000_000, as_double=1)
    point.attributes.append(kv("a", "b"))
    response = post(server, request.SerializeToString(), tenant="future")
    assert response.status_code == 400
    code, message = status_of(response)
    assert code == 3  # InvalidArgument
    assert "too far in the future" in message


def test_rate_limited_is_resource_exhausted(server):
    request, scope = new_request()
    for index in range(10):
        scope.metrics.add(name=f"m{index}").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=index)
    response = post(server, request.SerializeToString(), tenant="limited", **{"Retry-Attempt": "2"})
    assert response.status_code == 429
    code, message = status_of(response)
    assert code == 8 and "ingestion burst size limit" in message
    assert 6 <= int(response.headers["retry-after"]) <= 24


def test_per_tenant_translation_options(server):
    request, scope = new_request({"service.name": "api", "k8s.namespace.name": "prod"})
    counter = scope.metrics.add(name="http.requests", unit="1")
    counter.sum.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE
    counter.sum.is_monotonic = True
    counter.sum.data_points.add(time_unix_nano=NOW_NS, as_int=4)
    body = request.SerializeToString()
    assert post(server, body, tenant="suffixed").status_code == 200
    assert post(server, body, tenant="plain").status_code == 200
    suffixed = {dict(labels)["__name__"]: dict(labels) for labels in stored_samples(server, "suffixed")}
    plain = {dict(labels)["__name__"]: dict(labels) for labels in stored_samples(server, "plain")}
    assert suffixed["http_requests_total"] == {"__name__": "http_requests_total", "job": "api",
                                               "k8s_namespace_name": "prod"}
    assert plain["http_requests"] == {"__name__": "http_requests", "job": "api"}
    assert set(suffixed) == {"http_requests_total", "target_info"}
    assert set(plain) == {"http_requests", "target_info"}


def test_null_and_empty_bodies_are_empty_requests(server):
    for body, content_type in ((b"null", "application/json"), (b"{}", "application/json"),
                               (b"", "application/x-protobuf")):
        response = post(server, body, content_type, tenant="empty")
        assert response.status_code == 200, (body, response.content)


def test_missing_tenant(server):
    response = server.post("/otlp/v1/metrics", content=b"", headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 401


# ---------------------------------------------------------------------------------------------------
# The translator

def translate(request, **settings):
    result = otlp.translate(request, otlp.TranslationSettings(**settings))
    series = {}
    for index, pairs in enumerate(result.series_pairs):
        series[pairs] = list(zip(result.timestamps[result.offsets[index]:result.offsets[index + 1]],
                                 result.values[result.offsets[index]:result.offsets[index + 1]], strict=True))
    return result, series


def test_metric_names_with_and_without_suffixes():
    cases = [
        ("http.server.duration", "s", "histogram", "http_server_duration", "http_server_duration_seconds"),
        ("requests", "1", "counter", "requests", "requests_total"),
        ("requests_total", "", "counter", "requests_total", "requests_total"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization", "cpu_utilization_ratio"),
        ("io", "By/s", "counter", "io", "io_bytes_per_second_total"),
        ("disk..used__x", "{block}", "updown", "disk_used__x", "disk_used_x"),
        ("2xx.responses", "", "gauge", "_2xx_responses", "_2xx_responses"),
        ("mem", "MiBy", "gauge", "mem", "mem_mebibytes"),
        ("latency_seconds", "s", "gauge", "latency_seconds", "latency_seconds"),
        ("weird", "foo.bar", "gauge", "weird", "weird_foo_bar"),
        ("bytes_per_second", "By/s", "gauge", "bytes_per_second", "bytes_per_second_per_second"),
        ("rate", "{req}/s", "gauge", "rate", "rate_per_second"),
    ]
    for name, unit, kind, plain, suffixed in cases:
        assert otlp.metric_name(name, unit, kind, False) == plain, name
        assert otlp.metric_name(name, unit, kind, True) == suffixed, name


def test_label_names_and_collisions():
    assert [otlp.normalize_label(name) for name in ("a.b-c", "1st", "_x", "__y", "ok", "é")] == \
        ["a_b_c", "key_1st", "key_x", "__y", "ok", "key_"]
    request, scope = new_request()
    point = scope.metrics.add(name="m").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1)
    for pair in (kv("a.b", "1"), kv("a-b", "2"), kv("flag", True), kv("n", 42), kv("f", 0.5)):
        point.attributes.append(pair)
    _, series = translate(request)
    (labels,) = series
    # Colliding keys are merged in sorted original-key order: "a-b" < "a.b".
    assert dict(labels) == {"__name__": "m", "a_b": "2;1", "flag": "true", "n": "42", "f": "0.5"}


def test_job_instance_promotion_and_target_info():
    request, scope = new_request({"service.name": "api", "service.instance.id": "pod-1", "k8s.pod.name": "p",
                                  "cloud.region": "eu"})
    for offset_s in (0, 400):
        scope.metrics.add(name="g").gauge.data_points.add(time_unix_nano=NOW_NS + offset_s * 10**9, as_double=1)
    result, series = translate(request, promote_resource_attributes=("k8s.pod.name", "missing"))
    g_labels = [labels for labels in series if dict(labels)["__name__"] == "g"]
    assert [dict(labels) for labels in g_labels] == [
        {"__name__": "g", "job": "api", "instance": "pod-1", "k8s_pod_name": "p"}]
    (info, samples), = [(labels, s) for labels, s in series.items() if dict(labels)["__name__"] == "target_info"]
    assert dict(info) == {"__name__": "target_info", "job": "api", "instance": "pod-1", "k8s_pod_name": "p",
                          "cloud_region": "eu"}
    assert [t - NOW_MS for t, _ in samples] == [0, 150_000, 300_000, 400_000]
    _, series = translate(request, keep_identifying_resource_attributes=True)
    info = next(labels for labels in series if dict(labels)["__name__"] == "target_info")
    assert dict(info)["service_name"] == "api" and dict(info)["service_instance_id"] == "pod-1"
    # Only identifying attributes, or no job/instance: no target_info.
    for resource in ({"service.name": "api"}, {"host.name": "h"}):
        request, scope = new_request(resource)
        scope.metrics.add(name="g").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1)
        _, series = translate(request)
        assert all(dict(labels)["__name__"] != "target_info" for labels in series)


def test_gauge_exemplars_are_not_read():
    request, scope = new_request()
    point = scope.metrics.add(name="g").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1)
    point.exemplars.add(time_unix_nano=NOW_NS, as_double=1, trace_id=b"\x02" * 16)
    result, _ = translate(request)
    assert result.exemplars == []


def test_delta_temporality():
    request, scope = new_request()
    for kind in ("sum", "histogram"):
        metric = scope.metrics.add(name=f"delta.{kind}")
        getattr(metric, kind).aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_DELTA
        getattr(metric, kind).data_points.add(time_unix_nano=NOW_NS, **({"as_int": 3} if kind == "sum" else {"count": 3}))
    unspecified = scope.metrics.add(name="unspecified.sum")
    unspecified.sum.data_points.add(time_unix_nano=NOW_NS, as_int=1)
    result, series = translate(request)
    assert not series and result.errors == [
        'invalid temporality and type combination for metric "delta.sum"',
        'invalid temporality and type combination for metric "delta.histogram"',
        'invalid temporality and type combination for metric "unspecified.sum"']
    result, series = translate(request, allow_delta_temporality=True)
    assert {dict(labels)["__name__"] for labels in series} == {"delta_sum", "delta_histogram_count",
                                                               "delta_histogram_bucket"}
    assert [(kind, name) for kind, name, _, _ in result.metadata] == [(otlp.UNKNOWN, "delta_sum"),
                                                                       (otlp.UNKNOWN, "delta_histogram")]
    assert result.errors == ['invalid temporality and type combination for metric "unspecified.sum"']


def test_scope_promotion():
    request, scope = new_request({"service.name": "a"})
    scope.scope.name, scope.scope.version = "lib", "2.0"
    scope.scope.attributes.append(kv("tier", "gold"))
    scope.metrics.add(name="g").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1)
    _, series = translate(request, promote_scope_metadata=True)
    (labels,) = series
    assert dict(labels) == {"__name__": "g", "job": "a", "otel_scope_name": "lib", "otel_scope_version": "2.0",
                            "otel_scope_schema_url": "", "otel_scope_tier": "gold"}
    scope.scope.name = ""  # a nameless scope is not promoted
    _, series = translate(request, promote_scope_metadata=True)
    assert [dict(labels) for labels in series] == [{"__name__": "g", "job": "a"}]


def test_histogram_exemplars_go_to_the_first_bucket_that_holds_them():
    request, scope = new_request()
    metric = scope.metrics.add(name="h")
    metric.histogram.aggregation_temporality = otlpb.AGGREGATION_TEMPORALITY_CUMULATIVE
    point = metric.histogram.data_points.add(time_unix_nano=NOW_NS, count=3, explicit_bounds=[1, 5],
                                             bucket_counts=[1, 1, 1])
    point.exemplars.add(time_unix_nano=NOW_NS, as_double=0.5, trace_id=b"\x01" * 16)
    point.exemplars.add(time_unix_nano=NOW_NS, as_double=3)
    point.exemplars.add(time_unix_nano=NOW_NS, as_int=9).filtered_attributes.append(kv("k", "x" * 200))
    result, series = translate(request)
    names = [dict(pairs).get("le", dict(pairs)["__name__"]) for pairs in result.series_pairs]
    assert "h_sum" not in names  # no sum on the point
    placed = {names[index]: (labels, value) for index, labels, value, _ in result.exemplars}
    assert placed["1"] == ((("trace_id", "01" * 16),), 0.5)
    assert placed["5"] == ((), 3.0)
    assert placed["+Inf"] == ((), 9.0)  # attributes dropped: over 128 runes


def test_metadata_and_errors():
    result, _ = translate(every_type_request())
    assert (otlp.GAUGE, "temp_celsius", "temperature", "Cel") in result.metadata
    assert {(kind, name) for kind, name, _, _ in result.metadata} >= {
        (otlp.COUNTER, "jobs_done"), (otlp.GAUGE, "conns"), (otlp.HISTOGRAM, "rpc_latency"), (otlp.SUMMARY, "gc_pause")}
    assert result.error_message() is None
    request, scope = new_request()
    scope.metrics.add(name="nothing")
    scope.metrics.add(name="x" * 2000).gauge.SetInParent()
    result, series = translate(request)
    assert not series
    message = result.error_message()
    assert message.startswith("otlp parse error: could not get aggregation temporality for nothing as it has "
                              "unsupported metric type Empty; ")
    assert len(message) == len("otlp parse error: ") + otlp.MAX_ERROR_MESSAGE_LENGTH


def test_value_formatting():
    assert [otlp.go_format_float(v) for v in (0.5, 1.0, 1000.0, 1e-5, 2.5e-7, math.inf)] == \
        ["0.5", "1", "1000", "0.00001", "0.00000025", "+Inf"]
    value = otlpb.AnyValue()
    value.double_value = 1e21
    assert otlp.any_value_string(value) == "1e+21"
    value.double_value = 1e-7
    assert otlp.any_value_string(value) == "1e-7"
    value.kvlist_value.values.append(kv("b", 1))
    value.kvlist_value.values.append(kv("a", "<x>"))
    assert otlp.any_value_string(value) == '{"a":"\\u003cx\\u003e","b":1}'
    value = otlpb.AnyValue()
    value.bytes_value = b"\x00\xff"
    assert otlp.any_value_string(value) == "AP8="


def test_bad_ids_rejected():
    request, scope = new_request()
    point = scope.metrics.add(name="g").gauge.data_points.add(time_unix_nano=NOW_NS, as_double=1)
    point.exemplars.add(as_double=1, trace_id=b"short")
    with pytest.raises(otlp.OTLPDecodeError) as info:
        otlp.decode_request(request.SerializeToString(), "application/x-protobuf", None)
    assert info.value.status == 400


def test_json_bodies_are_written_as_go_writes_them():
    response = otlp.status_response("application/json", 400, 400, "bad <value> é")
    assert response.body == '{"code":400,"message":"bad \\u003cvalue\\u003e é"}'.encode()
    assert otlp.otlp_response("application/json", 200, otlpb.ExportMetricsServiceResponse()).body == b"{}"
    assert otlp.otlp_response("text/plain", 200, otlpb.ExportMetricsServiceResponse()).body == b""
    response = otlp.status_response(None, 503, otlp.GRPC_UNAVAILABLE, "down")
    assert response.header("Content-Type") == "application/x-protobuf"
    assert otlpb.Status.FromString(response.body) == otlpb.Status(code=14, message="down")


# ---------------------------------------------------------------------------------------------------
# The descriptors against the OpenTelemetry project's own generated classes

def _official_descriptors():
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.metrics.v1 import metrics_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    found = {}

    def walk(descriptor):
        found[descriptor.full_name] = descriptor
        for nested in descriptor.nested_types:
            walk(nested)

    for module in (common_pb2, resource_pb2, metrics_pb2, metrics_service_pb2):
        for descriptor in module.DESCRIPTOR.message_types_by_name.values():
            walk(descriptor)
    return found


def test_descriptors_match_opentelemetry_proto():
    official = _official_descriptors()
    ours_pool = otlpb.ExportMetricsServiceRequest.DESCRIPTOR.file.pool
    assert len(official) > 20
    for full_name, theirs in official.items():
        ours = ours_pool.FindMessageTypeByName(full_name)
        for field in theirs.fields:
            mine = ours.fields_by_name[field.name]
            assert (mine.number, mine.type, mine.is_repeated, mine.has_presence, mine.is_packed, mine.json_name) == \
                (field.number, field.type, field.is_repeated, field.has_presence, field.is_packed, field.json_name), \
                f"{full_name}.{field.name}"
            if field.message_type is not None:
                assert mine.message_type.full_name == field.message_type.full_name
            if field.containing_oneof is not None:
                assert mine.containing_oneof.name == field.containing_oneof.name


def test_official_messages_round_trip_through_ours():
    from google.protobuf import json_format
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    body = every_type_request().SerializeToString()
    theirs = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
    assert theirs.SerializeToString(deterministic=True) == otlpb.ExportMetricsServiceRequest.FromString(
        body).SerializeToString(deterministic=True)
    # Protobuf's JSON of the official classes is OTLP/JSON once the ids are spelled in hex.
    document = json_format.MessageToDict(theirs)
    for metric in document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
        for point in metric.get("sum", {}).get("dataPoints", []):
            for exemplar in point.get("exemplars", []):
                for key in ("traceId", "spanId"):
                    exemplar[key] = base64.b64decode(exemplar[key]).hex()
    decoded = otlp.decode_request(json.dumps(document).encode(), "application/json", None)
    assert decoded.SerializeToString(deterministic=True) == theirs.SerializeToString(deterministic=True)
