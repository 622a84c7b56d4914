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

Shortest digits are those of `repr(float)` and of Go's shortest formatting: the fewest significant digits
that read back as the double, the nearest to it of those, half to even. They are found in C arithmetic
for every finite double, with no call into CPython's dtoa:

* integral values below 2**53 are their integer's digits (counters);
* values below 2**30 with at most six decimals (load averages, ratios) by one rounded product and one
  exact division (`few_decimals`);
* everything else by Ryu (Ulf Adams, "Ryu: fast float-to-string conversion", PLDI 2018): one 64x128-bit
  multiplication per interval end by a power-of-five table entry, then digit removal
  (`shortest_decimal`). Its tables are computed at import from Python integers (about 0.2 ms).

The digits are then written straight into Go's fixed notation or exponent form (`put_float`).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_Compare, PyUnicode_DecodeUTF8
from libc.math cimport fabs, floor, isinf, isnan, signbit
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, strlen

import numpy as np

cdef extern from *:
    """typedef unsigned __int128 jsonenc_u128;"""
    ctypedef unsigned long long u128 "jsonenc_u128"
    int __builtin_clzll(unsigned long long value) nogil

cdef extern from "Python.h":
    int PyUnicode_KIND(object text)
    bint PyUnicode_IS_ASCII(object text)
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
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
# 10**0 .. 10**19, the ones a uint64 holds.
cdef uint64_t POWERS_OF_TEN_U64[20]
for _exponent in range(20):
    POWERS_OF_TEN_U64[_exponent] = 10 ** _exponent
# Reciprocals of 10**1 .. 10**16 for splitting up to 17 digits (below 2**57) at the decimal point:
# x // 10**f == (x * DIVIDE_MAGIC[f]) >> DIVIDE_SHIFT[f] for every x < 2**57, with the magic number
# ceil(2**shift / 10**f) and shift = 57 + bits(10**f) (Granlund and Montgomery's rounded-up reciprocal).
cdef uint64_t DIVIDE_MAGIC[17]
cdef int DIVIDE_SHIFT[17]
for _exponent in range(1, 17):
    _shift = 57 + (10 ** _exponent).bit_length()
    DIVIDE_SHIFT[_exponent] = _shift
    DIVIDE_MAGIC[_exponent] = -(-(1 << _shift) // 10 ** _exponent)
# stored after digits that are followed by zeros (more than Go's fixed notation ever needs: 20)
cdef const char *ZEROS = b"000000000000000000000000"
# few_decimals finds shortest digits with up to FEW_DECIMALS_MAX decimals below FEW_DECIMALS_LIMIT (2**30),
# where its double arithmetic is exact enough (see there); FEW_DECIMALS_SCALE is 10**FEW_DECIMALS_MAX.
cdef enum:
    FEW_DECIMALS_MAX = 6
cdef double FEW_DECIMALS_SCALE = 1e6
cdef double FEW_DECIMALS_LIMIT = 1073741824.0


cdef struct Buffer:
    char *data
    Py_ssize_t length
    Py_ssize_t capacity
    # whether any label text was non-ASCII (so the bytes are UTF-8 to decode, not ASCII to copy)
    bint non_ascii


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


cdef inline int put_two(Buffer *buf, const char *text) except -1:
    # two bytes as one fixed-size move: the per-point punctuation, without a memcpy call
    if buf.length + 2 > buf.capacity:
        buffer_reserve(buf, 2)
    memcpy(buf.data + buf.length, text, 2)
    buf.length += 2
    return 0


cdef inline int put_cstr(Buffer *buf, const char *text) except -1:
    return put_bytes(buf, text, strlen(text))


cdef inline void put_unsigned(Buffer *buf, uint64_t number) noexcept:
    """Decimal digits of `number`; the caller has reserved 20 bytes."""
    # digits written in place once their count is known: no copy of a variable length (a memcpy call)
    cdef int count = decimal_length(number) if number else 1
    write_digits(buf.data + buf.length, number, count)
    buf.length += count


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


# Ryu's power-of-five multipliers, 125 significant bits each, split into 64-bit halves (filled at import
# by fill_power_of_five_tables). For a value m * 2**e2 with e2 >= 0, the scale 2**e2 / 10**q is
# approximated from above by POW5_INV[q] = floor(2**(bits(5**q) - 1 + 125) / 5**q) + 1; for e2 < 0, the
# scale 5**i is 5**i cut (rounded down) to its top 125 bits, POW5[i]. Ryu's analysis shows 125 bits keep
# the floors taken in shortest_decimal exact for every interval end a double can have.
cdef enum:
    POW5_BITCOUNT = 125
    POW5_INV_BITCOUNT = 125
    # i = -e2 - q reaches 325 (the smallest subnormal); q for e2 >= 0 reaches 290 (the largest double)
    POW5_TABLE_SIZE = 326
    POW5_INV_TABLE_SIZE = 291
    # a double's mantissa width, and its exponent bias (1023) plus that width
    DOUBLE_MANTISSA_BITS = 52
    DOUBLE_EXPONENT_BIAS_AND_WIDTH = 1075
cdef uint64_t POW5_LOW[POW5_TABLE_SIZE]
cdef uint64_t POW5_HIGH[POW5_TABLE_SIZE]
cdef uint64_t POW5_INV_LOW[POW5_INV_TABLE_SIZE]
cdef uint64_t POW5_INV_HIGH[POW5_INV_TABLE_SIZE]
cdef uint64_t SIGN_BIT = <uint64_t>1 << 63


cdef inline int pow5_bits(int e) noexcept:
    # the bit length of 5**e (1 for e == 0), exact for 0 <= e <= 3528
    return <int>((<uint32_t>e * 1217359) >> 19) + 1


cdef inline int log10_pow2(int e) noexcept:
    # floor(log10(2**e)), exact for 0 <= e <= 1650
    return <int>((<uint32_t>e * 78913) >> 18)


cdef inline int log10_pow5(int e) noexcept:
    # floor(log10(5**e)), exact for 0 <= e <= 2620
    return <int>((<uint32_t>e * 732923) >> 20)


cdef int fill_power_of_five_tables() except -1:
    """Compute Ryu's multiplier tables with Python integers (well under a millisecond)."""
    cdef int i
    cdef int bits
    # Python integers throughout: the values are up to 126 bits wide
    cdef object low_mask = 0xFFFFFFFFFFFFFFFF
    cdef object one = 1
    cdef object power = 1
    cdef object cut
    cdef object inverse
    for i in range(max(<int>POW5_TABLE_SIZE, <int>POW5_INV_TABLE_SIZE)):
        bits = power.bit_length()
        # the digit search takes bit lengths from pow5_bits: it must agree with the tables' own
        if bits != pow5_bits(i):
            raise AssertionError(f"pow5_bits({i}) is {pow5_bits(i)}, 5**{i} has {bits} bits")
        if i < POW5_TABLE_SIZE:
            cut = power >> (bits - POW5_BITCOUNT) if bits > POW5_BITCOUNT else power << (POW5_BITCOUNT - bits)
            POW5_LOW[i] = cut & low_mask
            POW5_HIGH[i] = cut >> 64
        if i < POW5_INV_TABLE_SIZE:
            inverse = (one << (bits - 1 + POW5_INV_BITCOUNT)) // power + 1
            POW5_INV_LOW[i] = inverse & low_mask
            POW5_INV_HIGH[i] = inverse >> 64
        power *= 5
    return 0


fill_power_of_five_tables()


cdef inline uint64_t mul_shift(uint64_t factor, uint64_t multiplier_low, uint64_t multiplier_high,
                               int shift) noexcept:
    # floor(factor * multiplier / 2**shift) for a 55-bit factor, a 126-bit multiplier and shift >= 64:
    # the 181-bit product is never formed, its low 64 bits only matter through the carry kept here
    cdef u128 low_product = <u128>factor * multiplier_low
    cdef u128 high_product = <u128>factor * multiplier_high
    return <uint64_t>(((low_product >> 64) + high_product) >> (shift - 64))


cdef inline bint multiple_of_power_of_5(uint64_t value, int power) noexcept:
    # whether 5**power divides value (value > 0)
    while power > 0:
        if value % 5 != 0:
            return False
        value //= 5
        power -= 1
    return True


cdef inline int decimal_length(uint64_t value) noexcept:
    # digits of 0 < value: log10 estimated from the bit length, one low at most
    cdef int estimate = ((64 - __builtin_clzll(value)) * 1233) >> 12
    return estimate + (1 if value >= POWERS_OF_TEN_U64[estimate] else 0)


cdef inline void remove_last_digit(uint64_t *vr, uint64_t *vp, uint64_t *vm, uint64_t *last_removed_digit,
                                   bint *vr_trailing_zeros) noexcept:
    """Drop one digit from vr, vp and vm, remembering the digit dropped from vr and whether every digit
    dropped before it was zero (the exact-value path, where ties round half to even)."""
    cdef uint64_t quotient = vr[0] // 10
    vr_trailing_zeros[0] &= last_removed_digit[0] == 0
    last_removed_digit[0] = vr[0] - 10 * quotient
    vr[0] = quotient
    vp[0] //= 10
    vm[0] //= 10


cdef inline bint remove_digits(uint64_t *vr, uint64_t *vp, uint64_t *vm, uint64_t divisor,
                               bint *round_up) noexcept:
    """Drop the digits `divisor` spans from vr, vp and vm if the interval (vm, vp] still holds a number
    after it; `round_up` says whether the dropped part of vr was at least half of `divisor`."""
    cdef uint64_t quotient
    if vp[0] // divisor <= vm[0] // divisor:
        return False
    quotient = vr[0] // divisor
    round_up[0] = vr[0] - divisor * quotient >= divisor // 2
    vr[0] = quotient
    vp[0] //= divisor
    vm[0] //= divisor
    return True


cdef int shortest_decimal(uint64_t bits, uint64_t *digits_out, int *exponent_out) noexcept:
    """The shortest decimal `digits * 10**exponent` that reads back as the positive finite double with
    these bits (nearest the double among the shortest, half to even), as Ryu (Ulf Adams, PLDI 2018)
    finds it; returns the number of digits.

    The double is m2 * 2**e2 (e2 lowered by 2 so the interval ends are integers too): it reads back from
    every decimal strictly inside (4*m2 - 1 - mm_shift, 4*m2 + 2) * 2**e2, and from the ends as well
    when m2 is even (round half to even). One 64x128-bit multiplication per end, by a power-of-five
    table entry, gives vm, vr, vp: the ends and the value itself scaled by 10**-e10 and rounded down,
    with e10 chosen so they keep 17-18 digits. Digits are then removed while the interval still holds a
    shorter number (vp // 10 > vm // 10); the digit removed last decides rounding vr to nearest. Where
    the scaled ends or the value are exact integers (the *_trailing_zeros flags) the interval ends and
    exact ties need care: that rare case removes digits one at a time and tracks them."""
    cdef uint64_t ieee_mantissa = bits & (TWO_TO_52 - 1)
    cdef int ieee_exponent = <int>(bits >> DOUBLE_MANTISSA_BITS)
    cdef int e2
    cdef uint64_t m2
    if ieee_exponent == 0:
        e2 = 1 - DOUBLE_EXPONENT_BIAS_AND_WIDTH - 2
        m2 = ieee_mantissa
    else:
        e2 = ieee_exponent - DOUBLE_EXPONENT_BIAS_AND_WIDTH - 2
        m2 = ieee_mantissa | TWO_TO_52
    cdef bint ends_included = (m2 & 1) == 0
    # Below a power of two the next smaller double is half as far: the lower end is closer.
    cdef uint64_t mm_shift = 1 if (ieee_mantissa != 0 or ieee_exponent <= 1) else 0
    cdef uint64_t mv = 4 * m2
    cdef uint64_t mp = mv + 2
    cdef uint64_t mm = mv - 1 - mm_shift
    cdef uint64_t vr
    cdef uint64_t vp
    cdef uint64_t vm
    cdef int e10
    cdef int q
    cdef int power
    cdef int shift
    cdef bint vm_trailing_zeros = False
    cdef bint vr_trailing_zeros = False
    if e2 >= 0:
        q = log10_pow2(e2) - 1
        if q < 0:
            q = 0
        e10 = q
        shift = -e2 + q + POW5_INV_BITCOUNT + pow5_bits(q) - 1
        vr = mul_shift(mv, POW5_INV_LOW[q], POW5_INV_HIGH[q], shift)
        vp = mul_shift(mp, POW5_INV_LOW[q], POW5_INV_HIGH[q], shift)
        vm = mul_shift(mm, POW5_INV_LOW[q], POW5_INV_HIGH[q], shift)
        if q <= 21:
            # an end or the value is a multiple of 10**q only if it is one of 5**q (2**e2 covers the
            # twos), and at most one of mm, mv, mp is a multiple of 5
            if mv % 5 == 0:
                vr_trailing_zeros = multiple_of_power_of_5(mv, q)
            elif ends_included:
                vm_trailing_zeros = multiple_of_power_of_5(mm, q)
            elif multiple_of_power_of_5(mp, q):
                # the excluded upper end is exactly vp: the largest decimal allowed is one below
                vp -= 1
    else:
        q = log10_pow5(-e2) - 1
        if q < 0:
            q = 0
        e10 = q + e2
        power = -e2 - q
        shift = q - (pow5_bits(power) - POW5_BITCOUNT)
        vr = mul_shift(mv, POW5_LOW[power], POW5_HIGH[power], shift)
        vp = mul_shift(mp, POW5_LOW[power], POW5_HIGH[power], shift)
        vm = mul_shift(mm, POW5_LOW[power], POW5_HIGH[power], shift)
        if q <= 1:
            # mv, mp, mm times 5**-e2 / 10**q are integers when the q twos divide them: mv = 4 * m2 always,
            # mp = 4 * m2 + 2 (so the excluded upper end is vp itself), mm when even or q == 0
            vr_trailing_zeros = True
            if ends_included:
                vm_trailing_zeros = (mm & 1) == 0 or q == 0
            else:
                vp -= 1
        elif q < 63:
            # only vr can be exact (mm and mp have at most one factor of two); its value is an integer
            # multiple of 10**(q-1) when 2**(q-1) divides mv
            vr_trailing_zeros = (mv & ((<uint64_t>1 << (q - 1)) - 1)) == 0

    cdef int removed = 0
    cdef int count = decimal_length(vp)
    cdef uint64_t last_removed_digit = 0
    cdef uint64_t output
    cdef bint round_up = False
    if vm_trailing_zeros or vr_trailing_zeros:
        while vp // 10 > vm // 10:
            vm_trailing_zeros &= vm % 10 == 0
            remove_last_digit(&vr, &vp, &vm, &last_removed_digit, &vr_trailing_zeros)
            removed += 1
        if vm_trailing_zeros:
            # the lower end is allowed and exact: its own trailing zeros may go too
            while vm != 0 and vm % 10 == 0:
                remove_last_digit(&vr, &vp, &vm, &last_removed_digit, &vr_trailing_zeros)
                removed += 1
        if vr_trailing_zeros and last_removed_digit == 5 and vr % 2 == 0:
            # an exact tie between vr and vr + 1: half to even
            last_removed_digit = 4
        output = vr + (1 if ((vr == vm and (not ends_included or not vm_trailing_zeros))
                             or last_removed_digit >= 5) else 0)
    else:
        # Nothing is exact: any removed digits below the last one are not all zero, so it alone decides
        # rounding. The number of removable digits is found 8, 4, 2, 1 at a time (removing n is possible
        # whenever removing more is), which is quick for the few-decimal values most gauges hold.
        while remove_digits(&vr, &vp, &vm, 100000000, &round_up):
            removed += 8
        if remove_digits(&vr, &vp, &vm, 10000, &round_up):
            removed += 4
        if remove_digits(&vr, &vp, &vm, 100, &round_up):
            removed += 2
        if remove_digits(&vr, &vp, &vm, 10, &round_up):
            removed += 1
        # vr itself lies outside when it equals the (excluded or inexact) lower bound's floor
        output = vr + (1 if (vr == vm or round_up) else 0)
    digits_out[0] = output
    exponent_out[0] = e10 + removed
    return count - removed


cdef inline int few_decimals(double magnitude, uint64_t *digits_out, int *exponent_out) noexcept:
    """The shortest digits of a positive non-integral double below 2**30 when they have at most
    FEW_DECIMALS_MAX (6) decimals, as `shortest_decimal` returns them, or 0 when they have more.

    Load averages, ratios and percentages usually have a few decimals: one multiplication and one
    division find them, instead of Ryu's digit removal. Below 2**30 the gap between neighbouring
    doubles is at most 2**-23, less than 10**-6, so the rounding interval holds at most one number c
    with up to 6 decimals; a number with more decimals and no more digits than c lies below the power
    of ten at or under c, over 10**-6 from c, so it is not in the interval either. If c exists,
    c * 10**6 is an integer within 10**6 * 2**-24 (under 0.06) of magnitude * 10**6, which
    the double product gets within 2**-4 (it is below 2**50): rounding the product gives c * 10**6 without
    fail. So c exists exactly when the rounded product n reads back (n / 10**6, correctly rounded since
    n and 10**6 are exact doubles, equals magnitude), and c is n with its trailing zeros removed: the
    only candidate with that few digits. Non-integral values below 2**53 have no candidate without
    decimals (the integers there are doubles of their own), so at least one decimal remains."""
    cdef double scaled = magnitude * FEW_DECIMALS_SCALE
    cdef uint64_t nearest = <uint64_t>(scaled + 0.5)
    cdef int decimals = FEW_DECIMALS_MAX
    # The division only for products within their rounding error (at most scaled * 2**-52, see above)
    # of an integer: full-precision values almost never are.
    if (nearest == 0 or fabs(scaled - <double>nearest) > scaled * 8.881784197001252e-16
            or <double>nearest / FEW_DECIMALS_SCALE != magnitude):
        return 0
    # at most five trailing zeros: remove 4, 2, 1 of them as they are there
    if nearest % 10000 == 0:
        nearest //= 10000
        decimals -= 4
    if nearest % 100 == 0:
        nearest //= 100
        decimals -= 2
    if nearest % 10 == 0:
        nearest //= 10
        decimals -= 1
    digits_out[0] = nearest
    exponent_out[0] = -decimals
    return decimal_length(nearest)


cdef inline void write_eight_digits(char *out, uint32_t block) noexcept:
    # block < 10**8 as exactly eight digits at out[0:8], in 32-bit arithmetic
    memcpy(out + 6, &DIGIT_PAIRS[2 * (block % 100)], 2)
    block //= 100
    memcpy(out + 4, &DIGIT_PAIRS[2 * (block % 100)], 2)
    block //= 100
    memcpy(out + 2, &DIGIT_PAIRS[2 * (block % 100)], 2)
    memcpy(out, &DIGIT_PAIRS[2 * (block // 100)], 2)


cdef inline void write_digits(char *out, uint64_t digits, int count) noexcept:
    # the `count` decimal digits of `digits` (which has exactly that many) at out[0:count], right to left
    cdef char *end = out + count
    cdef uint32_t rest
    while digits >= 100000000:
        # eight digits at a time in 32-bit arithmetic
        end -= 8
        write_eight_digits(end, <uint32_t>(digits % 100000000))
        digits //= 100000000
    rest = <uint32_t>digits
    while rest >= 100:
        end -= 2
        memcpy(end, &DIGIT_PAIRS[2 * (rest % 100)], 2)
        rest //= 100
    if rest >= 10:
        memcpy(end - 2, &DIGIT_PAIRS[2 * rest], 2)
    else:
        end -= 1
        end[0] = <char>(48 + rest)


cdef inline void write_padded_digits(char *out, uint64_t value, int count) noexcept:
    # exactly `count` (<= 16) digits of value < 10**count at out[0:count], zeros in front
    cdef char *end = out + count
    cdef uint32_t block
    if count > 8:
        end -= 8
        write_eight_digits(end, <uint32_t>(value % 100000000))
        value //= 100000000
        count -= 8
    block = <uint32_t>value
    while count >= 2:
        end -= 2
        memcpy(end, &DIGIT_PAIRS[2 * (block % 100)], 2)
        block //= 100
        count -= 2
    if count:
        end -= 1
        end[0] = <char>(48 + block)


cdef int put_float(Buffer *buf, double value) except -1:
    """A sample value as jsonutil.MarshalFloat writes it, without the quotes: strconv.FormatFloat with
    shortest digits, 'f' from 1e-6 up to (not including) 1e21 and 'e' outside."""
    cdef double magnitude
    cdef uint64_t bits
    cdef uint64_t digits
    cdef int exponent
    cdef int count
    cdef int point
    cdef int scientific
    cdef char *out
    cdef int fraction_count
    cdef uint64_t integer_part
    if isnan(value):
        return put_bytes(buf, b"NaN", 3)
    if isinf(value):
        if value > 0:
            return put_bytes(buf, b"+Inf", 4)
        return put_bytes(buf, b"-Inf", 4)
    magnitude = fabs(value)
    if magnitude < EXACT_INTEGER_LIMIT and floor(value) == value:
        # integers (counters, and zeros of either sign) need no digit search: no two share a double
        buffer_reserve(buf, 21)
        if signbit(value):
            buf.data[buf.length] = b'-'
            buf.length += 1
        put_unsigned(buf, <uint64_t>magnitude)
        return 0
    # Room for the widest layout below, counting the fixed-size stores that run past the text's end:
    # a sign, 17 digits and 24 zeros stored after them.
    buffer_reserve(buf, 48)
    out = buf.data + buf.length
    memcpy(&bits, &value, 8)
    if bits & SIGN_BIT:
        out[0] = b'-'
        out += 1
    count = few_decimals(magnitude, &digits, &exponent) if magnitude < FEW_DECIMALS_LIMIT else 0
    if count == 0:
        count = shortest_decimal(bits & ~SIGN_BIT, &digits, &exponent)
    # the value is 0.DIGITS * 10**point
    point = exponent + count
    # Digits go straight to their place: fixed-size copies are single moves, and reading freshly
    # written digits back in wider loads would stall on store forwarding.
    if 1e-6 <= magnitude < 1e21:
        if point <= 0:
            # -5 <= point: "0." and up to five zeros
            memcpy(out, b"0.00000", 8)
            write_digits(out + 2 - point, digits, count)
            out += 2 - point + count
        elif point >= count:
            memcpy(out + count, ZEROS, 24)
            write_digits(out, digits, count)
            out += point
        else:
            # 1 <= point < count <= 17: split the digits where the point goes, by multiplying with a
            # reciprocal of 10**(count - point)
            fraction_count = count - point
            integer_part = <uint64_t>((<u128>digits * DIVIDE_MAGIC[fraction_count])
                                      >> DIVIDE_SHIFT[fraction_count])
            write_digits(out, integer_part, point)
            out[point] = b'.'
            write_padded_digits(out + point + 1, digits - integer_part * POWERS_OF_TEN_U64[fraction_count],
                                fraction_count)
            out += count + 1
    else:
        # Go's 'e' form: d[.ddd]e±XX with at least two exponent digits
        write_digits(out + 1, digits, count)
        out[0] = out[1]
        if count > 1:
            out[1] = b'.'
            out += count + 1
        else:
            out += 1
        scientific = point - 1
        out[0] = b'e'
        if scientific < 0:
            out[1] = b'-'
            scientific = -scientific
        else:
            out[1] = b'+'
        if scientific >= 100:
            out[2] = <char>(48 + scientific // 100)
            memcpy(out + 3, &DIGIT_PAIRS[2 * (scientific % 100)], 2)
            out += 5
        else:
            memcpy(out + 2, &DIGIT_PAIRS[2 * scientific], 2)
            out += 4
    buf.length = out - buf.data
    return 0


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
    if not PyUnicode_IS_ASCII(text):
        buf.non_ascii = True
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
    # A value equal (to the bit) to the one before is copied from its text rather than formatted again:
    # *_over_time results, sums of gauges that did not move and step-invariant values repeat for many steps.
    cdef Py_ssize_t i, value_start = 0, value_length = 0
    cdef uint64_t bits, previous_bits = 0
    for i in range(ts.shape[0]):
        if i:
            put_two(buf, b",[")
        else:
            put_bytes(buf, b"[", 1)
        put_timestamp(buf, ts[i])
        put_two(buf, b",\"")
        memcpy(&bits, &vals[i], 8)
        if i and bits == previous_bits:
            buffer_reserve(buf, value_length)
            memcpy(buf.data + buf.length, buf.data + value_start, value_length)
            buf.length += value_length
        else:
            value_start = buf.length
            put_float(buf, vals[i])
            value_length = buf.length - value_start
            previous_bits = bits
        put_two(buf, b"\"]")
    return 0


cdef str buffer_text(Buffer *buf):
    cdef object text
    if buf.non_ascii:
        return PyUnicode_DecodeUTF8(buf.data, buf.length, NULL)
    # Only ASCII was written: a plain copy into an ASCII str, without UTF-8 validation.
    text = PyUnicode_New(buf.length, 127)
    memcpy(PyUnicode_DATA(text), buf.data, buf.length)
    return text


cdef int put_matrix(Buffer *buf, series) except -1:
    """`render_matrix`'s array."""
    cdef bint first = True
    cdef const int64_t[::1] ts
    cdef const double[::1] vals
    put_bytes(buf, b"[", 1)
    for one in series:
        # The engine's arrays are contiguous int64/float64 and are read as they are: a numpy call per
        # series costs tens of microseconds when the caches are cold.
        try:
            ts = one.ts
        except (TypeError, ValueError):
            ts = np.ascontiguousarray(one.ts, dtype=np.int64)
        try:
            vals = one.vals
        except (TypeError, ValueError):
            vals = np.ascontiguousarray(one.vals, dtype=np.float64)
        if ts.shape[0] != vals.shape[0]:
            raise ValueError(f"series has {ts.shape[0]} timestamps but {vals.shape[0]} values")
        if not first:
            put_bytes(buf, b",", 1)
        first = False
        put_bytes(buf, b"{\"metric\":", 10)
        put_labels(buf, one.labels)
        if ts.shape[0]:
            put_cstr(buf, b",\"values\":[")
            put_points(buf, ts, vals)
            put_bytes(buf, b"]", 1)
        put_bytes(buf, b"}", 1)
    put_bytes(buf, b"]", 1)
    return 0


cdef int put_vector(Buffer *buf, samples) except -1:
    """`render_vector`'s array."""
    cdef bint first = True
    put_bytes(buf, b"[", 1)
    for sample in samples:
        if not first:
            put_bytes(buf, b",", 1)
        first = False
        put_bytes(buf, b"{\"metric\":", 10)
        put_labels(buf, sample.labels)
        put_cstr(buf, b",\"value\":[")
        put_timestamp(buf, int(sample.t))
        put_bytes(buf, b",\"", 2)
        put_float(buf, float(sample.v))
        put_bytes(buf, b"\"]}", 3)
    put_bytes(buf, b"]", 1)
    return 0


def render_matrix(series) -> str:
    """The `result` array of a matrix: `[{"metric":{...},"values":[[t,"v"],...]},...]`.

    `series` is an iterable of objects with `.labels` (pairs of str), `.ts` (int64 ms) and `.vals`
    (float64), as mimird.promql.value.Series; a series without points has no `values` key."""
    cdef Buffer buf = Buffer(NULL, 0, 0, False)
    try:
        put_matrix(&buf, series)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)


def render_vector(samples) -> str:
    """The `result` array of a vector: `[{"metric":{...},"value":[t,"v"]},...]`.

    `samples` is an iterable of objects with `.labels` (pairs of str), `.t` (ms) and `.v`, as
    mimird.promql.value.Sample."""
    cdef Buffer buf = Buffer(NULL, 0, 0, False)
    try:
        put_vector(&buf, samples)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)


def render_success(value, bint is_matrix, bytes data_extra=b"", bytes extra=b"") -> bytes:
    """A query's whole response body for a vector (or, with `is_matrix`, a matrix), as UTF-8 bytes:
    `{"status":"success","data":{"resultType":...,"result":[...]` + `data_extra` + `}` + `extra` + `}`,
    where `data_extra` holds more of `data` (`,"stats":{...}`) and `extra` what follows it
    (`,"warnings":[...]`, `,"infos":[...]`). The text is the one render_vector or render_matrix give inside
    `jsonfmt.success`, written into one buffer: a large answer went through half a dozen copies as
    strings, then bytes, which cost a fair part of rendering it."""
    cdef Buffer buf = Buffer(NULL, 0, 0, False)
    try:
        if is_matrix:
            put_cstr(&buf, b"{\"status\":\"success\",\"data\":{\"resultType\":\"matrix\",\"result\":")
            put_matrix(&buf, value)
        else:
            put_cstr(&buf, b"{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":")
            put_vector(&buf, value)
        put_bytes(&buf, data_extra, len(data_extra))
        put_bytes(&buf, b"}", 1)
        put_bytes(&buf, extra, len(extra))
        put_bytes(&buf, b"}", 1)
        return PyBytes_FromStringAndSize(buf.data, buf.length)
    finally:
        PyMem_Free(buf.data)


def format_float(double value) -> str:
    """One sample value as `render_matrix` writes it (jsonutil.MarshalFloat without the quotes)."""
    cdef Buffer buf = Buffer(NULL, 0, 0, False)
    try:
        put_float(&buf, value)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)


def format_timestamp(int64_t ms) -> str:
    """One timestamp as `render_matrix` writes it (jsonutil.MarshalTimestamp)."""
    cdef Buffer buf = Buffer(NULL, 0, 0, False)
    try:
        put_timestamp(&buf, ms)
        return buffer_text(&buf)
    finally:
        PyMem_Free(buf.data)
