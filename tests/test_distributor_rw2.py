"""Remote write 2.0 and label values that are not UTF-8: the Cython decoder against protobuf classes
built from the v2 descriptors, and the push endpoint through the real daemon (Mimir 2.17's texts,
the X-Prometheus-Remote-Write-*-Written headers, metadata, one bad series dropped); then
max_exemplars_per_series_per_request and the distributor's instance limits (inflight pushes,
ingestion rate)."""

from __future__ import annotations

import struct
import time
from types import SimpleNamespace

import pytest
import snappy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributor_support import metric_value, module_daemon, now_ms, push, stored_series, uvarint
from mimird._fast.remotewrite import (
    METRIC_TYPE_COUNTER,
    METRIC_TYPE_GAUGE,
    METRIC_TYPE_HISTOGRAM,
    decode_write_request,
    decode_write_request_v2,
    metric_family_name,
)
from mimird.config.runtime import Overrides
from mimird.config.schema import load_config
from mimird.distributor.distributor import Distributor
from mimird.http.errors import HTTPError
from mimird.prompb import writev2


def bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def request_of(symbols, *series) -> writev2.Request:
    """A v2 Request; each series is a dict of TimeSeries fields (samples as [(ts, value)])."""
    request = writev2.Request(symbols=symbols)
    for fields in series:
        ts = request.timeseries.add(labels_refs=fields.get("refs", []))
        for t, value in fields.get("samples", ()):
            ts.samples.add(timestamp=t, value=value)
        for refs, value, t in fields.get("exemplars", ()):
            ts.exemplars.add(labels_refs=refs, value=value, timestamp=t)
        for schema, t in fields.get("histograms", ()):
            ts.histograms.add(schema=schema, timestamp=t, count_int=1, zero_count_int=1)
        if "metadata" in fields:
            mtype, help_ref, unit_ref = fields["metadata"]
            ts.metadata.type, ts.metadata.help_ref, ts.metadata.unit_ref = mtype, help_ref, unit_ref
        if "created" in fields:
            ts.created_timestamp = fields["created"]
    return request


def reference_v2(data: bytes) -> dict:
    """The protobuf classes' parse, walked into the WriteBatch layout with references resolved."""
    request = writev2.Request.FromString(data)
    symbols = list(request.symbols)

    def pairs(refs):
        return tuple((symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2))

    out = {"labels": [], "offsets": [0], "ts": [], "values": [], "exemplars": [], "histograms": [], "created": []}
    for index, series in enumerate(request.timeseries):
        out["labels"].append(pairs(series.labels_refs))
        for sample in series.samples:
            out["ts"].append(sample.timestamp)
            out["values"].append(bits(sample.value))
        out["offsets"].append(len(out["ts"]))
        for exemplar in series.exemplars:
            out["exemplars"].append((index, pairs(exemplar.labels_refs), bits(exemplar.value), exemplar.timestamp))
        for histogram in series.histograms:
            out["histograms"].append((index, histogram.schema, histogram.timestamp, histogram.count_int))
        out["created"].append(series.created_timestamp)
    return out


def comparable(batch) -> dict:
    return {
        "labels": batch.series_labels,
        "offsets": batch.sample_offsets.tolist(),
        "ts": batch.timestamps.tolist(),
        "values": [bits(v) for v in batch.values.tolist()],
        "exemplars": [(i, labels, bits(value), t) for i, labels, value, t in batch.exemplars],
        "histograms": [(i, h.schema, h.timestamp, h.count_int) for i, h in batch.histograms],
        "created": batch.created_timestamps.tolist(),
    }


# ---------------------------------------------------------------------------------------------------
# Decoder

_names = st.sampled_from(["__name__", "job", "le", "instance", "trace_id"])
_texts = st.text(min_size=0, max_size=6)


@st.composite
def v2_requests(draw):
    symbols = [""] + draw(st.lists(st.one_of(_names, _texts), min_size=1, max_size=8))
    ref = st.integers(0, len(symbols) - 1)
    series = []
    for _ in range(draw(st.integers(0, 4))):
        refs = [r for _ in range(draw(st.integers(0, 3))) for r in (draw(ref), draw(ref))]
        samples = draw(st.lists(st.tuples(st.integers(-(2**62), 2**62),
                                          st.floats(allow_nan=True, allow_infinity=True)), max_size=3))
        exemplars = [([r for _ in range(draw(st.integers(0, 2))) for r in (draw(ref), draw(ref))],
                      draw(st.floats(allow_nan=False)), draw(st.integers(0, 2**40)))
                     for _ in range(draw(st.integers(0, 2)))]
        histograms = [(draw(st.integers(-4, 8)), draw(st.integers(0, 2**40))) for _ in range(draw(st.integers(0, 2)))]
        fields = {"refs": refs, "samples": samples, "exemplars": exemplars, "histograms": histograms,
                  "created": draw(st.integers(0, 2**40))}
        if draw(st.booleans()):
            fields["metadata"] = (draw(st.integers(0, 7)), draw(ref), draw(ref))
        series.append(fields)
    return request_of(symbols, *series).SerializeToString()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v2_requests())
def test_v2_decodes_like_protobuf(data):
    assert comparable(decode_write_request_v2(data)) == reference_v2(data)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(v2_requests(), st.data())
def test_v2_truncations_and_corruptions_raise_value_error_or_decode(data, draw):
    for size in range(0, len(data), max(1, len(data) // 25)):
        try:
            decode_write_request_v2(data[:size])
        except ValueError:
            pass
    if data:
        corrupted = bytearray(data)
        corrupted[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
        try:
            decode_write_request_v2(bytes(corrupted))
        except ValueError:
            pass


def test_v2_symbols_may_follow_the_series_and_labels_are_shared():
    series = writev2.TimeSeries(labels_refs=[1, 2, 3, 4])
    series.samples.add(value=2.5, timestamp=7)
    body = b"\x2a" + bytes([series.ByteSize()]) + series.SerializeToString()
    body += writev2.Request(symbols=["", "__name__", "up", "job", "a"]).SerializeToString()
    batch = decode_write_request_v2(body + body[: 2 + series.ByteSize()])
    assert batch.series_labels == [(("__name__", "up"), ("job", "a"))] * 2
    assert batch.series_labels[0][1] is batch.series_labels[1][1]
    assert batch.timestamps.tolist() == [7, 7] and batch.values.tolist() == [2.5, 2.5]


@pytest.mark.parametrize(("request_message", "message"), [
    (request_of(["__name__", "up"], {"refs": [0, 1]}), "proto: Remote Write 2.0 symbols must start with empty string"),
    (request_of(["", "__name__", "up"], {"refs": [1, 2, 1]}), "proto: Remote Write 2.0 odd number of label references"),
    (request_of(["", "__name__", "up"], {"refs": [1, 3]}), "proto: Remote Write 2.0 invalid label reference"),
    (request_of(["", "__name__", "up"], {"refs": [1, 2], "exemplars": [([1], 1.0, 5)]}),
     "proto: Remote Write 2.0 odd number of exemplar label references"),
    (request_of(["", "__name__", "up"], {"refs": [1, 2], "exemplars": [([1, 9], 1.0, 5)]}),
     "proto: Remote Write 2.0 invalid exemplar label reference"),
    (request_of(["", "__name__", "up"], {"refs": [1, 2], "metadata": (1, 3, 0)}),
     "proto: Remote Write 2.0 invalid help reference"),
    (request_of(["", "__name__", "up"], {"refs": [1, 2], "metadata": (1, 0, 3)}),
     "proto: Remote Write 2.0 invalid unit reference"),
])
def test_v2_errors_carry_mimirs_texts(request_message, message):
    with pytest.raises(ValueError) as caught:
        decode_write_request_v2(request_message.SerializeToString())
    assert str(caught.value) == message


def test_v2_refuses_v1_fields_and_unpacked_label_references():
    v1_series = b"\x0a\x00"  # WriteRequest.timeseries (field 1), empty
    with pytest.raises(ValueError, match="^proto: Remote Write 1.0 field Timeseries in non-Remote Write 1.0 message$"):
        decode_write_request_v2(v1_series)
    with pytest.raises(ValueError, match="^proto: Remote Write 1.0 field Metadata in non-Remote Write 1.0 message$"):
        decode_write_request_v2(b"\x1a\x00")
    symbols = writev2.Request(symbols=["", "a"]).SerializeToString()
    unpacked = b"\x08\x01\x08\x01"  # labels_refs as two unpacked varints
    with pytest.raises(ValueError, match="^proto: Remote Write 2.0 odd number of label references$"):
        decode_write_request_v2(symbols + b"\x2a" + bytes([len(unpacked)]) + unpacked)
    with pytest.raises(ValueError, match=r"^unexpected EOF"):
        decode_write_request_v2(request_of(["", "a"], {"refs": [1, 1]}).SerializeToString()[:-1])


def test_v2_metadata_becomes_one_entry_per_family():
    symbols = ["", "__name__", "http_requests_total", "requests served", "temperature_celsius", "celsius",
               "latency_seconds_bucket", "le", "1", "latency_seconds_count", "latency help", "no_help"]
    request = request_of(
        symbols,
        {"refs": [1, 2], "metadata": (METRIC_TYPE_COUNTER, 3, 0)},
        {"refs": [1, 2], "metadata": (METRIC_TYPE_COUNTER, 10, 0)},  # same family again: first kept
        {"refs": [1, 4], "metadata": (METRIC_TYPE_GAUGE, 0, 5)},
        {"refs": [1, 6, 7, 8], "metadata": (METRIC_TYPE_HISTOGRAM, 10, 0)},
        {"refs": [1, 9], "metadata": (METRIC_TYPE_HISTOGRAM, 0, 0)},  # the same histogram family
        {"refs": [1, 11], "metadata": (0, 0, 0)},  # says nothing: dropped
        {"refs": [7, 8], "metadata": (METRIC_TYPE_GAUGE, 3, 0)},  # no metric name: dropped
    )
    batch = decode_write_request_v2(request.SerializeToString())
    assert batch.metadata == [
        (METRIC_TYPE_COUNTER, "http_requests", "requests served", ""),
        (METRIC_TYPE_GAUGE, "temperature_celsius", "", "celsius"),
        (METRIC_TYPE_HISTOGRAM, "latency_seconds", "latency help", ""),
    ]
    assert metric_family_name("_total", METRIC_TYPE_COUNTER) == "_total"
    assert metric_family_name("x_total", METRIC_TYPE_GAUGE) == "x_total"


def test_v1_and_v2_keep_label_bytes_that_are_not_utf8():
    v2 = writev2.Request(symbols=["", "__name__", "up", "job"])
    v2.symbols.append("x")
    raw = v2.SerializeToString().replace(b"\x01x", b"\x01\xff")
    series = writev2.TimeSeries(labels_refs=[1, 2, 3, 4]).SerializeToString()
    batch = decode_write_request_v2(raw + b"\x2a" + bytes([len(series)]) + series)
    assert batch.series_labels == [(("__name__", "up"), ("job", "\udcff"))]
    label = b"\x0a\x03job\x12\x01\xff"
    v1 = b"\x0a" + bytes([len(label) + 2]) + b"\x0a" + bytes([len(label)]) + label
    assert decode_write_request(v1).series_labels == [(("job", "\udcff"),)]


# ---------------------------------------------------------------------------------------------------
# Through the daemon

RUNTIME = """
overrides:
  ex:
    max_global_exemplars_per_user: 100
  ex2:
    max_global_exemplars_per_user: 100
    max_exemplars_per_series_per_request: 2
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from module_daemon(tmp_path_factory, "rw2", [], RUNTIME)


def push_v2(daemon, tenant: str, request: writev2.Request):
    headers = {"Content-Type": writev2.CONTENT_TYPE, "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "2.0.0", "X-Scope-OrgID": tenant}
    return daemon.post("/api/v1/push", content=snappy.compress(request.SerializeToString()), headers=headers)


def written(response) -> tuple[int, int, int]:
    return tuple(int(response.headers[f"x-prometheus-remote-write-{kind}-written"])
                 for kind in ("samples", "histograms", "exemplars"))


def test_v2_push_stores_samples_metadata_and_exemplars(d):
    now = now_ms()
    symbols = ["", "__name__", "rw2_requests_total", "job", "api", "Requests.", "trace_id", "abc", "rw2_hist"]
    request = request_of(
        symbols,
        {"refs": [3, 4, 1, 2], "samples": [(now - 1000, 1.0), (now, 2.0)], "exemplars": [([6, 7], 2.0, now)],
         "metadata": (METRIC_TYPE_COUNTER, 5, 0), "created": now - 60_000},
        {"refs": [1, 8], "histograms": [(0, now)]},
    )
    response = push_v2(d, "ex", request)
    assert response.status_code == 200, response.text
    assert response.text == ""
    assert written(response) == (2, 1, 1)
    assert (("__name__", "rw2_requests_total"), ("job", "api")) in stored_series(d, "ex")
    metadata = d.get("/prometheus/api/v1/metadata", headers={"X-Scope-OrgID": "ex"}).json()["data"]
    assert metadata["rw2_requests"] == [{"type": "counter", "help": "Requests.", "unit": ""}]


def test_v2_decode_errors_are_400_with_mimirs_text(d):
    response = push_v2(d, "t1", request_of(["__name__", "up"], {"refs": [0, 1], "samples": [(now_ms(), 1.0)]}))
    assert response.status_code == 400
    assert response.text == "proto: Remote Write 2.0 symbols must start with empty string\n"
    assert written(response) == (0, 0, 0)
    response = push_v2(d, "t1", request_of(["", "__name__", "up"], {"refs": [1, 7]}))
    assert (response.status_code, response.text) == (400, "proto: Remote Write 2.0 invalid label reference\n")


def test_v2_partial_rejection_still_reports_what_was_written(d):
    now = now_ms()
    request = request_of(["", "__name__", "ok_metric", "1bad"],
                         {"refs": [1, 2], "samples": [(now, 1.0)]},
                         {"refs": [1, 3], "samples": [(now, 1.0)]})
    response = push_v2(d, "t2", request)
    assert response.status_code == 400
    assert response.text == "received a series with invalid metric name: '1bad' (err-mimir-metric-name-invalid)\n"
    assert written(response) == (1, 0, 0)
    # exemplars are not even decoded for a tenant that may not store them
    request = request_of(["", "__name__", "ok_metric", "trace_id", "x"],
                         {"refs": [1, 2], "samples": [(now + 1, 1.0)], "exemplars": [([3, 4], 1.0, now)]})
    response = push_v2(d, "t2", request)
    assert response.status_code == 200 and written(response) == (1, 0, 0)


def test_v1_push_has_no_written_headers(d):
    response = push(d, "t3", [((("__name__", "v1_metric"),), [(now_ms(), 1.0)])])
    assert response.status_code == 200
    assert "x-prometheus-remote-write-samples-written" not in response.headers


def raw_v1_body(series: list[list[tuple[bytes, bytes]]], ts: int) -> bytes:
    """A v1 body with label bytes as given (protobuf's classes refuse strings that are not UTF-8)."""
    def field(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    body = b""
    for labels in series:
        sample = b"\x09" + struct.pack("<d", 1.0) + b"\x10" + uvarint(ts)
        payload = b"".join(field(1, field(1, n) + field(2, v)) for n, v in labels) + field(2, sample)
        body += field(1, payload)
    return snappy.compress(body)



def test_invalid_utf8_label_value_drops_only_that_series(d):
    body = raw_v1_body([[(b"__name__", b"utf8_ok")],
                        [(b"__name__", b"utf8_bad"), (b"job", b"caf\xe9\xff!")]], now_ms())
    before = metric_value(d, "cortex_discarded_samples_total", reason="label_value_invalid", user="t4")
    response = d.post("/api/v1/push", content=body, headers={"Content-Type": "application/x-protobuf",
                                                             "X-Scope-OrgID": "t4"})
    assert response.status_code == 400
    assert response.text == ("received a series with invalid value in label 'job': 'caf\ufffd!' "
                             "metric: 'utf8_bad' (err-mimir-label-value-invalid)\n")
    assert stored_series(d, "t4") == {(("__name__", "utf8_ok"),)}
    assert metric_value(d, "cortex_discarded_samples_total", reason="label_value_invalid", user="t4") == before + 1


def test_invalid_utf8_label_name_is_refused_with_its_bytes(d):
    # Mimir formats the name into the message as it came; the answer used to fail while being encoded, and
    # the connection was dropped without one.
    body = raw_v1_body([[(b"__name__", b"utf8_name_ok")],
                        [(b"__name__", b"utf8_name_bad"), (b"j\xf0b", b"x")]], now_ms())
    response = d.post("/api/v1/push", content=body, headers={"Content-Type": "application/x-protobuf",
                                                             "X-Scope-OrgID": "t4b"})
    assert response.status_code == 400
    assert response.content == (b"received a series with an invalid label: 'j\xf0b' series: "
                                b"'utf8_name_bad{j\xf0b=\"x\"}' (err-mimir-label-invalid)\n")
    assert stored_series(d, "t4b") == {(("__name__", "utf8_name_ok"),)}


# ---------------------------------------------------------------------------------------------------
# max_exemplars_per_series_per_request and the distributor's instance limits

INSTANCE_LIMIT_TAIL = ". To adjust the related limit, configure -{}, or contact your service administrator."


def test_exemplars_per_series_per_request_truncates(d):
    daemon = d
    now = now_ms()
    exemplars = [((("trace_id", f"t{i}"),), float(i), now - 10 + i) for i in range(5)]
    request = request_of(["", "__name__", "ex_metric", "trace_id", "t0", "t1", "t2", "t3", "t4"],
                         {"refs": [1, 2], "samples": [(now, 1.0)],
                          "exemplars": [([3, 4 + i], value, t) for i, (_, value, t) in enumerate(exemplars)]})
    response = push_v2(daemon, "ex2", request)
    assert response.status_code == 200, response.text
    assert written(response) == (1, 0, 2)
    assert metric_value(daemon, "cortex_discarded_exemplars_total", reason="too_many_exemplars_per_series_per_request",
                        user="ex2") == 3
    found = daemon.get("/prometheus/api/v1/query_exemplars", params={"query": "ex_metric", "start": (now - 60_000) / 1000,
                                                                       "end": (now + 1000) / 1000},
                       headers={"X-Scope-OrgID": "ex2"}).json()["data"]
    assert [e["labels"]["trace_id"] for e in found[0]["exemplars"]] == ["t0", "t1"]


def test_max_ingestion_rate_instance_limit(start_daemon):
    daemon = start_daemon("-distributor.instance-limits.max-ingestion-rate=5")
    now = now_ms()
    first = push(daemon, "t", [((("__name__", "rate_metric"),), [(now - 100 + i, 1.0) for i in range(50)])])
    assert first.status_code == 200, first.text
    message = ("the write request has been rejected because the distributor exceeded the ingestion rate limit "
               "(err-mimir-distributor-max-ingestion-rate)"
               + INSTANCE_LIMIT_TAIL.format("distributor.instance-limits.max-ingestion-rate"))
    for _ in range(40):  # the rate is an average ticked every second
        response = push(daemon, "t", [((("__name__", "rate_metric"),), [(now_ms(), 1.0)])])
        if response.status_code != 200:
            break
        time.sleep(0.1)
    assert (response.status_code, response.text) == (500, message + "\n")
    assert "retry-after" in response.headers
    assert metric_value(daemon, "cortex_distributor_instance_rejected_requests_total",
                        reason="distributor_max_ingestion_rate") >= 1
    assert metric_value(daemon, "cortex_distributor_instance_limits", limit="max_ingestion_rate") == 5
    assert metric_value(daemon, "cortex_distributor_instance_limits", limit="max_inflight_push_requests") == 2000
    assert metric_value(daemon, "cortex_distributor_ingestion_rate_samples_per_second") >= 5


def local_distributor(*flags: str) -> Distributor:
    """A Distributor over a stand-in ingester, for what cannot happen through one asyncio daemon."""
    config, _ = load_config(list(flags))
    ingester = SimpleNamespace(overrides=Overrides(config, None), tenants={})
    return Distributor(config, ingester, "local")


def test_max_inflight_push_requests_instance_limit():
    distributor = local_distributor()
    assert distributor.max_inflight_push_requests == 2000
    distributor.inflight_push_requests = 2000  # as if 2000 pushes were being answered
    with pytest.raises(HTTPError) as caught:
        distributor.ingest("t", [(("__name__", "m"),)], [0, 1], [now_ms()], [1.0])
    assert caught.value.status == 500
    assert caught.value.message == (
        "the write request has been rejected because the distributor exceeded the allowed number of inflight push "
        "requests (err-mimir-distributor-max-inflight-push-requests)"
        + INSTANCE_LIMIT_TAIL.format("distributor.instance-limits.max-inflight-push-requests"))
    assert distributor.inflight_push_requests == 2000  # released again
    unlimited = local_distributor("-distributor.instance-limits.max-inflight-push-requests=0")
    unlimited.inflight_push_requests = 10**6
    assert unlimited.ingest("t", [], [0], [], []).status == 200


def test_bad_content_type_parameter_answers_400_but_still_ingests_as_v1(d):
    # Mimir's quirk: http.Error is written first, then the body is processed as 1.0 regardless.
    now = now_ms()
    headers = {"Content-Type": "application/x-protobuf;proto=foo.Bar"}
    response = push(d, "t5", [((("__name__", "quirk_metric"),), [(now, 1.0)])], headers=headers)
    message = ("got application/x-protobuf;proto=foo.Bar content type; expected prometheus.WriteRequest or "
               "io.prometheus.write.v2.Request")
    assert (response.status_code, response.text) == (400, message + "\n")
    response = push(d, "t5", [((("__name__", "quirk_metric"), ("job", "x")), [(now, 1.0)]),
                              ((("job", "nameless"),), [(now, 1.0)])], headers=headers)
    assert (response.status_code, response.text) == (
        400, message + "\nreceived series has no metric name (err-mimir-missing-metric-name)\n")
    assert stored_series(d, "t5") == {(("__name__", "quirk_metric"),), (("__name__", "quirk_metric"), ("job", "x"))}
