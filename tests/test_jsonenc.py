"""The Cython matrix/vector renderer (`mimird._fast.jsonenc`) writes the bytes of the Python reference
(`jsonenc_reference`, built on jsonfmt's single-value formatters) for any labels, timestamps and values."""

from __future__ import annotations

import json
import math
import random
import struct
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import jsonenc_reference as reference
from mimird._fast import jsonenc
from mimird.promql.value import Matrix, Sample, Series, Vector
from mimird.querier import jsonfmt

property_settings = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values where Go's and Python's notations part ways, or rounding is delicate.
EDGE_VALUES = [
    0.0, -0.0, 1.0, -1.0, 0.5, 1 / 3, 0.1 + 0.2, math.nan, math.inf, -math.inf,
    1e-7, 1e-6, 9.999999999999999e-7, 1e-5, 1.5e-5, 1e-4, 1e15, 1e16, 1.2345e17, 1e20, 9.99999999999999e20,
    1e21, 1.5e21, 1e22, 2.0 ** 53, 2.0 ** 53 - 1, 2.0 ** 53 + 2, 2.0 ** 63, 2.0 ** 64, -(2.0 ** 63),
    5e-324, 2.2250738585072014e-308, 2.225073858507201e-308, 1.7976931348623157e308, 123456789.123,
    -17.25, 4338.0, 1e300, -1e-300, 0.000001234,
    struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0],  # Prometheus's stale marker
]

EDGE_TIMESTAMPS = [0, 1, -1, 5, 999, 1000, 1001, -999, -1000, -1001, 1500, -1500, 1435781451781,
                   1435781451000, 2 ** 63 - 1, -(2 ** 63), 2 ** 53, -(2 ** 53) - 7]

floats = st.one_of(st.sampled_from(EDGE_VALUES), st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(-(2 ** 60), 2 ** 60).map(float),
                   st.integers(-400, 400).map(lambda e: 10.0 ** e if -323 < e < 309 else 0.0),
                   # few decimals, as most gauges: the kernel's shortcut around dtoa
                   st.builds(round, st.floats(-1e16, 1e16), st.integers(0, 20)),
                   st.builds(lambda m, e: float(f"{m}e{e}"), st.integers(-(10 ** 17), 10 ** 17), st.integers(-25, 5)),
                   # full-precision values from 2**-15 to 2**51, where the kernel finds 16-17 digits itself
                   st.integers(0x3F00000000000000, 0x4320000000000000).map(
                       lambda bits: struct.unpack("<d", struct.pack("<q", bits))[0]))
timestamps = st.one_of(st.sampled_from(EDGE_TIMESTAMPS),
                       st.integers(-(2 ** 63), 2 ** 63 - 1),
                       st.integers(-(10 ** 7), 10 ** 7).map(lambda s: s * 1000),
                       st.integers(-(10 ** 13), 10 ** 13))
# Label text with what needs escaping: quotes, backslashes, control characters, HTML-sensitive characters
# (kept as they are for query results), U+2028/9, non-BMP characters and lone surrogates.
label_text = st.text(alphabet=st.one_of(
    st.sampled_from(['"', "\\", "\n", "\r", "\t", "\x00", "\x01", "\x1f", "\x7f", "<", ">", "&", "\u2028",
                     "\u2029", "é", "€", "😀", "\ud800", "\udfff", "\ufffd", "a", "_"]),
    st.characters()), max_size=12)
# Sorted, as the engine's Labels are (the kernel's shortcut), and in any order (it sorts).
label_pairs = st.lists(st.tuples(label_text, label_text), max_size=5, unique_by=lambda pair: pair[0])
label_sets = st.one_of(label_pairs.map(sorted).map(tuple), label_pairs.map(tuple))


@st.composite
def series_lists(draw):
    out = []
    for _ in range(draw(st.integers(0, 4))):
        points = draw(st.lists(st.tuples(timestamps, floats), max_size=12))
        ts = np.array([t for t, _ in points], dtype=np.int64)
        vals = np.array([v for _, v in points], dtype=np.float64)
        out.append(Series(draw(label_sets), ts, vals))
    return Matrix(out)


vectors = st.lists(st.builds(Sample, label_sets, timestamps, floats), max_size=6).map(Vector)


@given(floats)
@property_settings
def test_format_float_equals_jsonfmt(value):
    assert jsonenc.format_float(value) == jsonfmt.format_float(value)


@pytest.mark.parametrize("value", EDGE_VALUES)
def test_edge_values(value):
    assert jsonenc.format_float(value) == jsonfmt.format_float(value)


@given(timestamps)
@property_settings
def test_format_timestamp_equals_jsonfmt(ms):
    assert jsonenc.format_timestamp(ms) == jsonfmt.format_timestamp(ms)


@given(series_lists())
@property_settings
@example(Matrix([Series((("__name__", 'up"\\'), ("job", "<&>\u2028\x01\ud800😀")),
                        np.array([1000, 1500, -3000, -5], dtype=np.int64),
                        np.array([-0.0, math.nan, 1e21, 1e-7]))]))
@example(Matrix([Series((("a", "b"),), np.array([], dtype=np.int64), np.array([]))]))
def test_render_matrix_equals_reference(matrix):
    rendered = jsonenc.render_matrix(matrix)
    assert rendered == reference.render_matrix(matrix)
    assert rendered.encode() == reference.render_matrix(matrix).encode()


# Values from a small pool, so that runs of equal values (rendered by copying the text before) and their
# near misses (0.0 and -0.0, NaNs) follow one another.
REPEATING = st.sampled_from([0.0, -0.0, math.nan, 1.5, 0.1, 1e21, -7.0, 2.5e-7, math.inf])


@given(st.lists(st.tuples(label_sets, st.lists(REPEATING, max_size=40)), max_size=4))
@property_settings
@example([((("a", "b"),), [0.1, 0.1, 0.1, -0.0, 0.0, 0.0, math.nan, math.nan, 1e21, 1e21, 0.1])])
def test_render_matrix_with_repeated_values_equals_reference(drawn):
    matrix = Matrix([Series(labels, np.arange(len(vals), dtype=np.int64) * 15_000 + 500, np.array(vals, dtype=np.float64))
                     for labels, vals in drawn])
    assert jsonenc.render_matrix(matrix) == reference.render_matrix(matrix)


@given(vectors)
@property_settings
def test_render_vector_equals_reference(vector):
    assert jsonenc.render_vector(vector) == reference.render_vector(vector)


def test_value_json_is_valid_json_with_prometheus_strings():
    matrix = Matrix([Series((("job", "api"), ("__name__", "x")), np.arange(3, dtype=np.int64) * 15_000 + 500,
                            np.array([1.0, math.inf, 2.5e-7]))])
    body = json.loads(jsonfmt.value_json(matrix))
    assert body == {"resultType": "matrix", "result": [{"metric": {"__name__": "x", "job": "api"},
                    "values": [[0.5, "1"], [15.5, "+Inf"], [30.5, "2.5e-07"]]}]}
    vector = Vector([Sample((), 1000, math.nan)])
    assert jsonfmt.value_json(vector) == '{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}'


@given(st.one_of(series_lists(), vectors), st.lists(st.text(max_size=8), max_size=2),
       st.lists(st.text(max_size=8), max_size=2), st.one_of(st.none(), st.just('{"timings":{}}')))
@property_settings
@example(Matrix([Series((("a", "\ud800é"),), np.array([5], dtype=np.int64), np.array([0.5]))]), ['w"\udcff'], ["i"],
         '{"x":1}')
def test_success_value_equals_success_of_value_json(value, warnings, infos, stats_data):
    data = jsonfmt.value_json(value)
    if stats_data is not None:
        data = data[:-1] + ',"stats":' + stats_data + "}"
    expected = jsonfmt.success(data, warnings, infos, html=False)
    got = jsonfmt.success_value(value, warnings, infos, stats_data)
    assert (got.status, got.headers, got.body) == (expected.status, expected.headers, expected.body)


def test_arrays_of_any_layout_and_length_checks():
    ts = np.arange(10, dtype=np.int64)[::2] * 1000
    vals = np.linspace(0, 1, 10)[::2]
    matrix = [Series((("a", "b"),), ts, vals)]
    assert jsonenc.render_matrix(matrix) == reference.render_matrix(matrix)
    with pytest.raises(ValueError):
        jsonenc.render_matrix([Series((), np.zeros(2, dtype=np.int64), np.zeros(3))])
    with pytest.raises(TypeError):
        jsonenc.render_vector([Sample((("a", 1),), 0, 1.0)])
    duplicate_names = (("b", "2"), ("a", "1"), ("a", "0"))
    vector = [Sample(duplicate_names, 0, 1.0), Sample(list(duplicate_names), 0, 1.0)]
    assert jsonenc.render_vector(vector) == reference.render_vector(vector)


def test_bulk_reference_formatters_agree_with_single():
    values = [0.0, -0.0, 1.0, 2.5e-5, 3e-7, 1e16, 1.5e21, math.nan, math.inf, -math.inf, -17.25, 1 / 3]
    assert reference.format_floats(values) == [jsonfmt.format_float(v) for v in values]
    stamps = [0, 1000, -3000, 1435781451000]
    assert reference.format_timestamps(stamps) == [jsonfmt.format_timestamp(t) for t in stamps]
    stamps.append(1500)
    assert reference.format_timestamps(stamps) == [jsonfmt.format_timestamp(t) for t in stamps]


# Shortest digits over the whole double range: the kernel's own digit search (Ryu, and a shortcut for
# values with few decimals) against repr's digits in Go's layout (jsonenc_reference.format_floats).

def double_from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def with_neighbours(values, steps: int = 1):
    """Each finite value, the `steps` doubles either side of it, and the negations of all of them."""
    out = []
    for value in values:
        below = above = value
        out.append(value)
        for _ in range(steps):
            below = math.nextafter(below, -math.inf)
            above = math.nextafter(above, math.inf)
            out.extend((below, above))
    return [v for v in out if math.isfinite(v)] + [-v for v in out if math.isfinite(v)]


def mismatches(values):
    """(value, kernel's text, reference text) wherever the two disagree."""
    values = list(values)
    expected = reference.format_floats(values)
    return [(value, got, want) for value, got, want in
            zip(values, (jsonenc.format_float(v) for v in values), expected, strict=True) if got != want]


@pytest.mark.parametrize(("value", "go_text"), [
    (1e21, "1e+21"), (1e-7, "1e-07"), (1.5e-7, "1.5e-07"), (-2.5e-10, "-2.5e-10"), (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"), (1e100, "1e+100"), (1e20, "100000000000000000000"),
    (1.2345678901234568e20, "123456789012345680000"), (1e-6, "0.000001"), (0.000001234, "0.000001234"),
    (-0.0, "-0"), (0.0, "0"), (2.0 ** 53 + 2, "9007199254740994"), (2.0 ** 63, "9223372036854776000"),
    (2.0 ** 64, "18446744073709552000"), (0.1, "0.1"), (1 / 3, "0.3333333333333333"), (100.5, "100.5"),
    (1e16, "10000000000000000"), (123456.789e3, "123456789"), (2.0 ** 50 + 0.25, "1125899906842624.2"),
    (2.0 ** 50 + 0.75, "1125899906842624.8"), (9.999999999999999e20, "999999999999999900000"),
])
def test_known_go_renderings(value, go_text):
    # strings as Go's strconv.FormatFloat(v, 'f' or 'e', -1, 64) prints them, independent of repr
    assert jsonenc.format_float(value) == go_text


def test_powers_of_two_and_their_neighbours():
    assert mismatches(with_neighbours([2.0 ** e for e in range(-1074, 1024)], steps=2)) == []


def test_powers_of_ten_and_their_neighbours():
    assert mismatches(with_neighbours([float(f"1e{e}") for e in range(-323, 309)], steps=2)) == []


def test_subnormals_and_range_ends():
    largest_subnormal = double_from_bits(0x000FFFFFFFFFFFFF)
    rng = np.random.default_rng(7)
    random_subnormals = [double_from_bits(int(b)) for b in rng.integers(1, 1 << 52, 20_000, dtype=np.uint64)]
    values = ([double_from_bits(m) for m in range(1, 2000)] + random_subnormals
              + with_neighbours([largest_subnormal, 2.2250738585072014e-308, sys.float_info.max], steps=3))
    assert mismatches(values) == []


def test_every_digit_count_at_every_magnitude():
    # 1 to 17 significant digits times every decimal exponent, as text parsed to the nearest double
    rng = random.Random(17)
    values = []
    for digit_count in range(1, 18):
        for exponent in range(-343, 309):
            for _ in range(2):
                digits = rng.randrange(10 ** (digit_count - 1), 10 ** digit_count)
                value = float(f"{digits}e{exponent}")
                if value != 0 and math.isfinite(value):
                    values.append(value)
    assert mismatches(with_neighbours(values)) == []


def test_few_decimals_around_every_scale():
    # the kernel's shortcut for up to six decimals below 2**30, its edges and the values next to them
    rng = random.Random(23)
    values = [round(rng.random() * 10.0 ** rng.randint(-7, 11), rng.randint(0, 8)) for _ in range(60_000)]
    values += [k / 10 ** d for d in range(1, 9) for k in range(1, 2000)]
    values += [rng.randrange(1 << 30) + rng.randrange(10 ** 6) / 10 ** 6 for _ in range(20_000)]
    values += [2.0 ** 30 - k / 16 for k in range(1, 200)] + [2.0 ** 30 + k / 16 for k in range(200)]
    assert mismatches(with_neighbours(values)) == []


def test_integer_boundary_and_exact_ties():
    # around 2**53, where the integer shortcut stops, and where two shortest decimals are equally near
    # (k/4 above 2**50 with one decimal: .25 prints .2, .75 prints .8)
    rng = random.Random(53)
    values = with_neighbours([2.0 ** 53, 2.0 ** 53 - 1, 2.0 ** 53 + 2, 2.0 ** 54, 2.0 ** 52 + 0.5], steps=8)
    for exponent in range(40, 64):
        base = 2.0 ** exponent
        spacing = math.ulp(base)
        values += [base + k * spacing for k in range(1, 64)]
        values += [base + rng.randrange(1 << 52) * spacing for _ in range(2000)]
    assert mismatches(values) == []


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=1000, deadline=None)
def test_any_float_equals_repr_in_go_layout(value):
    assert jsonenc.format_float(value) == reference.format_floats([value])[0]


@given(st.integers(0, (1 << 64) - 1).map(double_from_bits))
@settings(max_examples=1000, deadline=None)
def test_any_bit_pattern_equals_repr_in_go_layout(value):
    assert jsonenc.format_float(value) == reference.format_floats([value])[0]


def test_random_bit_patterns_sweep():
    # a fixed sample of the 2**64 patterns (NaNs and infinities included): about 4 s
    patterns = np.random.default_rng(20261129).integers(0, 1 << 64, 1_000_000, dtype=np.uint64, endpoint=False)
    assert mismatches(patterns.view(np.float64).tolist())[:5] == []
