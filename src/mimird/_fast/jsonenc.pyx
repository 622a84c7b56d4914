"""Prometheus-exact JSON for PromQL matrices and vectors, rendered in one C buffer.

This is the hot path of `mimird.querier.jsonfmt.value_json`: a range query that returns thousands of
points spends most of its response time turning samples into text. The bytes written here are the
ones jsonfmt's rules define (and `tests/jsonenc_reference.py` renders in plain Python):

* sample values as Prometheus's jsonutil.MarshalFloat: `strconv.FormatFloat(v, 'f', -1, 64)`, the
  shortest digits that round-trip, switching to Go's exponent form below 1e-6 and from 1e21 on
  (`1e-07`, `1.5e+21`), and `NaN`, `+Inf`, `-Inf`;
* timestamps as seconds, with exactly three decimals when the millisecond part is not zero;
* label sets as objects in label order, strings escaped as Mimir's query-frontend codec does
  (no HTML escaping: only `"`, `\\`, control characters; lone surrogates become `\\ufffd`).

Shortest digits are those of `repr(float)`. Integral values below 2**53 are their integer's digits;
other values from 1e-4 to 1e15 (nearly every gauge) are found with exact 128-bit integer arithmetic
(`put_short_decimal`); the rest, and exact ties, go through CPython's own dtoa (`PyOS_double_to_string`
in 'r' mode), whose exponent form is rewritten where Go writes fixed notation.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_Compare, PyUnicode_DecodeUTF8
from libc.math cimport fabs, floor, isinf, isnan, signbit
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, strlen

import numpy as np

cdef extern from *:
    """typedef unsigned __int128 jsonenc_u128;"""
    ctypedef unsigned long long u128 "jsonenc_u128"

cdef extern from "Python.h":
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags, int *ptype) except NULL
    int PyUnicode_KIND(object text)
    void *PyUnicode_DATA(object text)
    Py_UCS4 PyUnicode_READ(int kind, void *data, Py_ssize_t index) nogil

# Integral doubles below this are exactly their integer's digits (no two integers share a double).
cdef double EXACT_INTEGER_LIMIT = 9007199254740992.0
cdef const char *HEX_DIGITS = b"0123456789abcdef"
# "00" "01" ... "99": decimal output two digits at a time
cdef const char *DIGIT_PAIRS = (b"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                b"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                b"8081828384858687888990919293949596979899")
cdef uint64_t TWO_TO_52 = 4503599627370496
cdef uint64_t TEN_TO_18 = 1000000000000000000
# 10**0 .. 10**22, every one exact in a double.
cdef double POWERS_OF_TEN[23]
for _exponent in range(23):
    POWERS_OF_TEN[_exponent] = float(10 ** _exponent)
# 10**0 .. 10**19, the ones a uint64 holds.
cdef uint64_t POWERS_OF_TEN_U64[20]
for _exponent in range(20):
    POWERS_OF_TEN_U64[_exponent] = 10 ** _exponent
# The most decimals put_short_decimal tries (its interval ends times 10**21 stay below 2**126).
cdef enum:
    MAX_DECIMALS = 21


cdef struct Buffer:
    char *data
    Py_ssize_t length
    Py_ssize_t capacity


cdef int buffer_reserve(Buffer *buf, Py_ssize_t extra) except -1:
    cdef Py_ssize_t wanted = buf.length + extra
    cdef Py_ssize_t capacity
    cdef char *grown
    if wanted <= buf.capacity:
        return 0
    capacity = buf.capacity * 2 if buf.capacity else 4096
    while capacity < wanted:
        capacity *= 2
    grown = <char *>PyMem_Realloc(buf.data, capacity)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.capacity = capacity
    return 0


cdef inline int put_bytes(Buffer *buf, const char *text, Py_ssize_t size) except -1:
    buffer_reserve(buf, size)
    memcpy(buf.data + buf.length, text, size)
    buf.length += size
    return 0


cdef inline int put_cstr(Buffer *buf, const char *text) except -1:
    return put_bytes(buf, text, strlen(text))


cdef inline void put_unsigned(Buffer *buf, uint64_t number) noexcept:
    """Decimal digits of `number`; the caller has reserved 20 bytes."""
    cdef char digits[20]
    cdef int count = 0
    cdef uint64_t pair
    # two digits per division: about half the work for the long numbers of timestamps and values
    while number >= 100:
        pair = number % 100
        number //= 100
        memcpy(&digits[18 - count], &DIGIT_PAIRS[2 * pair], 2)
        count += 2
    if number >= 10:
        memcpy(&digits[18 - count], &DIGIT_PAIRS[2 * number], 2)
        count += 2
    else:
        digits[19 - count] = <char>(48 + number)
        count += 1
    memcpy(buf.data + buf.length, &digits[20 - count], count)
    buf.length += count


cdef inline void put_fraction_digits(char *out, uint64_t fraction, int decimals) noexcept:
    # exactly `decimals` digits of `fraction` (< 10**decimals), zero-padded on the left
    cdef int i = decimals
    cdef uint64_t pair
    while i >= 2:
        pair = fraction % 100
        fraction //= 100
        i -= 2
        memcpy(out + i, &DIGIT_PAIRS[2 * pair], 2)
    if i == 1:
        out[0] = <char>(48 + fraction % 10)


cdef int put_timestamp(Buffer *buf, int64_t ms) except -1:
    """Milliseconds as `seconds` or `seconds.mmm` (jsonutil.MarshalTimestamp)."""
    cdef uint64_t magnitude
    cdef uint64_t fraction
    buffer_reserve(buf, 26)
    if ms < 0:
        buf.data[buf.length] = b'-'
        buf.length += 1
        magnitude = <uint64_t>0 - <uint64_t>ms
    else:
        magnitude = <uint64_t>ms
    put_unsigned(buf, magnitude // 1000)
    fraction = magnitude % 1000
    if fraction:
        buf.data[buf.length] = b'.'
        buf.data[buf.length + 1] = <char>(48 + fraction // 100)
        buf.data[buf.length + 2] = <char>(48 + fraction // 10 % 10)
        buf.data[buf.length + 3] = <char>(48 + fraction % 10)
        buf.length += 4
    return 0


cdef int put_fixed_from_exponent(Buffer *buf, const char *shortest) except -1:
    """Rewrite repr's `d.ddde±XX` as Go's fixed notation (for 1e-6 <= |v| < 1e-4 and 1e16 <= |v| < 1e21,
    where Python switches to the exponent form and Go does not)."""
    cdef char digits[32]
    cdef int digit_count = 0
    cdef int exponent = 0
    cdef int exponent_sign = 1
    cdef int integer_digits
    cdef int i
    cdef const char *p = shortest
    buffer_reserve(buf, 64)
    if p[0] == b'-':
        buf.data[buf.length] = b'-'
        buf.length += 1
        p += 1
    while p[0] != b'e':
        if p[0] != b'.' and digit_count < 32:
            digits[digit_count] = p[0]
            digit_count += 1
        p += 1
    p += 1
    if p[0] == b'-':
        exponent_sign = -1
    if p[0] == b'-' or p[0] == b'+':
        p += 1
    while p[0] != 0:
        exponent = exponent * 10 + (p[0] - 48)
        p += 1
    exponent *= exponent_sign
    if exponent >= 0:
        integer_digits = exponent + 1
        for i in range(integer_digits):
            buf.data[buf.length] = digits[i] if i < digit_count else b'0'
            buf.length += 1
        if digit_count > integer_digits:
            buf.data[buf.length] = b'.'
            buf.length += 1
            for i in range(integer_digits, digit_count):
                buf.data[buf.length] = digits[i]
                buf.length += 1
    else:
        buf.data[buf.length] = b'0'
        buf.data[buf.length + 1] = b'.'
        buf.length += 2
        for i in range(-exponent - 1):
            buf.data[buf.length] = b'0'
            buf.length += 1
        memcpy(buf.data + buf.length, digits, digit_count)
        buf.length += digit_count
    return 0


cdef inline bint _interval_holds_integer(u128 low, u128 high, int shift, int decimals, bint ends_included,
                                         u128 *first, u128 *last) noexcept:
    # [low, high] / 2**shift scaled by 10**decimals: the first and last integers inside (ends as allowed)
    cdef u128 scale = <u128>POWERS_OF_TEN_U64[decimals if decimals < 20 else 19]
    cdef int extra
    for extra in range(decimals - 19):
        scale *= 10
    low *= scale
    high *= scale
    first[0] = (low + ((<u128>1 << shift) - 1)) >> shift
    last[0] = high >> shift
    if not ends_included:
        if (first[0] << shift) == low:
            first[0] += 1
        if (last[0] << shift) == high:
            last[0] -= 1
    return first[0] <= last[0]


cdef int put_short_decimal(Buffer *buf, double value, double magnitude) except -1:
    """Write `value` (1e-4 <= |value| < 1e15, not integral) as `n / 10**k` with the fewest decimals k
    that read back as it, and return 1; return 0, writing nothing, when two such n are equally near, for dtoa to
    pick.

    Exact integer arithmetic: |v| = m / 2**q with m the 53-bit mantissa, and the decimals that read
    back as v are those inside its rounding interval, [(4m - 2) / 2**(q + 2), (4m + 2) / 2**(q + 2)]
    (4m - 1 below a power of two, where the next smaller double is closer), its ends included when m
    is even (round half to even). Scaled by 10**k both ends stay below 2**125. The first k whose
    interval holds an integer gives the fewest significant digits; of those integers repr (dtoa's
    shortest mode) prints the one nearest to v * 10**k."""
    # |v| = mantissa / 2**(53 - binary_exponent), read from the bits (frexp's convention: every value here
    # is a normal double, so the mantissa carries its implicit leading bit)
    cdef uint64_t bits
    memcpy(&bits, &magnitude, 8)
    cdef int binary_exponent = <int>((bits >> 52) & 0x7FF) - 1022
    cdef uint64_t mantissa = (bits & (TWO_TO_52 - 1)) | TWO_TO_52
    cdef int shift = 53 - binary_exponent + 2
    cdef u128 low = <u128>(4 * mantissa - (1 if mantissa == TWO_TO_52 else 2))
    cdef u128 high = <u128>(4 * mantissa + 2)
    cdef u128 first
    cdef u128 last
    cdef u128 scaled
    cdef u128 remainder
    cdef u128 nearest
    cdef uint64_t digits
    cdef uint64_t integer_part
    cdef uint64_t fraction_part
    cdef uint64_t unit
    cdef bint ends_included = mantissa % 2 == 0
    cdef int decimals
    cdef int lo_decimals = 1
    cdef int hi_decimals = MAX_DECIMALS + 1
    # Most gauges have a few decimals: try those one by one. If the interval scaled by 10**k holds an
    # integer n, scaled by 10**(k+1) it holds 10n: the property is monotone in k, so for full-precision
    # values (15-17 digits) the fewest decimals are found by bisection (4-5 probes instead of up to 21).
    cdef u128 probe_first
    cdef u128 probe_last
    while lo_decimals <= 3:
        if _interval_holds_integer(low, high, shift, lo_decimals, ends_included, &first, &last):
            hi_decimals = lo_decimals
            break
        lo_decimals += 1
    while lo_decimals < hi_decimals:
        decimals = (lo_decimals + hi_decimals) // 2
        if _interval_holds_integer(low, high, shift, decimals, ends_included, &probe_first, &probe_last):
            # the bounds of the fewest decimals found so far: the last success is the answer
            hi_decimals = decimals
            first, last = probe_first, probe_last
        else:
            lo_decimals = decimals + 1
    decimals = lo_decimals
    if decimals > MAX_DECIMALS:
        return 0
    if first != last:
        # Several shortest forms: dtoa prints the one nearest to v; on an exact tie, leave it to dtoa.
        if decimals >= 20:
            return 0
        scaled = (<u128>(4 * mantissa)) * <u128>POWERS_OF_TEN_U64[decimals]
        remainder = scaled & ((<u128>1 << shift) - 1)
        if remainder == (<u128>1 << (shift - 1)):
            return 0
        nearest = (scaled >> shift) + (1 if remainder > (<u128>1 << (shift - 1)) else 0)
        first = min(max(nearest, first), last)
    if first >= TEN_TO_18:
        return 0
    digits = <uint64_t>first
    if decimals > 18:
        integer_part = 0
        fraction_part = digits
    else:
        unit = <uint64_t>POWERS_OF_TEN[decimals]
        integer_part = digits // unit
        fraction_part = digits % unit
    buffer_reserve(buf, 48)
    if value < 0:
        buf.data[buf.length] = b'-'
        buf.length += 1
    put_unsigned(buf, integer_part)
    buf.data[buf.length] = b'.'
    buf.length += 1
    put_fraction_digits(buf.data + buf.length, fraction_part, decimals)
    buf.length += decimals
    return 1


cdef int put_float(Buffer *buf, double value) except -1:
    """A sample value as jsonutil.MarshalFloat writes it, without the quotes."""
    cdef char *shortest
    cdef double magnitude
    if isnan(value):
        return put_bytes(buf, b"NaN", 3)
    if isinf(value):
        if value > 0:
            return put_bytes(buf, b"+Inf", 4)
        return put_bytes(buf, b"-Inf", 4)
    magnitude = fabs(value)
    if magnitude < EXACT_INTEGER_LIMIT and floor(value) == value:
        buffer_reserve(buf, 21)
        if signbit(value):
            buf.data[buf.length] = b'-'
            buf.length += 1
        put_unsigned(buf, <uint64_t>magnitude)
        return 0
    if 1e-4 <= magnitude < 1e15 and put_short_decimal(buf, value, magnitude):
        return 0
    shortest = PyOS_double_to_string(value, b'r', 0, 0, NULL)
    try:
        if strchr_e(shortest) and 1e-6 <= magnitude < 1e21:
            put_fixed_from_exponent(buf, shortest)
        else:
            put_cstr(buf, shortest)
    finally:
        PyMem_Free(shortest)
    return 0


cdef inline bint strchr_e(const char *text) noexcept:
    while text[0] != 0:
        if text[0] == b'e':
            return True
        text += 1
    return False


cdef int put_string(Buffer *buf, object text) except -1:
    """A JSON string literal as Go writes it with HTML escaping off; text must be a str."""
    cdef Py_ssize_t length
    cdef int kind
    cdef void *data
    cdef Py_ssize_t i
    cdef uint32_t code
    cdef char *out
    if not isinstance(text, str):
        raise TypeError(f"label names and values must be str, not {type(text).__name__}")
    length = len(<str>text)
    kind = PyUnicode_KIND(text)
    data = PyUnicode_DATA(text)
    # Worst case per code point is six bytes (\u00XX, \ufffd); four for the rest of UTF-8.
    buffer_reserve(buf, 6 * length + 2)
    out = buf.data + buf.length
    out[0] = b'"'
    out += 1
    for i in range(length):
        code = <uint32_t>PyUnicode_READ(kind, data, i)
        if code < 0x80:
            if code == 34 or code == 92:
                out[0] = b'\\'
                out[1] = <char>code
                out += 2
            elif code >= 0x20:
                out[0] = <char>code
                out += 1
            elif code == 10 or code == 13 or code == 9:
                out[0] = b'\\'
                out[1] = b'n' if code == 10 else (b'r' if code == 13 else b't')
                out += 2
            else:
                memcpy(out, b"\\u00", 4)
                out[4] = HEX_DIGITS[code >> 4]
                out[5] = HEX_DIGITS[code & 15]
                out += 6
        elif code < 0x800:
            out[0] = <char>(0xC0 | (code >> 6))
            out[1] = <char>(0x80 | (code & 0x3F))
            out += 2
        elif 0xD800 <= code <= 0xDFFF:
            memcpy(out, b"\\ufffd", 6)
            out += 6
        elif code < 0x10000:
            out[0] = <char>(0xE0 | (code >> 12))
            out[1] = <char>(0x80 | ((code >> 6) & 0x3F))
            out[2] = <char>(0x80 | (code & 0x3F))
            out += 3
        else:
            out[0] = <char>(0xF0 | (code >> 18))
            out[1] = <char>(0x80 | ((code >> 12) & 0x3F))
            out[2] = <char>(0x80 | ((code >> 6) & 0x3F))
            out[3] = <char>(0x80 | (code & 0x3F))
            out += 4
    out[0] = b'"'
    out += 1
    buf.length = out - buf.data
    return 0


cdef bint names_ascending(tuple labels):
    """Whether a tuple of (str, str) pairs has strictly ascending names, so that it is its own sorted()."""
    cdef Py_ssize_t i
    cdef object previous = None
    cdef object name
    for i in range(len(labels)):
        pair = labels[i]
        if type(pair) is not tuple or len(<tuple>pair) != 2:
            return False
        name = (<tuple>pair)[0]
        if type(name) is not str:
            return False
        if previous is not None and PyUnicode_Compare(previous, name) >= 0:
            return False
        previous = name
    return True


cdef int put_labels(Buffer *buf, object labels) except -1:
    """`{"name":"value",...}` in label order."""
    cdef bint first = True
    put_bytes(buf, b"{", 1)
    # Label sets arrive sorted (mimird.tsdb.labels.Labels); sorting is only for other shapes.
    if not (isinstance(labels, tuple) and names_ascending(labels)):
        labels = sorted(labels)
    for name, value in labels:
        if not first:
            put_bytes(buf, b",", 1)
        first = False
        put_string(buf, name)
        put_bytes(buf, b":", 1)
        put_string(buf, value)
    return put_bytes(buf, b"}", 1)


cdef int put_points(Buffer *buf, const int64_t[::1] ts, const double[::1] vals) except -1:
    """`[t,"v"],[t,"v"],...` for equally long arrays."""
    cdef Py_ssize_t i
    for i in range(ts.shape[0]):
        if i:
            put_bytes(buf, b",[", 2)
        else:
            put_bytes(buf, b"[", 1)
        put_timestamp(buf, ts[i])
        put_bytes(buf, b",\"", 2)
        put_float(buf, vals[i])
        put_bytes(buf, b"\"]", 2)
    return 0


cdef str buffer_text(Buffer *buf):
    return PyUnicode_DecodeUTF8(buf.data, buf.length, NULL)


def render_matrix(series) -> str:
    """The `result` array of a matrix: `[{"metric":{...},"values":[[t,"v"],...]},...]`.

    `series` is an iterable of objects with `.labels` (pairs of str), `.ts` (int64 ms) and `.vals`
    (float64), as mimird.promql.value.Series; a series without points has no `values` key."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    cdef bint first = True
    try:
        put_bytes(&buf, b"[", 1)
        for one in series:
            ts = np.ascontiguousarray(one.ts)
            vals = np.ascontiguousarray(one.vals)
            if ts.shape[0] != vals.shape[0]:
                raise ValueError(f"series has {ts.shape[0]} timestamps but {vals.shape[0]} values")
            if not first:
                put_bytes(&buf, b",", 1)
            first = False
            put_bytes(&buf, b"{\"metric\":", 10)
            put_labels(&buf, one.labels)
            if ts.shape[0]:
                put_cstr(&buf, b",\"values\":[")
                put_points(&buf, ts, vals)
                put_bytes(&buf, b"]", 1)
            put_bytes(&buf, b"}", 1)
        put_bytes(&buf, b"]", 1)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)


def render_vector(samples) -> str:
    """The `result` array of a vector: `[{"metric":{...},"value":[t,"v"]},...]`.

    `samples` is an iterable of objects with `.labels` (pairs of str), `.t` (ms) and `.v`, as
    mimird.promql.value.Sample."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    cdef bint first = True
    try:
        put_bytes(&buf, b"[", 1)
        for sample in samples:
            if not first:
                put_bytes(&buf, b",", 1)
            first = False
            put_bytes(&buf, b"{\"metric\":", 10)
            put_labels(&buf, sample.labels)
            put_cstr(&buf, b",\"value\":[")
            put_timestamp(&buf, int(sample.t))
            put_bytes(&buf, b",\"", 2)
            put_float(&buf, float(sample.v))
            put_bytes(&buf, b"\"]}", 3)
        put_bytes(&buf, b"]", 1)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)


def format_float(double value) -> str:
    """One sample value as `render_matrix` writes it (jsonutil.MarshalFloat without the quotes)."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    try:
        put_float(&buf, value)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)


def format_timestamp(int64_t ms) -> str:
    """One timestamp as `render_matrix` writes it (jsonutil.MarshalTimestamp)."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    try:
        put_timestamp(&buf, ms)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)
