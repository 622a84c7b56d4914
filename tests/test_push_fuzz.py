"""Malformed push bodies through the running daemon: every write endpoint answers 4xx, never 5xx or a
dropped connection, keeps what it acknowledged before, and keeps serving.

One daemon (Influx enabled, small OTLP/Influx size limits so that the bombs hit them quickly) first receives a
good remote write batch; then hand-made malformed bodies (truncated snappy, snappy headers announcing huge
lengths, protobuf with wrong wire types, huge varints and lengths, deeply nested unknown groups, gzip bombs,
garbage content types) and hypothesis-drawn random ones are posted to ``/api/v1/push`` (1.0 and 2.0
content types), ``/otlp/v1/metrics`` and ``/api/v1/push/influx/write``. At the end the good batch is still
answered by a query and ``/ready`` is 200.

Random bytes can be a valid message by chance (an empty body is an empty WriteRequest, a run of unknown
fields decodes to nothing), so drawn bodies must get 2xx or 4xx; the hand-made ones must get 4xx.
"""

from __future__ import annotations

import gzip
import json
import signal
import socket
import struct
import time

import httpx
import pytest
import snappy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Daemon, encode_write_request
from distributor_support import uvarint
from mimird import prompb

pytestmark = pytest.mark.slow

TENANT = "fuzz"
NOW_MS = int(time.time() * 1000) // 1000 * 1000
GOOD = {(("__name__", "fuzz_good"), ("job", "j")): [(NOW_MS - 2000, 1.5), (NOW_MS - 1000, 2.5)]}
MAX_OTLP = 100_000
MAX_INFLUX = 100_000

RW1 = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
       "X-Prometheus-Remote-Write-Version": "0.1.0"}
RW2 = {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "Content-Encoding": "snappy",
       "X-Prometheus-Remote-Write-Version": "2.0.0"}
OTLP_PROTO = {"Content-Type": "application/x-protobuf"}
OTLP_JSON = {"Content-Type": "application/json"}
INFLUX = {"Content-Type": "text/plain"}
CLIENT = httpx.Client(timeout=10)
ENDPOINTS = {
    "rw1": ("/api/v1/push", RW1), "rw2": ("/api/v1/push", RW2),
    "otlp-proto": ("/otlp/v1/metrics", OTLP_PROTO), "otlp-json": ("/otlp/v1/metrics", OTLP_JSON),
    "influx": ("/api/v1/push/influx/write", INFLUX),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = Daemon(tmp_path_factory.mktemp("fuzz"), [
        "-distributor.influx-endpoint-enabled=true", f"-distributor.max-otlp-request-size={MAX_OTLP}",
        f"-distributor.max-influx-request-size={MAX_INFLUX}"]).start()
    response = proc.post("/api/v1/push", content=encode_write_request(GOOD), headers={**RW1, "X-Scope-OrgID": TENANT})
    assert response.status_code == 200, response.text
    yield proc
    # Whatever came after, the acknowledged batch is still answered and the daemon still serves.
    assert proc.proc.poll() is None, proc.log()
    assert proc.get("/ready").status_code == 200
    response = proc.get("/prometheus/api/v1/query", params={"query": "fuzz_good[1m]", "time": NOW_MS / 1000},
                        headers={"X-Scope-OrgID": TENANT})
    assert response.status_code == 200
    [series] = response.json()["data"]["result"]
    assert series["values"] == [[(NOW_MS - 2000) / 1000, "1.5"], [(NOW_MS - 1000) / 1000, "2.5"]]
    proc.stop(signal.SIGKILL)


def post(daemon: Daemon, endpoint: str, body: bytes, **extra_headers: str | bytes) -> httpx.Response:
    """POST `body`; a dropped connection or timeout fails the test rather than raising something vaguer."""
    path, headers = ENDPOINTS[endpoint]
    try:
        # One kept-alive connection for all posts: a body the server refuses must not break the next request.
        return CLIENT.post(daemon.url + path, content=body,
                           headers={**headers, "X-Scope-OrgID": TENANT, **extra_headers})
    except httpx.TransportError as exc:
        pytest.fail(f"{endpoint}: connection failed for a {len(body)}-byte body {body[:40]!r}: {exc!r}\n"
                    f"{daemon.log()[-3000:]}")


def assert_4xx(response: httpx.Response, what: str) -> None:
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"


def assert_not_5xx(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"


# ---------------------------------------------------------------------------------------------------
# Protobuf building blocks


def tag(field: int, wire_type: int) -> bytes:
    return uvarint(field << 3 | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + uvarint(len(payload)) + payload


def good_message() -> bytes:
    request = prompb.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="fuzz_other")
    series.samples.add(timestamp=NOW_MS, value=1.0)
    return request.SerializeToString()


LABEL = length_delimited(1, b"__name__") + length_delimited(2, b"x")
SAMPLE = tag(1, 1) + struct.pack("<d", 1.0) + tag(2, 0) + uvarint(NOW_MS)

MALFORMED_PROTOBUF = {
    # WriteRequest.timeseries (field 1) as a varint, a fixed32 and a fixed64
    "timeseries as varint": tag(1, 0) + uvarint(5),
    "timeseries as fixed32": tag(1, 5) + b"\x00\x00\x00\x00",
    "timeseries as fixed64": tag(1, 1) + b"\x00" * 8,
    # a label inside a series as a varint; a sample's value as a varint; a label name as fixed32
    "label as varint": length_delimited(1, tag(1, 0) + uvarint(3)),
    "sample value as varint": length_delimited(1, length_delimited(1, LABEL) + length_delimited(2, tag(1, 0) + b"\x01")),
    "label name as fixed32": length_delimited(1, length_delimited(1, tag(1, 5) + b"abcd")),
    # lengths beyond the message, and absurd ones
    "series length beyond the end": tag(1, 2) + uvarint(1000) + LABEL,
    "series length 2^63": tag(1, 2) + uvarint(2**63) + LABEL,
    "series length 2^64-1": tag(1, 2) + uvarint(2**64 - 1) + LABEL,
    "label length 2^31": length_delimited(1, tag(1, 2) + uvarint(2**31) + b"x"),
    "label length 2^32+1": length_delimited(1, tag(1, 2) + uvarint(2**32 + 1) + b"x"),
    # varints: overlong (11 bytes), unterminated, and a tag of field 0
    "overlong varint tag": b"\xff" * 10 + b"\x01",
    "unterminated varint": b"\x80\x80\x80",
    "unterminated length": tag(1, 2) + b"\xff\xff",
    "field number 0": tag(0, 0) + b"\x00",
    "wire type 6": bytes([1 << 3 | 6]) + b"\x00",
    "wire type 7": bytes([1 << 3 | 7]) + b"\x00",
    # deeply nested unknown groups, closed and unclosed, and a mismatched end-group
    "nested groups unclosed": tag(15, 3) * 100_000,
    "nested groups closed": tag(15, 3) * 20_000 + tag(15, 4) * 20_000,
    "end group without start": tag(15, 4),
    "mismatched end group": tag(15, 3) + tag(14, 4),
    "nested groups inside a series": length_delimited(1, tag(15, 3) * 50_000),
    # fixed-width fields cut short
    "truncated sample": length_delimited(1, LABEL + length_delimited(2, SAMPLE[:5])),
    "truncated fixed64": tag(20, 1) + b"\x00\x00",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_PROTOBUF))
@pytest.mark.parametrize("endpoint", ["rw1", "rw2"])
def test_malformed_protobuf_in_valid_snappy(server, endpoint, name):
    body = snappy.compress(MALFORMED_PROTOBUF[name])
    response = post(server, endpoint, body)
    if name == "nested groups closed" and response.status_code == 200:
        return  # properly nested unknown groups are a valid (empty) message; a decoder may skip them
    assert_4xx(response, f"{endpoint} {name}")


def rw2_request(symbols: list[bytes], refs_payload: bytes, sample: bytes = SAMPLE) -> bytes:
    """A v2 Request: symbols (field 4) and one series (field 5) with packed label refs and one sample."""
    series = length_delimited(1, refs_payload) + length_delimited(2, sample)
    return b"".join(length_delimited(4, symbol) for symbol in symbols) + length_delimited(5, series)


def packed(*values: int) -> bytes:
    return b"".join(uvarint(value) for value in values)


MALFORMED_RW2 = {
    "ref beyond the symbols": rw2_request([b"", b"__name__", b"x"], packed(1, 7)),
    "ref 2^64-1": rw2_request([b"", b"__name__", b"x"], packed(1, 2**64 - 1)),
    "odd number of refs": rw2_request([b"", b"__name__", b"x"], packed(1, 2, 1)),
    "truncated packed refs": rw2_request([b"", b"__name__", b"x"], packed(1) + b"\x80"),
    "first symbol not empty": rw2_request([b"a", b"__name__", b"x"], packed(1, 2)),
    "no symbols at all": rw2_request([], packed(1, 2)),
    "symbol length beyond the end": tag(4, 2) + uvarint(10_000) + b"abc",
}


@pytest.mark.parametrize("name", sorted(MALFORMED_RW2))
def test_malformed_remote_write_2(server, name):
    assert_4xx(post(server, "rw2", snappy.compress(MALFORMED_RW2[name])), name)


def test_rw2_ref_truncation_and_empty_series(server):
    """Not malformed: a uint32 varint wider than 32 bits keeps its low 32 bits, as Go protobuf decoders read it.

    So ref 2^32+2 is ref 2, and ref 2^32 is ref 0, the empty symbol: ``__name__=""``, and a series whose
    only label is empty is dropped without an error (Mimir removes empty label values before validation)."""
    symbols = [b"", b"__name__", b"fuzz_rw2_wide_ref"]
    response = post(server, "rw2", snappy.compress(rw2_request(symbols, packed(1, 2**32 + 2))))
    assert response.status_code == 200, response.text
    assert response.headers["x-prometheus-remote-write-samples-written"] == "1"
    response = post(server, "rw2", snappy.compress(rw2_request(symbols, packed(1, 2**32))))
    assert response.status_code == 200, response.text
    assert response.headers["x-prometheus-remote-write-samples-written"] == "0"


@pytest.mark.parametrize("name", ["series length 2^63", "nested groups unclosed", "overlong varint tag",
                                  "unterminated length", "end group without start", "wire type 7"])
def test_malformed_protobuf_on_otlp(server, name):
    # (A known field with the wrong wire type is not here: the OTLP decoder, like protobuf-go, keeps it
    # as an unknown field and the message is valid.)
    assert_4xx(post(server, "otlp-proto", MALFORMED_PROTOBUF[name]), name)


def test_truncated_snappy(server):
    body = snappy.compress(good_message() * 4)
    for cut in sorted({1, 2, 3, len(body) // 2, len(body) - 1}):
        for endpoint in ("rw1", "rw2"):
            assert_4xx(post(server, endpoint, body[:cut]), f"{endpoint} snappy cut at {cut}/{len(body)}")


@pytest.mark.parametrize("announced", [2**31, 2**32 - 1, 2**32 + 5, 2**63])
def test_snappy_announcing_a_huge_length(server, announced):
    """The snappy block header announces the decoded length; a decoder must not trust it for allocation."""
    body = uvarint(announced) + b"\x00\x00"
    for endpoint in ("rw1", "rw2"):
        assert_4xx(post(server, endpoint, body), f"{endpoint} announced {announced}")


def test_snappy_bomb_beyond_the_message_limit(server):
    """100 MiB of zeros compresses to a few KiB; decoding it must stop at the message size limit."""
    body = snappy.compress(b"\x00" * (100 << 20))
    for endpoint in ("rw1", "rw2"):
        assert_4xx(post(server, endpoint, body), endpoint)


def test_gzip_bombs(server):
    bomb = gzip.compress(b"\x00" * (50 << 20), compresslevel=9)
    assert len(bomb) < MAX_OTLP
    for endpoint in ("otlp-proto", "otlp-json", "influx"):
        assert_4xx(post(server, endpoint, bomb, **{"Content-Encoding": "gzip"}), f"{endpoint} gzip bomb")
    assert_4xx(post(server, "rw1", bomb, **{"Content-Encoding": "gzip"}), "rw1 gzip bomb")


def test_broken_gzip(server):
    body = gzip.compress(b"fuzz_gzip value=1\n" * 50)
    for endpoint in ("otlp-proto", "otlp-json", "influx"):
        for broken in (body[: len(body) // 2], b"\x1f\x8b" + b"\xff" * 30, body[:-4] + b"\x00\x00\x00\x00"):
            assert_4xx(post(server, endpoint, broken, **{"Content-Encoding": "gzip"}), f"{endpoint} {broken[:12]!r}")


def deep_attribute_value(depth: int) -> bytes:
    """An OTLP/JSON request whose one resource attribute is an AnyValue of arrays nested `depth` deep."""
    value = '{"stringValue": "x"}'
    for _ in range(depth):
        value = '{"arrayValue": {"values": [' + value + "]}}"
    return ('{"resourceMetrics": [{"resource": {"attributes": [{"key": "k", "value": ' + value + "}]}}]}").encode()


DEEP_JSON = {
    "100000 [": b"[" * 100_000,
    "50000 open objects": b'{"resourceMetrics":' * 50_000,
    "5000 closed objects": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "AnyValue arrays 300 deep": deep_attribute_value(300),
    "AnyValue arrays 3000 deep": deep_attribute_value(3000),
}


@pytest.mark.parametrize("name", sorted(DEEP_JSON))
def test_deeply_nested_otlp_json(server, name):
    """Nesting deeper than the decoder's stack was a RecursionError answered 500; it is a 400."""
    response = post(server, "otlp-json", DEEP_JSON[name])
    if name == "AnyValue arrays 300 deep" and response.status_code == 200:
        return  # within the decoder's depth: a valid request
    assert_4xx(response, name)


GARBAGE_CONTENT_TYPES = ["application/x-protobuf;proto=nonsense", "text/html", "application/json; charset=\xff",
                         "multipart/form-data; boundary=", ";;;", "application/x-protobuf;proto=", "*/*",
                         "application/x-protobuf;proto=io.prometheus.write.v2.Request;proto=x"]


@pytest.mark.parametrize("content_type", GARBAGE_CONTENT_TYPES)
def test_garbage_content_types(server, content_type):
    for endpoint in ("rw1", "otlp-proto", "influx"):
        body = b"garbage \x00\xff body"
        response = post(server, endpoint, body, **{"Content-Type": content_type.encode("latin-1")})
        assert_4xx(response, f"{endpoint} content type {content_type!r}")


def test_garbage_content_encodings(server):
    for endpoint in ("rw1", "otlp-proto", "influx"):
        for encoding in ("br", "zstd", "gzip, snappy", "\x7f"):
            response = post(server, endpoint, b"\x00\x01\x02garbage", **{"Content-Encoding": encoding})
            assert_4xx(response, f"{endpoint} content encoding {encoding!r}")


def zero_chunks(total: int, size: int = 65536):
    for _ in range(total // size):
        yield b"\x00" * size


def test_chunked_bodies_without_length_stop_at_the_limit(server):
    """No Content-Length: the server reads a chunked body only up to the route's limit, then answers 413."""
    for endpoint in ("otlp-proto", "influx"):
        path, headers = ENDPOINTS[endpoint]
        response = httpx.post(server.url + path, content=zero_chunks(4 << 20),
                              headers={**headers, "X-Scope-OrgID": TENANT}, timeout=30)
        assert response.status_code == 413, (endpoint, response.text)


BAD_FRAMING = {
    "negative length": b"Content-Length: -1\r\n\r\n",
    "length not a number": b"Content-Length: abc\r\n\r\n",
    "length beyond int64": b"Content-Length: 99999999999999999999\r\n\r\n",
    "chunk size not hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk size beyond int64": b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMING))
def test_bad_http_framing_is_400(server, name):
    request = (b"POST /api/v1/push HTTP/1.1\r\nHost: fuzz\r\nX-Scope-OrgID: " + TENANT.encode()
               + b"\r\nContent-Type: application/x-protobuf\r\n" + BAD_FRAMING[name])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
        conn.sendall(request)
        status_line = conn.recv(4096).split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 400 Bad Request", name


# ---------------------------------------------------------------------------------------------------
# Drawn bodies

FUZZ = settings(max_examples=200, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def protobuf_noise() -> st.SearchStrategy[bytes]:
    """Byte strings built from protobuf pieces (tags of any wire type, varints, lengths) mixed with noise."""
    piece = st.one_of(
        st.builds(tag, st.integers(0, 40), st.integers(0, 7)),
        st.integers(0, 2**64 - 1).map(uvarint),
        st.binary(max_size=16),
        st.just(LABEL), st.just(SAMPLE),
    )
    return st.recursive(
        st.lists(piece, max_size=12).map(b"".join),
        lambda inner: st.builds(length_delimited, st.integers(1, 16), inner) | st.lists(inner, max_size=4).map(
            b"".join),
        max_leaves=20)


@FUZZ
@given(body=st.binary(max_size=2048), endpoint=st.sampled_from(sorted(ENDPOINTS)))
def test_random_bytes(server, body, endpoint):
    assert_not_5xx(post(server, endpoint, body), f"{endpoint} {body[:40]!r}")


@FUZZ
@given(message=protobuf_noise(), endpoint=st.sampled_from(["rw1", "rw2"]))
def test_valid_snappy_of_protobuf_noise(server, message, endpoint):
    assert_not_5xx(post(server, endpoint, snappy.compress(message)), f"{endpoint} {message[:40]!r}")


@FUZZ
@given(message=protobuf_noise())
def test_otlp_protobuf_noise(server, message):
    assert_not_5xx(post(server, "otlp-proto", message), f"{message[:40]!r}")


@FUZZ
@given(message=st.tuples(st.integers(0, 200), st.integers(0, 255)))
def test_bit_flips_of_a_valid_message(server, message):
    """A valid write request with one byte replaced, snappy-compressed correctly."""
    position, value = message
    body = bytearray(good_message() * 3)
    body[position % len(body)] = value
    assert_not_5xx(post(server, "rw1", snappy.compress(bytes(body))), f"byte {position % len(body)} := {value}")


OTLP_JSON_KEYS = ["resourceMetrics", "resource", "attributes", "key", "value", "stringValue", "intValue",
                  "arrayValue", "kvlistValue", "values", "scopeMetrics", "metrics", "name", "gauge", "sum",
                  "histogram", "dataPoints", "asDouble", "asInt", "timeUnixNano", "bucketCounts", "explicitBounds",
                  "exemplars", "traceId", "spanId", "isMonotonic", "aggregationTemporality"]


def json_values() -> st.SearchStrategy:
    """JSON documents whose keys are mostly OTLP's own, so that the decoder gets past the first level."""
    scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                       st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                       st.sampled_from(["1", "-1", "99999999999999999999999", "abc", "0af", "NaN", "Infinity"]))
    key = st.sampled_from(OTLP_JSON_KEYS) | st.text(max_size=6)
    return st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(key, inner, max_size=4),
                        max_leaves=25)


@FUZZ
@given(document=st.dictionaries(st.sampled_from(OTLP_JSON_KEYS[:1]), json_values(), max_size=1))
def test_otlp_json_noise(server, document):
    assert_not_5xx(post(server, "otlp-json", json.dumps(document).encode()), repr(document)[:200])


@FUZZ
@given(text=st.text(max_size=300))
def test_influx_text_noise(server, text):
    assert_not_5xx(post(server, "influx", text.encode("utf-8", "surrogatepass")), repr(text[:60]))
