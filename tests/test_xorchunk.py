"""The Cython XOR chunk codec against hand-derived bytes and against the pure-Python reference codec."""

import math
import random
import shutil
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xor_reference as reference
from mimird._fast import xorchunk

bits_of = reference.float_to_bits
float_of = reference.bits_to_float

STALE_BITS = 0x7FF0000000000002
SPECIAL_VALUE_BITS = [
    0x7FF8000000000000,  # NaN as Go's math.NaN() and numpy write it
    STALE_BITS,
    0xFFF8000000000001,  # a negative NaN with a payload
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0000000000000000,
    0x0000000000000001,  # the smallest subnormal: 63 leading zeros, clamped to 31
    0x3FF0000000000000,  # 1.0
    0xFFFFFFFFFFFFFFFF,
]
INT64 = st.integers(-(2**63), 2**63 - 1)


def decoded_pairs(chunk: bytes) -> list[tuple[int, int]]:
    """The Cython decoder's output as (t, value_bits), the reference decoder's shape."""
    timestamps, values = xorchunk.decode(chunk)
    return list(zip(timestamps.tolist(), values.view(np.uint64).tolist(), strict=True))


# ---------------------------------------------------------------------------------------------------
# Golden chunks, derived by hand from Prometheus's xor.go/bstream.go (not from either codec here).

# (1000, 1.0), (16000, 1.0), (31000, 2.0), (46005, 2.0):
#   00 04                    sample count 4, big-endian
#   d0 0f                    ts_0: zig-zag 1000 -> 2000 = 0b1111_1010000 -> uvarint 0xd0 0x0f
#   3f f0 00 00 00 00 00 00  v_0: float64 bits of 1.0
#   98 75                    ts_1 delta 15000 = 117 * 128 + 24 -> uvarint 0x98 0x75
#   then the bits:  0 (v_1 xor 0)  0 (dod 0)
#     v_2: 1.0 ^ 2.0 = 0x7ff0000000000000: 1 leading zero, 52 trailing, 11 significant bits
#          -> 1 1 00001 001011 11111111111
#     ts_3: dod 5, within 14 bits -> 10 00000000000101
#     v_3: 0
#   = 00110000 10010111 11111111 11100000 00000001 010 + 5 padding bits
#   = 30 97 ff e0 01 40
GOLDEN_FOUR_SAMPLES = bytes.fromhex("0004 d00f 3ff0000000000000 9875 3097ffe00140")

# (0, 0.0) alone: 00 01, varint 00, eight zero bytes of value. The value is written as whole bytes on a
# byte boundary, and Go's bstream.writeByte then appends an empty byte: 12 bytes, not 11.
GOLDEN_ONE_SAMPLE = bytes.fromhex("0001 00 0000000000000000 00")

# (0, 0.0), (15, bits f800000000000000), (30, bits 00000000000000ff):
#   00 03 | 00 | 8 x 00 | 0f (delta 15)
#   v_1: xor f800..00: 0 leading, 59 trailing, 5 significant -> 1 1 00000 000101 11111   (18 bits)
#   ts_2: dod 0 -> 0                                                                      (bit 19)
#   v_2: xor f8000000000000ff: 0 trailing does not fit the 59-trailing window -> new window with
#        64 significant bits, written as 0 in 6 bits -> 1 1 00000 000000                 (bits 20-32)
#        then the 64 bits f8 00 00 00 00 00 00 ff as whole bytes on a byte boundary -> empty byte
#   = 11000000 00101111 11011000 00000000 | f8 00 00 00 00 00 00 ff | 00
GOLDEN_EMPTY_LAST_BYTE = bytes.fromhex("0003 00 0000000000000000 0f c02fd800 f8000000000000ff 00")
GOLDEN_EMPTY_LAST_BYTE_SAMPLES = [(0, 0), (15, 0xF800000000000000), (30, 0x00000000000000FF)]

GOLDEN = [
    (b"\x00\x00", []),
    (GOLDEN_ONE_SAMPLE, [(0, 0)]),
    (GOLDEN_FOUR_SAMPLES, [(1000, bits_of(1.0)), (16000, bits_of(1.0)), (31000, bits_of(2.0)), (46005, bits_of(2.0))]),
    (GOLDEN_EMPTY_LAST_BYTE, GOLDEN_EMPTY_LAST_BYTE_SAMPLES),
]


@pytest.mark.parametrize("chunk, samples", GOLDEN)
def test_golden_chunks(chunk, samples):
    cython_chunk = xorchunk.XORChunk()
    for t, value_bits in samples:
        cython_chunk.append(t, float_of(value_bits))
    assert cython_chunk.bytes() == chunk
    assert cython_chunk.nbytes == len(chunk)
    assert reference.encode((t, float_of(b)) for t, b in samples) == chunk
    assert decoded_pairs(chunk) == samples
    assert reference.decode(chunk) == samples
    assert xorchunk.num_samples(chunk) == len(samples)


def promtool_chunks(tmp_path, series_samples: dict[str, list[tuple[int, float]]]) -> list[bytes]:
    """The XOR chunk data that `promtool tsdb create-blocks-from openmetrics` writes for the series."""
    lines = ["# TYPE g gauge"]
    for instance, samples in series_samples.items():
        lines.extend(f'g{{instance="{instance}"}} {v!r} {t // 1000}.{t % 1000:03d}' for t, v in samples)
    lines.append("# EOF")
    source = tmp_path / "input.om"
    source.write_text("\n".join(lines).replace("nan", "NaN").replace("inf", "Inf") + "\n")
    result = subprocess.run([shutil.which("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(source),
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    chunks = []
    for segment in sorted((tmp_path / "out").glob("*/chunks/*")):
        data = segment.read_bytes()
        assert data[:4] == bytes.fromhex("85bd40dd")
        pos = 8  # magic, version, 3 bytes of padding
        while pos < len(data):
            length, shift = 0, 0
            while data[pos] & 0x80:
                length |= (data[pos] & 0x7F) << shift
                shift, pos = shift + 7, pos + 1
            length |= data[pos] << shift
            assert data[pos + 1] == 1  # XOR encoding
            chunks.append(data[pos + 2 : pos + 2 + length])
            pos += 2 + length + 4  # and the CRC-32C
    return chunks


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (run `make peers`)")
def test_same_bytes_as_promtool(tmp_path):
    # Samples inside one 2 h block: scrape jitter, gaps past the 20-bit delta-of-delta bucket,
    # values with every kind of XOR (equal, NaN, infinities, -0, tiny, huge, random).
    rng = random.Random(11)
    start = 1_700_000_000_000 // 7_200_000 * 7_200_000 + 1_000
    specials = [math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308, 1.0]
    series_samples = {}
    for instance in range(6):
        t, value, samples = start, 0.0, []
        for _ in range(rng.randrange(150, 300)):
            gap = rng.random()
            if gap < 0.5:
                t += 15_000
            elif gap < 0.9:
                t += 15_000 + rng.randrange(-40, 40)
            elif gap < 0.97:
                t += rng.randrange(1, 200_000)
            else:
                t += rng.randrange(600_000, 1_200_000)
            choice = rng.random()
            if choice < 0.2:
                value = rng.choice(specials)
            elif choice < 0.5:
                value = float(rng.randrange(0, 10**6))
            elif choice < 0.8:
                value = value if choice < 0.65 else rng.uniform(-1e6, 1e6)
            else:
                value = rng.uniform(-1, 1) * 10.0 ** rng.randrange(-300, 300)
            samples.append((t, value))
        series_samples[f"i-{instance}"] = [s for s in samples if s[0] < start + 7_100_000]
    chunks = promtool_chunks(tmp_path, series_samples)
    assert len(chunks) > len(series_samples)
    decoded_total, dods, value_bits = 0, [], set()
    for chunk in chunks:
        samples = decoded_pairs(chunk)
        assert reference.decode(chunk) == samples
        timestamps, values = as_arrays(samples)
        assert xorchunk.encode(timestamps, values) == chunk
        decoded_total += len(samples)
        dods.extend(np.diff(timestamps, 2).tolist())
        value_bits.update(b for _, b in samples)
    assert decoded_total == sum(len(s) for s in series_samples.values())
    # Every delta-of-delta bucket and the awkward values really occurred.
    for low, high in [(0, 0), (1, 2**13), (2**13 + 1, 2**16), (2**16 + 1, 2**19), (2**19 + 1, 2**63)]:
        assert any(low <= abs(dod) <= high for dod in dods), (low, high)
    assert {bits_of(-0.0), 0x7FF8000000000001} <= value_bits  # Go's NaN has payload 1


def test_empty_chunk():
    chunk = xorchunk.XORChunk()
    assert chunk.bytes() == b"\x00\x00"
    assert chunk.num_samples == 0
    assert chunk.first_timestamp is None and chunk.last_timestamp is None and chunk.last_value is None
    timestamps, values = xorchunk.decode(chunk.bytes())
    assert timestamps.dtype == np.int64 and values.dtype == np.float64 and len(timestamps) == 0
    assert list(chunk) == []


def test_properties_follow_appends():
    chunk = xorchunk.XORChunk()
    chunk.append(5_000, 1.5)
    assert (chunk.num_samples, chunk.first_timestamp, chunk.last_timestamp, chunk.last_value) == (1, 5000, 5000, 1.5)
    chunk.append(20_000, -2.0)
    assert (chunk.num_samples, chunk.first_timestamp, chunk.last_timestamp, chunk.last_value) == (2, 5000, 20000, -2.0)
    assert list(chunk) == [(5000, 1.5), (20000, -2.0)]
    assert repr(chunk) == f"XORChunk(num_samples=2, nbytes={len(chunk.bytes())})"


def test_stale_nan_constants():
    assert xorchunk.STALE_NAN_BITS == STALE_BITS
    assert bits_of(xorchunk.STALE_NAN) == STALE_BITS
    assert xorchunk.is_stale_nan(xorchunk.STALE_NAN)
    assert not xorchunk.is_stale_nan(math.nan)
    assert not xorchunk.is_stale_nan(1.0)
    assert xorchunk.SAMPLES_PER_CHUNK == 120


def test_nan_payloads_survive():
    values = [float_of(b) for b in SPECIAL_VALUE_BITS]
    timestamps = list(range(0, 15_000 * len(values), 15_000))
    chunk = xorchunk.encode(timestamps, values)
    _, decoded = xorchunk.decode(chunk)
    assert decoded.view(np.uint64).tolist() == SPECIAL_VALUE_BITS
    assert [bits_of(v) for _, v in xorchunk.XORIterator(chunk)] == SPECIAL_VALUE_BITS
    assert xorchunk.is_stale_nan(decoded[1])


def test_reloaded_appender_keeps_prometheus_window_quirk():
    # Prometheus's Appender() on a non-empty chunk takes leading/trailing from its iterator, which
    # starts at 0/0, so when no value wrote a window yet the next change is written as '10' + all 64
    # bits, where an uninterrupted appender writes '11' + its own window.
    continuous = xorchunk.XORChunk()
    for t, v in [(0, 1.0), (10, 1.0), (20, 2.0)]:
        continuous.append(t, v)
    reloaded = xorchunk.XORChunk.from_bytes(xorchunk.encode([0, 10], [1.0, 1.0]))
    reloaded.append(20, 2.0)
    # 00 03 | ts_0 00 | 1.0 | delta 0a | then 0 (v_1 same), 0 (dod 0), 10 + the 64 bits of
    # 1.0 ^ 2.0 = 0x7ff0000000000000: 0010 0111 | 1111 1111 | 52 zero bits + 4 padding
    assert reloaded.bytes() == bytes.fromhex("0003 00 3ff0000000000000 0a 27ff 00000000000000")
    assert continuous.bytes() != reloaded.bytes()
    assert decoded_pairs(reloaded.bytes()) == decoded_pairs(continuous.bytes())


def test_chunk_full_at_65535_samples():
    chunk = xorchunk.XORChunk()
    timestamps = np.arange(0, 65535 * 15, 15, dtype=np.int64)
    chunk.append_many(timestamps, np.ones(65535))
    assert chunk.num_samples == 65535
    assert chunk.bytes()[:2] == b"\xff\xff"
    with pytest.raises(OverflowError):
        chunk.append(10**9, 1.0)
    with pytest.raises(OverflowError):
        xorchunk.XORChunk().append_many(np.zeros(65536, dtype=np.int64), np.zeros(65536))
    decoded_t, decoded_v = xorchunk.decode(chunk.bytes())
    assert np.array_equal(decoded_t, timestamps) and np.all(decoded_v == 1.0)


def test_append_many_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        xorchunk.XORChunk().append_many(np.zeros(3, dtype=np.int64), np.zeros(2))
    with pytest.raises(ValueError):
        xorchunk.encode([1, 2], [1.0])


def test_timestamp_out_of_int64_range():
    with pytest.raises(OverflowError):
        xorchunk.XORChunk().append(2**63, 1.0)


def test_decode_into_checks_outputs():
    chunk = xorchunk.encode([1, 2, 3], [1.0, 2.0, 3.0])
    out_t, out_v = np.zeros(3, dtype=np.int64), np.zeros(3)
    assert xorchunk.decode_into(chunk, out_t, out_v) == 3
    with pytest.raises(ValueError, match="too short"):
        xorchunk.decode_into(chunk, out_t, out_v, offset=1)
    assert xorchunk.decode_into(chunk, out_t, out_v, offset=1, mint=2) == 2
    assert out_t.tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        xorchunk.decode_into(chunk, np.zeros(3, dtype=np.int32), out_v)
    with pytest.raises(ValueError):
        xorchunk.decode_into(chunk, out_t, np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError):
        xorchunk.decode_into(chunk, out_t, out_v, offset=4)
    buffer_t, buffer_v = memoryview(bytearray(24)).cast("q"), memoryview(bytearray(24)).cast("d")
    assert xorchunk.decode_into(chunk, buffer_t, buffer_v) == 3
    assert buffer_t.tolist() == [1, 2, 3] and buffer_v.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError):
        xorchunk.decode_into(chunk, memoryview(bytearray(24)).cast("Q"), buffer_v)
    with pytest.raises(ValueError):
        xorchunk.decode_into(chunk, buffer_t, memoryview(bytearray(24)))
    read_only = np.zeros(3, dtype=np.int64)
    read_only.setflags(write=False)
    with pytest.raises(ValueError):
        xorchunk.decode_into(chunk, read_only, out_v)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x00\x01", b"\x00\x01\x00", b"\x00\x02" + bytes(10), b"\x00\x01" + b"\xff" * 11])
def test_short_or_corrupt_bytes_raise(data):
    with pytest.raises(ValueError):
        xorchunk.decode(data)
    with pytest.raises(ValueError):
        list(xorchunk.XORIterator(data))
    with pytest.raises(ValueError):
        xorchunk.XORChunk.from_bytes(data)


def test_from_bytes_rejects_bytes_after_last_sample():
    chunk = xorchunk.encode([1, 2], [1.0, 1.0])
    assert decoded_pairs(chunk + b"\x00\x00") == decoded_pairs(chunk)
    with pytest.raises(ValueError):
        xorchunk.XORChunk.from_bytes(chunk + b"\x00\x00")
    with pytest.raises(ValueError):
        xorchunk.XORChunk.from_bytes(b"\x00\x00\x00")


def test_iterator_yields_samples_before_corruption():
    chunk = xorchunk.encode([0, 15_000, 30_000, 45_000], [1.0, 2.0, 3.0, 4.0])
    iterator = xorchunk.XORIterator(chunk[:-3])
    assert next(iterator)[0] == 0
    with pytest.raises(ValueError):
        list(iterator)
    assert list(iterator) == []


# ---------------------------------------------------------------------------------------------------
# Property tests: the two codecs against each other.

timestamp_deltas = st.one_of(
    st.just(15_000),  # regular scrapes: delta of delta 0
    st.integers(14_000, 16_000),  # scrape jitter: 14-bit bucket
    st.integers(-(2**21), 2**21),  # 17- and 20-bit buckets and just beyond, negative too
    st.integers(-(2**40), 2**40),  # large gaps and jumps back
    INT64,  # anything; timestamps wrap as Go's int64 does
)
value_changes = st.one_of(
    st.just(("same",)),
    st.tuples(st.just("bits"), st.sampled_from(SPECIAL_VALUE_BITS)),
    st.tuples(st.just("bits"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("bits"), st.integers(0, 10**6).map(lambda n: bits_of(float(n)))),
    st.tuples(st.just("bits"), st.floats(-1e3, 1e3).map(bits_of)),
    st.tuples(st.just("xor"), st.integers(1, 2**64 - 1).map(lambda m: m >> (m % 61))),
)


@st.composite
def series(draw, min_size=0, max_size=130):
    """A list of (t, value_bits)."""
    n = draw(st.integers(min_size, max_size))
    t = draw(st.one_of(st.integers(1_600_000_000_000, 1_800_000_000_000), INT64))
    deltas = draw(st.lists(timestamp_deltas, min_size=n, max_size=n))
    changes = draw(st.lists(value_changes, min_size=n, max_size=n))
    samples, value_bits = [], 0
    for delta, change in zip(deltas, changes, strict=True):
        t = reference.to_signed(t + delta)
        if change[0] == "bits":
            value_bits = change[1]
        elif change[0] == "xor":
            value_bits ^= change[1]
        samples.append((t, value_bits))
    return samples


def as_arrays(samples):
    timestamps = np.array([t for t, _ in samples], dtype=np.int64)
    values = np.array([b for _, b in samples], dtype=np.uint64).view(np.float64)
    return timestamps, values


property_settings = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@property_settings
@given(series())
def test_same_bytes_as_reference_at_every_append(samples):
    cython_chunk, reference_chunk = xorchunk.XORChunk(), reference.XORAppender()
    for t, value_bits in samples:
        size_before = cython_chunk.nbytes
        cython_chunk.append(t, float_of(value_bits))
        reference_chunk.append(t, float_of(value_bits))
        assert cython_chunk.bytes() == reference_chunk.bytes()
        assert cython_chunk.nbytes - size_before <= xorchunk.MAX_SAMPLE_BYTES
    chunk = cython_chunk.bytes()
    assert xorchunk.encode(*as_arrays(samples)) == chunk
    assert decoded_pairs(chunk) == samples
    assert reference.decode(chunk) == samples
    assert [(t, bits_of(v)) for t, v in xorchunk.XORIterator(chunk)] == samples
    if samples:
        assert cython_chunk.first_timestamp == samples[0][0]
        assert cython_chunk.last_timestamp == samples[-1][0]
        assert bits_of(cython_chunk.last_value) == samples[-1][1]


@settings(property_settings, max_examples=60)
@given(series(min_size=0), st.data())
def test_reload_and_continue_as_reference(samples, data):
    split = data.draw(st.integers(0, len(samples)))
    head = xorchunk.encode(*as_arrays(samples[:split]))
    cython_chunk = xorchunk.XORChunk.from_bytes(head)
    reference_chunk = reference.XORAppender.from_bytes(head)
    assert cython_chunk.bytes() == head
    assert cython_chunk.num_samples == split
    for t, value_bits in samples[split:]:
        cython_chunk.append(t, float_of(value_bits))
        reference_chunk.append(t, float_of(value_bits))
    assert cython_chunk.bytes() == reference_chunk.bytes()
    assert decoded_pairs(cython_chunk.bytes()) == samples
    if samples:
        assert cython_chunk.first_timestamp == samples[0][0]


@settings(property_settings, max_examples=80)
@given(series(min_size=1, max_size=40), st.data())
def test_time_range_filter(samples, data):
    chunk = xorchunk.encode(*as_arrays(samples))
    bound = st.one_of(st.sampled_from([t for t, _ in samples]), INT64)
    mint, maxt = data.draw(bound), data.draw(bound)
    expected = [(t, v) for t, v in samples if mint <= t <= maxt]
    timestamps, values = xorchunk.decode(chunk, mint, maxt)
    assert list(zip(timestamps.tolist(), values.view(np.uint64).tolist(), strict=True)) == expected
    out_t, out_v = np.full(len(samples) + 2, -1, dtype=np.int64), np.zeros(len(samples) + 2)
    count = xorchunk.decode_into(chunk, out_t, out_v, offset=2, mint=mint, maxt=maxt)
    assert count == len(expected)
    assert out_t[2 : 2 + count].tolist() == [t for t, _ in expected]
    assert out_t[:2].tolist() == [-1, -1]


@settings(property_settings, max_examples=20)
@given(series(min_size=1, max_size=300), st.integers(1_000, 2_000_000))
def test_decode_into_concatenates_chunks(samples, cut):
    timestamps, values = as_arrays(samples)
    size = xorchunk.SAMPLES_PER_CHUNK
    chunks = [xorchunk.encode(timestamps[i : i + size], values[i : i + size]) for i in range(0, len(samples), size)]
    total = sum(xorchunk.num_samples(chunk) for chunk in chunks)
    out_t, out_v = np.empty(total, dtype=np.int64), np.empty(total)
    mint = int(timestamps.min()) + cut
    filled = 0
    for chunk in chunks:
        filled += xorchunk.decode_into(chunk, out_t, out_v, offset=filled, mint=mint)
    keep = timestamps >= mint
    assert out_t[:filled].tolist() == timestamps[keep].tolist()
    assert out_v[:filled].view(np.uint64).tolist() == values[keep].view(np.uint64).tolist()
    batch_t, batch_v = xorchunk.decode_chunks(chunks, mint=mint)
    assert batch_t.tolist() == timestamps[keep].tolist()
    assert batch_v.view(np.uint64).tolist() == values[keep].view(np.uint64).tolist()



@st.composite
def series_with_runs(draw, max_size=300):
    """(t, value_bits) samples where runs of on-time scrapes with an unchanged value (two zero bits a
    sample, which the decoder reads a run at a time) alternate with samples of any kind."""
    t = draw(st.integers(1_600_000_000_000, 1_800_000_000_000))
    value_bits = bits_of(1.0)
    delta = 15_000
    samples = []
    while len(samples) < max_size and draw(st.booleans() | st.just(True)):
        for _ in range(draw(st.integers(0, 70))):
            t += delta
            samples.append((t, value_bits))
        if draw(st.booleans()):
            delta = draw(timestamp_deltas.filter(lambda d: 0 < d < 2**40))
            change = draw(value_changes)
            if change[0] == "bits":
                value_bits = change[1]
            elif change[0] == "xor":
                value_bits ^= change[1]
            t += delta
            samples.append((t, value_bits))
        if draw(st.integers(0, 3)) == 0:
            break
    return samples[:max_size] or [(t, value_bits)]


@property_settings
@given(series_with_runs(), st.data())
def test_runs_of_unchanged_samples(samples, data):
    chunks = [xorchunk.encode(*as_arrays(samples[i : i + 120])) for i in range(0, len(samples), 120)]
    for chunk in chunks:
        assert decoded_pairs(chunk) == list(reference.XORDecoder(chunk))
    bound = st.one_of(st.sampled_from([t for t, _ in samples]), st.integers(samples[0][0], samples[-1][0]))
    mint, maxt = data.draw(bound), data.draw(bound)
    timestamps, values = xorchunk.decode_chunks(chunks, mint=mint, maxt=maxt)
    expected = [(t, v) for t, v in samples if mint <= t <= maxt]
    assert list(zip(timestamps.tolist(), values.view(np.uint64).tolist(), strict=True)) == expected
    chunk = chunks[data.draw(st.integers(0, len(chunks) - 1))]
    assert_decoders_agree(chunk[: data.draw(st.integers(0, len(chunk) - 1))])

def test_decode_chunks():
    first = xorchunk.encode([1, 2, 3], [1.0, 2.0, 3.0])
    second = xorchunk.encode([4, 5], [4.0, 5.0])
    timestamps, values = xorchunk.decode_chunks([first, bytearray(second), memoryview(first)], mint=2, maxt=4)
    assert timestamps.tolist() == [2, 3, 4, 2, 3]
    assert values.tolist() == [2.0, 3.0, 4.0, 2.0, 3.0]
    timestamps, values = xorchunk.decode_chunks([])
    assert timestamps.dtype == np.int64 and values.dtype == np.float64 and len(timestamps) == 0
    with pytest.raises(ValueError, match="chunk 1"):
        xorchunk.decode_chunks([first, second[:-2]])
    with pytest.raises(ValueError, match="chunk 0"):
        xorchunk.decode_chunks([b"\x00"])


def reference_outcome(blob):
    """What the reference decoder makes of `blob`: (samples before any error, whether it failed)."""
    decoded = []
    try:
        for sample in reference.XORDecoder(blob):
            decoded.append(sample)
    except ValueError:
        return decoded, True
    return decoded, False


def assert_decoders_agree(blob):
    expected, failed = reference_outcome(blob)
    got = []
    if failed:
        with pytest.raises(ValueError):
            xorchunk.decode(blob)
        with pytest.raises(ValueError):
            for t, v in xorchunk.XORIterator(blob):
                got.append((t, bits_of(v)))
        assert got == expected
        with pytest.raises(ValueError):
            xorchunk.XORChunk.from_bytes(blob)
        with pytest.raises(ValueError):
            xorchunk.decode_chunks([blob])
    else:
        assert decoded_pairs(blob) == expected
        assert [(t, bits_of(v)) for t, v in xorchunk.XORIterator(blob)] == expected


@settings(property_settings, max_examples=70)
@given(series(min_size=1, max_size=40), st.data())
def test_truncated_chunks(samples, data):
    chunk = xorchunk.encode(*as_arrays(samples))
    assert_decoders_agree(chunk[: data.draw(st.integers(0, len(chunk) - 1))])


@settings(property_settings, max_examples=70)
@given(series(min_size=1, max_size=40), st.data())
def test_corrupted_chunks(samples, data):
    blob = bytearray(xorchunk.encode(*as_arrays(samples)))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    assert_decoders_agree(bytes(blob))


@property_settings
@given(st.binary(max_size=48))
def test_random_bytes(blob):
    assert_decoders_agree(blob)


def test_accepts_any_bytes_like():
    chunk = xorchunk.encode([1, 2, 3], [1.0, 2.0, 4.0])
    for data in (bytearray(chunk), memoryview(chunk), np.frombuffer(chunk, dtype=np.uint8)):
        assert decoded_pairs(bytes(data)) == [(t, bits_of(v)) for t, v in xorchunk.XORIterator(data)]
        assert xorchunk.decode(data)[0].tolist() == [1, 2, 3]
        assert xorchunk.XORChunk.from_bytes(data).bytes() == chunk


def test_struct_sanity_of_reference_helpers():
    assert struct.pack(">d", 1.0) == bytes.fromhex("3ff0000000000000")
    assert reference.uvarint(300) == b"\xac\x02"
