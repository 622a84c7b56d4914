"""Remote write v1 decoding: the Cython decoder against protobuf's own parser, and push body errors.

Random WriteRequests are encoded with the prompb classes (and by hand where protobuf would not
produce the bytes on its own: unknown fields between known ones, unpacked repeated scalars, groups),
decoded by both, and compared exactly, floats bit for bit.
"""

import struct

import numpy as np
import pytest
import snappy
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mimird import prompb
from mimird._fast.remotewrite import (
    METRIC_TYPE_COUNTER,
    SOURCE_RULE,
    NativeHistogram,
    WriteBatch,
    decode_write_request,
)
from mimird.distributor.remotewrite import (
    PushDecodeError,
    decode_push_body,
    is_remote_write_v2,
    snappy_decoded_length,
)
from remotewrite_reference import comparable_batch, comparable_reference, float_bits, reference_decode

STALE_NAN_BITS = 0x7FF0000000000002

# ---------------------------------------------------------------------------------------------------
# Hand encoding


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def zigzag(value: int) -> int:
    return ((value << 1) ^ (value >> 63)) & ((1 << 64) - 1)


def tag(field_number: int, wire_type: int) -> bytes:
    return varint(field_number << 3 | wire_type)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    return tag(field_number, 2) + varint(len(payload)) + payload


def double_bytes(value: float) -> bytes:
    return struct.pack("<d", value)


def float_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def snappy_body(payload: bytes) -> bytes:
    return snappy.compress(payload)


# ---------------------------------------------------------------------------------------------------
# Strategies

# Above every field number the decoder knows in any message (Histogram goes to 16), skipping Mimir's
# WriteRequest fields 1000 and 1001.
unknown_field_numbers = st.integers(17, 999) | st.integers(2000, (1 << 29) - 1)


def unknown_field(depth: int = 0):
    scalar = st.one_of(
        st.builds(lambda n, v: tag(n, 0) + varint(v), unknown_field_numbers, st.integers(0, (1 << 64) - 1)),
        st.builds(lambda n, b: tag(n, 1) + b, unknown_field_numbers, st.binary(min_size=8, max_size=8)),
        st.builds(lambda n, b: length_delimited(n, b), unknown_field_numbers, st.binary(max_size=12)),
        st.builds(lambda n, b: tag(n, 5) + b, unknown_field_numbers, st.binary(min_size=4, max_size=4)),
    )
    if depth >= 2:
        return scalar
    group = st.builds(
        lambda n, inner: tag(n, 3) + b"".join(inner) + tag(n, 4),
        unknown_field_numbers,
        st.lists(unknown_field(depth + 1), max_size=2),
    )
    return scalar | group


unknown_fields = st.lists(unknown_field(), min_size=1, max_size=2).map(b"".join)

label_text = st.sampled_from(["__name__", "job", "instance", "le", "", "up"]) | st.text(max_size=12)
timestamps = st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(-10, 10)
special_bits = st.sampled_from(
    [
        STALE_NAN_BITS,
        0x7FF8000000000000,  # the usual quiet NaN
        0x7FF8000000000001,
        0xFFF8000000000000,
        0x7FF4000000000000,  # a signalling NaN
        0x7FF0000000000000,  # +Inf
        0xFFF0000000000000,  # -Inf
        0x8000000000000000,  # -0.0
    ]
)
float_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    special_bits.map(float_from_bits),
    st.integers(0, (1 << 64) - 1).map(float_from_bits),
)


@st.composite
def interleaved(draw, parts: list[bytes]) -> bytes:
    """The parts of one message, in order; one message in four gets unknown fields at some point."""
    pieces = list(parts)
    if draw(st.integers(0, 3)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), draw(unknown_fields))
    return b"".join(pieces)


@st.composite
def label_message(draw) -> bytes:
    label = prompb.Label(name=draw(label_text), value=draw(label_text))
    # Serialize the two fields separately so unknown fields can sit between them.
    return draw(
        interleaved(
            [
                prompb.Label(name=label.name).SerializeToString(),
                prompb.Label(value=label.value).SerializeToString(),
            ]
        )
    )


@st.composite
def sample_message(draw) -> bytes:
    value = draw(float_values)
    timestamp = draw(timestamps)
    parts = [
        prompb.Sample(value=value).SerializeToString(),
        prompb.Sample(timestamp=timestamp).SerializeToString(),
    ]
    if draw(st.booleans()):
        parts.reverse()
    return draw(interleaved(parts))


@st.composite
def exemplar_message(draw) -> bytes:
    labels = [length_delimited(1, draw(label_message())) for _ in range(draw(st.integers(0, 2)))]
    scalars = prompb.Exemplar(value=draw(float_values), timestamp=draw(timestamps)).SerializeToString()
    return draw(interleaved([*labels, scalars]))


@st.composite
def histogram_message(draw) -> bytes:
    histogram = prompb.Histogram()
    count = draw(st.sampled_from(["none", "int", "float", "both"]))
    if count in ("int", "both"):
        histogram.count_int = draw(st.integers(0, (1 << 64) - 1))
    if count in ("float", "both"):
        histogram.count_float = draw(float_values)
    histogram.sum = draw(float_values)
    histogram.schema = draw(st.integers(-(1 << 31), (1 << 31) - 1) | st.integers(-53, 8))
    histogram.zero_threshold = draw(float_values)
    if draw(st.booleans()):
        histogram.zero_count_int = draw(st.integers(0, (1 << 64) - 1))
    else:
        histogram.zero_count_float = draw(float_values)
    spans = st.lists(
        st.tuples(st.integers(-(1 << 31), (1 << 31) - 1), st.integers(0, (1 << 32) - 1)), max_size=3
    )
    deltas = st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=4)
    counts = st.lists(float_values, max_size=4)
    for offset, length in draw(spans):
        histogram.negative_spans.add(offset=offset, length=length)
    for offset, length in draw(spans):
        histogram.positive_spans.add(offset=offset, length=length)
    histogram.negative_deltas.extend(draw(deltas))
    histogram.positive_deltas.extend(draw(deltas))
    histogram.negative_counts.extend(draw(counts))
    histogram.positive_counts.extend(draw(counts))
    histogram.custom_values.extend(draw(counts))
    histogram.reset_hint = draw(st.integers(0, 3) | st.integers(-(1 << 31), (1 << 31) - 1))
    histogram.timestamp = draw(timestamps)
    encoded = histogram.SerializeToString()
    # Repeated scalars may also arrive unpacked, one tag per element; add a few that way.
    unpacked = b""
    for value in draw(st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=2)):
        unpacked += tag(12, 0) + varint(zigzag(value))
    for value in draw(st.lists(float_values, max_size=2)):
        unpacked += tag(13, 1) + double_bytes(value)
    return draw(interleaved([encoded, unpacked]))


@st.composite
def series_message(draw) -> bytes:
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        parts.append(length_delimited(1, draw(label_message())))
    for _ in range(draw(st.integers(0, 4))):
        parts.append(length_delimited(2, draw(sample_message())))
    for _ in range(draw(st.integers(0, 1))):
        parts.append(length_delimited(3, draw(exemplar_message())))
    for _ in range(draw(st.integers(0, 1))):
        parts.append(length_delimited(4, draw(histogram_message())))
    # Fields of one series may come in any order; only the order within each repeated field counts.
    parts = draw(st.permutations(parts))
    return draw(interleaved(parts))


@st.composite
def metadata_message(draw) -> bytes:
    metadata = prompb.MetricMetadata(
        type=draw(st.integers(0, 7) | st.integers(-(1 << 31), (1 << 31) - 1)),
        metric_family_name=draw(label_text),
        help=draw(st.text(max_size=20)),
        unit=draw(st.text(max_size=5)),
    )
    return draw(interleaved([metadata.SerializeToString()]))


@st.composite
def write_request(draw) -> bytes:
    parts = [length_delimited(1, draw(series_message())) for _ in range(draw(st.integers(0, 4)))]
    parts += [length_delimited(3, draw(metadata_message())) for _ in range(draw(st.integers(0, 2)))]
    return draw(interleaved(draw(st.permutations(parts))))


def assert_same_as_reference(data: bytes, batch: WriteBatch) -> None:
    assert comparable_batch(batch) == comparable_reference(reference_decode(data))


# ---------------------------------------------------------------------------------------------------
# Decoder against protobuf


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(write_request())
def test_random_requests_decode_like_protobuf(data):
    assert_same_as_reference(data, decode_write_request(data))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(write_request())
def test_every_truncation_fails_or_decodes_like_protobuf(data):
    for size in range(len(data)):
        prefix = data[:size]
        try:
            expected = reference_decode(prefix)
        except DecodeError:
            with pytest.raises(ValueError):
                decode_write_request(prefix)
        else:
            assert comparable_batch(decode_write_request(prefix)) == comparable_reference(expected)


def has_undecodable_label(batch) -> bool:
    strings = [text for labels in batch.series_labels for pair in labels for text in pair]
    strings += [text for _, labels, _, _ in batch.exemplars for pair in labels for text in pair]
    return any(not is_utf8_encodable(text) for text in strings)


def is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(write_request(), st.data())
def test_corrupted_requests_never_crash(data, draw):
    assume(data)
    corrupted = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        corrupted[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
    corrupted = bytes(corrupted)
    try:
        batch = decode_write_request(corrupted)
    except ValueError:
        return
    try:
        expected = reference_decode(corrupted)
    except DecodeError:
        # Accepted by us but not by protobuf: only label strings that are not UTF-8, which we keep
        # (as surrogates) for validation to refuse the one series, as Mimir does.
        if not has_undecodable_label(batch):
            pytest.fail("decoder accepted bytes protobuf rejects")
        return
    assert comparable_batch(batch) == comparable_reference(expected)


def test_flat_layout_and_wire_order():
    request = prompb.WriteRequest()
    first = request.timeseries.add()
    first.labels.add(name="job", value="node")
    first.labels.add(name="__name__", value="up")
    first.samples.add(value=1.0, timestamp=1000)
    first.samples.add(value=0.0, timestamp=2000)
    request.timeseries.add()  # empty series: kept, with no labels and no samples
    third = request.timeseries.add()
    third.labels.add(name="__name__", value="up")
    third.labels.add(name="job", value="node")
    third.samples.add(value=float_from_bits(STALE_NAN_BITS), timestamp=-5)
    batch = decode_write_request(request.SerializeToString())
    assert batch.series_labels == [
        (("job", "node"), ("__name__", "up")),
        (),
        (("__name__", "up"), ("job", "node")),
    ]
    assert batch.sample_offsets.tolist() == [0, 2, 2, 3]
    assert batch.timestamps.dtype == np.int64 and batch.values.dtype == np.float64
    assert batch.timestamps.tolist() == [1000, 2000, -5]
    assert float_bits(batch.values[2]) == STALE_NAN_BITS
    assert batch.num_series == 3 and batch.num_samples == 3
    ts, values = batch.series_samples(0)
    assert ts.tolist() == [1000, 2000] and values.tolist() == [1.0, 0.0]
    assert batch.exemplars == [] and batch.histograms == [] and batch.metadata == []


def test_large_request_like_protobuf():
    # Big enough for the up-front sample reservation and several intern table resizes.
    rng = np.random.default_rng(7)
    request = prompb.WriteRequest()
    for index in range(1500):
        series = request.timeseries.add()
        series.labels.add(name="__name__", value=f"metric_{index % 40}")
        series.labels.add(name="pod", value=f"pod-{rng.integers(1 << 40):x}")
        series.labels.add(name=f"extra_{index % 7}", value="ü" * (index % 5))
        for _ in range(int(rng.integers(0, 30))):
            series.samples.add(value=float(rng.normal()), timestamp=int(rng.integers(-(1 << 62), 1 << 62)))
    data = request.SerializeToString()
    assert len(data) > 100_000
    assert_same_as_reference(data, decode_write_request(data))


def test_label_strings_and_pairs_are_shared_within_a_request():
    request = prompb.WriteRequest()
    for index in range(50):
        series = request.timeseries.add()
        series.labels.add(name="__name__", value="requests_total")
        series.labels.add(name="code", value=str(index % 3))
        series.labels.add(name="path", value=f"/api/{index}")
    batch = decode_write_request(request.SerializeToString())
    first, second = batch.series_labels[0], batch.series_labels[3]
    assert first[0] is second[0]  # the whole ("__name__", "requests_total") pair
    assert first[1] is second[1]
    assert first[2][0] is second[2][0]  # "path"
    assert {value for _, value in (labels[2] for labels in batch.series_labels)} == {
        f"/api/{i}" for i in range(50)
    }


def test_exemplars_histograms_and_metadata():
    request = prompb.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="latency")
    exemplar = series.exemplars.add(value=0.25, timestamp=123)
    exemplar.labels.add(name="trace_id", value="abc")
    histogram = series.histograms.add(
        count_int=10, sum=12.5, schema=3, zero_threshold=1e-128, zero_count_int=2, reset_hint=2, timestamp=99
    )
    histogram.positive_spans.add(offset=-2, length=2)
    histogram.positive_spans.add(offset=1, length=1)
    histogram.positive_deltas.extend([3, -1, 4])
    float_histogram = series.histograms.add(count_float=5.5, zero_count_float=0.5, reset_hint=3)
    float_histogram.negative_spans.add(offset=0, length=1)
    float_histogram.negative_counts.append(5.0)
    request.metadata.add(
        type=METRIC_TYPE_COUNTER, metric_family_name="requests_total", help="Requests.", unit=""
    )
    batch = decode_write_request(request.SerializeToString())
    assert batch.exemplars == [(0, (("trace_id", "abc"),), 0.25, 123)]
    assert batch.metadata == [(METRIC_TYPE_COUNTER, "requests_total", "Requests.", "")]
    (index, integer), (_, floating) = batch.histograms
    assert index == 0 and isinstance(integer, NativeHistogram)
    assert not integer.is_float and integer.count_int == 10 and integer.sum == 12.5 and integer.schema == 3
    assert integer.zero_count_int == 2 and integer.reset_hint == 2 and integer.timestamp == 99
    assert integer.positive_spans == ((-2, 2), (1, 1)) and integer.positive_deltas == (3, -1, 4)
    assert integer.negative_spans == () and integer.custom_values == ()
    assert floating.is_float and floating.count_float == 5.5 and floating.zero_count_float == 0.5
    assert floating.negative_counts == (5.0,) and floating.reset_hint == 3
    assert integer == decode_write_request(request.SerializeToString()).histograms[0][1]
    assert integer != floating


def test_exemplars_can_be_skipped_unread():
    series = length_delimited(1, b"\x0a\x01a") + length_delimited(3, b"\xff\xff")
    data = length_delimited(1, series)
    with pytest.raises(ValueError, match="in Exemplar"):
        decode_write_request(data)
    batch = decode_write_request(data, decode_exemplars=False)
    assert batch.exemplars == [] and batch.series_labels == [(("a", ""),)]


def test_mimir_write_request_fields():
    data = tag(2, 0) + varint(1) + tag(1000, 0) + varint(1) + tag(1001, 0) + varint(1)
    batch = decode_write_request(data)
    assert batch.source == SOURCE_RULE
    assert batch.skip_label_validation and batch.skip_label_count_validation
    plain = decode_write_request(b"")
    assert plain.source == 0 and not plain.skip_label_validation and not plain.skip_label_count_validation
    assert plain.num_series == 0 and plain.sample_offsets.tolist() == [0]


def test_accepts_bytearray_and_memoryview():
    data = prompb.WriteRequest(
        timeseries=[prompb.TimeSeries(samples=[prompb.Sample(value=2.0)])]
    ).SerializeToString()
    for view in (bytearray(data), memoryview(data)):
        assert decode_write_request(view).values.tolist() == [2.0]


# ---------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (length_delimited(1, b"") + b"\x0a\x05", r"^unexpected EOF \(in WriteRequest at byte 2\)$"),
        (
            length_delimited(1, length_delimited(2, tag(1, 0) + b"\x01")),
            r"^proto: wrong wireType = 0 for field Value \(in Sample at byte 4 of timeseries\[0\]\)$",
        ),
        (
            length_delimited(1, tag(2, 0) + b"\x01"),
            r"^proto: wrong wireType = 0 for field Samples \(in TimeSeries at byte 2 of timeseries\[0\]\)$",
        ),
        (tag(1, 1) + bytes(8), r"^proto: wrong wireType = 1 for field Timeseries"),
        (tag(2, 2) + b"\x00", r"^proto: wrong wireType = 2 for field Source"),
        (b"\x00", r"^proto: WriteRequest: illegal tag 0 \(wire type 0\) \(at byte 0\)$"),
        (tag(7, 4), r"^proto: WriteRequest: wiretype end group for non-group"),
        (tag(7, 6), r"^proto: illegal wireType 6"),
        (tag(7, 0) + b"\xff" * 10 + b"\x01", r"^proto: integer overflow"),
        (tag(7, 2) + b"\xff" * 9 + b"\x01", r"^proto: negative length found during unmarshaling"),
        (tag(7, 2) + b"\x05abc", r"^unexpected EOF"),
        (tag(7, 3) + tag(8, 4), r"^proto: end of group 8 while group 7 is open"),
        (tag(7, 3) + tag(8, 0), r"^unexpected EOF"),
        (tag(7, 3) * 70, r"nested too deeply"),
        (
            length_delimited(1, length_delimited(4, length_delimited(13, b"\x00" * 7))),
            r"^proto: packed field PositiveCounts has a length that is not a multiple of 8",
        ),
        (
            length_delimited(3, tag(1, 2) + b"\x00"),
            r"^proto: wrong wireType = 2 for field Type \(in MetricMetadata",
        ),
    ],
)
def test_malformed_requests(data, message):
    with pytest.raises(ValueError, match=message):
        decode_write_request(data)


def test_invalid_utf8_labels_decode_with_surrogates():
    # Mimir refuses only the series (in validation), so the decoder keeps the bytes recoverable.
    good = length_delimited(1, prompb.Label(name="__name__", value="up").SerializeToString())
    bad = length_delimited(1, length_delimited(1, b"job") + length_delimited(2, b"caf\xe9"))
    batch = decode_write_request(length_delimited(1, good) + length_delimited(1, good + bad))
    assert batch.series_labels == [(("__name__", "up"),), (("__name__", "up"), ("job", "caf\udce9"))]
    assert batch.series_labels[1][1][1].encode("utf-8", "surrogateescape") == b"caf\xe9"
    exemplar = length_delimited(1, length_delimited(1, b"\xed\xa0\x80"))  # an encoded surrogate
    batch = decode_write_request(length_delimited(1, good + length_delimited(3, exemplar)))
    assert batch.exemplars[0][1] == (("\udced\udca0\udc80", ""),)
    with pytest.raises(ValueError, match=r"^help of metadata\[0\] is not valid UTF-8"):
        decode_write_request(length_delimited(3, length_delimited(4, b"\xff")))


# ---------------------------------------------------------------------------------------------------
# Push bodies


def simple_request() -> bytes:
    request = prompb.WriteRequest()
    series = request.timeseries.add()
    series.labels.add(name="__name__", value="up")
    series.samples.add(value=1.0, timestamp=1)
    return request.SerializeToString()


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "application/x-protobuf",
        "application/x-protobuf;proto=prometheus.WriteRequest",
        "application/x-protobuf; proto=io.prometheus.write.v2.Request",  # space: not Mimir's "proto" key
        "Application/X-Protobuf;proto=io.prometheus.write.v2.Request",  # no case folding
    ],
)
def test_remote_write_v1_content_types(content_type):
    assert not is_remote_write_v2(content_type)
    batch = decode_push_body(snappy_body(simple_request()), "snappy", content_type, "0.1.0")
    assert batch.series_labels == [(("__name__", "up"),)]


def test_remote_write_v2_content_type_selects_the_v2_decoder():
    from mimird.prompb import writev2

    request = writev2.Request(symbols=["", "__name__", "up"])
    request.timeseries.add(labels_refs=[1, 2]).samples.add(value=1.0, timestamp=5)
    batch = decode_push_body(snappy_body(request.SerializeToString()), "snappy", writev2.CONTENT_TYPE, "2.0.0")
    assert batch.series_labels == [(("__name__", "up"),)]
    assert batch.timestamps.tolist() == [5]


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (
            "application/x-protobuf;proto=foo.Bar",
            "got application/x-protobuf;proto=foo.Bar content type; "
            "expected prometheus.WriteRequest or io.prometheus.write.v2.Request",
        ),
        (
            "application/x-protobuf;charset",
            "as per https://www.rfc-editor.org/rfc/rfc9110#parameter expected parameters to be key-values, "
            "got charset in application/x-protobuf;charset content-type",
        ),
    ],
)
def test_bad_content_type_parameters(content_type, message):
    with pytest.raises(PushDecodeError) as caught:
        decode_push_body(snappy_body(simple_request()), None, content_type, None)
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "getting snappy decoded length: snappy: corrupt input"),
        (b"\x80", "getting snappy decoded length: snappy: corrupt input"),
        (b"\xff" * 9 + b"\x02", "getting snappy decoded length: snappy: corrupt input"),
        (varint(1 << 32) + b"\x00", "getting snappy decoded length: snappy: corrupt input"),
        (b"\x05abc", "decompress snappy: snappy: corrupt input"),
        (b"\x04\x08abc", "decompress snappy: snappy: corrupt input"),  # header says 4, the literal gives 3
        (snappy_body(b"abcdef")[:-1], "decompress snappy: snappy: corrupt input"),
        (simple_request(), None),  # an uncompressed protobuf body is not snappy either
    ],
)
def test_bodies_that_are_not_snappy(body, message):
    with pytest.raises(PushDecodeError) as caught:
        decode_push_body(body, None, None, None)
    assert caught.value.status == 400
    if message is not None:
        assert caught.value.message == message


def test_snappy_wrapped_garbage_is_a_protobuf_error():
    with pytest.raises(PushDecodeError) as caught:
        decode_push_body(snappy_body(b"\x0a\x05"), None, None, None)
    assert caught.value.status == 400
    assert caught.value.message == "unexpected EOF (in WriteRequest at byte 0)"


def test_size_limit_on_compressed_and_declared_sizes():
    limit = 1000
    expected = (
        "the incoming push request has been rejected because its message size of {} bytes is larger than the "
        "allowed limit of 1000 bytes (err-mimir-distributor-max-write-message-size). To adjust the related "
        "limit, configure -distributor.max-recv-msg-size, or contact your service administrator."
    )
    big_compressed = bytes(range(256)) * 5
    with pytest.raises(PushDecodeError) as caught:
        decode_push_body(big_compressed, None, None, None, max_message_size=limit)
    assert (caught.value.status, caught.value.message) == (400, expected.format(len(big_compressed)))
    # Small on the wire, large once decompressed: refused from the header alone.
    bomb = snappy_body(bytes(5000))
    assert len(bomb) < limit and snappy_decoded_length(bomb) == 5000
    with pytest.raises(PushDecodeError) as caught:
        decode_push_body(bomb, None, None, None, max_message_size=limit)
    assert (caught.value.status, caught.value.message) == (400, expected.format(len(bomb)))
    # A header that lies about a huge size is refused before any allocation.
    with pytest.raises(PushDecodeError):
        decode_push_body(varint(0xFFFFFFFF) + b"\x00", None, None, None)
    # Exactly at the limit is fine.
    payload = b"".join(length_delimited(99, bytes(5)) for _ in range(125))
    assert len(payload) == limit
    assert decode_push_body(snappy_body(payload), None, None, None, max_message_size=limit).num_series == 0


def test_empty_request_is_fine():
    batch = decode_push_body(snappy_body(b""), None, None, None)
    assert batch.num_series == 0 and batch.num_samples == 0


def test_push_body_passes_exemplar_choice_through():
    request = prompb.WriteRequest()
    series = request.timeseries.add()
    series.exemplars.add(value=1.0)
    body = snappy_body(request.SerializeToString())
    assert len(decode_push_body(body, None, None, None).exemplars) == 1
    assert decode_push_body(body, None, None, None, decode_exemplars=False).exemplars == []
