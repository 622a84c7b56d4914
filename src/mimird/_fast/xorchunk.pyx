"""Prometheus's XOR chunk (chunk encoding 1): the Gorilla timestamp/value compression, bit for bit.

This module owns the chunk bytes: the appender that the head keeps per series (`XORChunk`), whole-array
`encode`, the decoders (`XORIterator`, `decode`, `decode_into`, `decode_chunks`) and the stale-marker
constants. The layout is drawn in docs/format/chunks.md; the rules follow Prometheus's
tsdb/chunkenc/xor.go and bstream.go, so the bytes are the ones Prometheus writes for the same samples.
Values are handled as 64-bit patterns throughout, so NaN payloads (the stale marker among them)
survive unchanged.
"""
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.buffer cimport PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport INT64_MAX, INT64_MIN, UINT64_MAX, int64_t, uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset

cimport cython
cimport numpy as cnp

from mimird._fast.bstream cimport (clz64, ctz64, likely, load_be64, peek57_unchecked, peek64,
                                   peek64_unchecked, rotr64, store_be64, unlikely)
from mimird._fast.varint cimport get_uvarint, put_uvarint, zigzag_decode, zigzag_encode

import numpy as np

cnp.import_array()

SAMPLES_PER_CHUNK = 120
"""How many samples the head puts in a chunk before cutting a new one, as Prometheus."""
MAX_BYTES_PER_CHUNK = 1024
"""Prometheus's hard cap on a float chunk's size (MaxBytesPerXORChunk): its head cuts a new chunk
before an append when the open one already has more than MAX_BYTES_PER_CHUNK - MAX_SAMPLE_BYTES bytes."""
MAX_SAMPLE_BYTES = 19
"""The most bytes one appended sample can add (145 bits)."""
cdef unsigned int _MAX_SAMPLES = 0xFFFF
MAX_SAMPLES = _MAX_SAMPLES
"""The sample count is a 16-bit header field."""
STALE_NAN_BITS = 0x7FF0000000000002
"""The NaN that Prometheus writes as a staleness marker; only this exact bit pattern means stale."""

cdef uint64_t _STALE_NAN_BITS = 0x7FF0000000000002
# The largest sample is 145 bits (4-bit dod prefix, 64-bit dod, 13 control bits, 64-bit XOR), and
# storing the pending word writes 8 bytes from its start, so this much room past the start of the
# pending word before each append is always enough.
cdef Py_ssize_t _APPEND_HEADROOM = 48


cdef inline double _float_from_bits(uint64_t bits) noexcept nogil:
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef inline uint64_t _bits_from_float(double value) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits


STALE_NAN = _float_from_bits(_STALE_NAN_BITS)


def is_stale_nan(double v):
    """Whether `v` is Prometheus's staleness marker (compared bit for bit; other NaNs are not)."""
    return _bits_from_float(v) == _STALE_NAN_BITS


# ---------------------------------------------------------------------------------------------------
# Decoding


cdef int xor_cursor_init(XORCursor* cursor, const uint8_t* chunk, Py_ssize_t size) noexcept nogil:
    """Point `cursor` at the chunk bytes; XOR_CORRUPT if they are shorter than the header."""
    memset(cursor, 0, sizeof(XORCursor))
    if size < 2:
        return XOR_CORRUPT
    cursor.num_total = (<uint16_t>chunk[0] << 8) | chunk[1]
    cursor.stream = chunk + 2
    cursor.stream_size = size - 2
    cursor.end = <uint64_t>(size - 2) * 8
    # leading = trailing = 0: a decoder that meets a '10' (reuse) control before any '11' reads 64
    # bits, as Prometheus's does.
    return XOR_END


cdef inline int _read_value(XORCursor* c, uint64_t window) noexcept nogil:
    # `window` holds at least 13 bits from c.pos: a value's control bits are '0' (same value),
    # '10' (XOR fits the previous leading/trailing zeros) or '11' + 5 bits leading + 6 bits length.
    cdef uint8_t leading
    cdef int significant
    if (window >> 63) == 0:
        c.pos += 1
    else:
        if (window >> 62) == 0b10:
            c.pos += 2
        else:
            leading = (window >> 57) & 0x1F
            significant = (window >> 51) & 0x3F
            # 64 significant bits do not fit in 6 bits; the writer stores them as 0.
            if significant == 0:
                significant = 64
            if leading + significant > 64:
                return XOR_CORRUPT
            c.leading = leading
            c.trailing = 64 - leading - significant
            c.pos += 13
        significant = 64 - c.leading - c.trailing
        c.value_bits ^= (peek64(c.stream, c.stream_size, c.pos) >> (64 - significant)) << c.trailing
        c.pos += significant
    # peek64 reads zeros past the end, so one check per sample catches truncation anywhere in it.
    if c.pos > c.end:
        return XOR_CORRUPT
    c.num_read += 1
    return XOR_SAMPLE


cdef int _read_leading_sample(XORCursor* c) noexcept nogil:
    # The first two samples start on byte boundaries: a varint timestamp (signed for the first,
    # the delta for the second), then the raw value or its XOR.
    cdef uint64_t varint_value
    cdef Py_ssize_t first_byte = <Py_ssize_t>(c.pos >> 3)
    cdef Py_ssize_t n = get_uvarint(c.stream + first_byte, c.stream_size - first_byte, &varint_value)
    if n < 0:
        return XOR_CORRUPT
    c.pos += 8 * <uint64_t>n
    if c.num_read == 0:
        if c.pos + 64 > c.end:
            return XOR_CORRUPT
        c.t = zigzag_decode(varint_value)
        c.value_bits = peek64(c.stream, c.stream_size, c.pos)
        c.pos += 64
        c.num_read = 1
        return XOR_SAMPLE
    c.t_delta = varint_value
    c.t = <int64_t>(<uint64_t>c.t + varint_value)
    return _read_value(c, peek64(c.stream, c.stream_size, c.pos))


cdef inline int _next_sample(XORCursor* c) noexcept nogil:
    cdef uint64_t window, raw
    cdef int64_t dod
    if c.num_read >= c.num_total:
        return XOR_END
    if c.num_read < 2:
        return _read_leading_sample(c)
    # Delta of delta: '0' -> 0; '10' + 14 bits; '110' + 17; '1110' + 20; '1111' + 64. The n-bit
    # buckets hold -(2**(n-1) - 1) .. 2**(n-1), stored as n-bit two's complement.
    window = peek64(c.stream, c.stream_size, c.pos)
    if (window >> 63) == 0:
        dod = 0
        c.pos += 1
        window <<= 1
    elif (window >> 62) == 0b10:
        raw = (window >> 48) & 0x3FFF
        dod = <int64_t>raw - 0x4000 if raw > 0x2000 else <int64_t>raw
        c.pos += 16
        window <<= 16
    elif (window >> 61) == 0b110:
        raw = (window >> 44) & 0x1FFFF
        dod = <int64_t>raw - 0x20000 if raw > 0x10000 else <int64_t>raw
        c.pos += 20
        window <<= 20
    elif (window >> 60) == 0b1110:
        raw = (window >> 40) & 0xFFFFF
        dod = <int64_t>raw - 0x100000 if raw > 0x80000 else <int64_t>raw
        c.pos += 24
        window <<= 24
    else:
        dod = <int64_t>peek64(c.stream, c.stream_size, c.pos + 4)
        c.pos += 68
        window = peek64(c.stream, c.stream_size, c.pos)
    # Go's int64/uint64 arithmetic wraps; unsigned C arithmetic does the same without undefined behaviour.
    c.t_delta += <uint64_t>dod
    c.t = <int64_t>(<uint64_t>c.t + c.t_delta)
    return _read_value(c, window)


cdef int xor_cursor_next(XORCursor* cursor) noexcept nogil:
    """Read one sample into cursor.t / cursor.value_bits: XOR_SAMPLE, XOR_END or XOR_CORRUPT."""
    return _next_sample(cursor)


# A sample is at most 145 bits, and the fast loop's reads for a sample starting in byte b stay within
# bytes b .. b + 19 (the value's 9-byte window starts at most 81 bits in). With that many bytes left it
# needs no bounds checks, and the sample cannot be truncated.
cdef Py_ssize_t _FAST_TAIL_BYTES = 20
# The last bytes of the stream are decoded from a zero-padded copy of this size, so that the same loop
# reads zeros past the end as peek64 does; it holds up to _TAIL_COPY_SIZE - _FAST_TAIL_BYTES bytes.
cdef enum:
    _TAIL_COPY_SIZE = 64


cdef inline int _emit(int64_t t, uint64_t value_bits, int64_t mint, int64_t maxt, int64_t* out_t,
                      double* out_v, Py_ssize_t capacity, Py_ssize_t* count,
                      bint stop_past_maxt) noexcept nogil:
    # XOR_SAMPLE to go on, XOR_END to stop (a sample past maxt, when asked to stop there), or
    # XOR_OUT_OF_SPACE.
    if stop_past_maxt and t > maxt:
        return XOR_END
    if mint <= t and t <= maxt:
        if unlikely(count[0] >= capacity):
            return XOR_OUT_OF_SPACE
        out_t[count[0]] = t
        memcpy(&out_v[count[0]], &value_bits, 8)
        count[0] += 1
    return XOR_SAMPLE


cdef inline int _keep(int64_t t, uint64_t value_bits, int64_t mint, int64_t maxt, int64_t** out_t_next,
                      double** out_v_next, bint stop_past_maxt) noexcept nogil:
    # _emit for the bulk loop, which has room for every sample: writes at the two cursors and moves them on.
    if likely(mint <= t and t <= maxt):
        out_t_next[0][0] = t
        out_t_next[0] += 1
        memcpy(out_v_next[0], &value_bits, 8)
        out_v_next[0] += 1
    elif stop_past_maxt and t > maxt:
        return XOR_END
    return XOR_SAMPLE


cdef inline int _checked_step(XORCursor* c, int64_t mint, int64_t maxt, int64_t* out_t, double* out_v,
                              Py_ssize_t capacity, Py_ssize_t* count, bint stop_past_maxt,
                              bint* past_maxt) noexcept nogil:
    # One sample through the checked reader, emitted: XOR_SAMPLE to go on; XOR_END when the chunk or the
    # wanted range is over (past_maxt set for the latter); else XOR_CORRUPT or XOR_OUT_OF_SPACE.
    cdef int status = _next_sample(c)
    if status != XOR_SAMPLE:
        return status
    status = _emit(c.t, c.value_bits, mint, maxt, out_t, out_v, capacity, count, stop_past_maxt)
    if status == XOR_END:
        past_maxt[0] = True
    return status


cdef inline Py_ssize_t _decode_samples(XORCursor* c, int64_t mint, int64_t maxt, int64_t* out_t,
                                       double* out_v, Py_ssize_t capacity, bint stop_past_maxt,
                                       bint* past_maxt) noexcept nogil:
    # The bulk decoder behind xor_decode_range and xor_decode_until. The first two samples (byte-aligned
    # varints) go through _next_sample, which checks every read; the rest through a loop that keeps the
    # cursor in locals (out_t and out_v could alias the cursor's fields, so the compiler would otherwise
    # store and reload them around every output write) and reads without bounds checks: first in the
    # chunk itself while at least _FAST_TAIL_BYTES bytes are left, then in a zero-padded copy of the last
    # bytes, where a sample ending past the stream is caught by the position check after it, as in
    # _read_value. The cursor ends in the same state as after _next_sample calls, on errors too.
    cdef Py_ssize_t count = 0
    cdef int status
    cdef const uint8_t* stream = c.stream
    cdef uint8_t tail_copy[_TAIL_COPY_SIZE]
    cdef uint64_t pos, end, fast_end, base = 0, window, raw, t_delta, value_bits, value_mask
    cdef int64_t t, dod
    cdef unsigned int leading, significant, remaining, batch, run, taken
    cdef Py_ssize_t tail_start
    cdef bint in_tail_copy = False
    cdef int64_t* out_t_next
    cdef double* out_v_next

    while c.num_read < 2:
        status = _checked_step(c, mint, maxt, out_t, out_v, capacity, &count, stop_past_maxt, past_maxt)
        if status != XOR_SAMPLE:
            return count if status == XOR_END else status

    status = XOR_SAMPLE
    remaining = c.num_total - c.num_read
    # Each sample writes at most one output (none when mint > maxt), so with room for all of them the
    # loop needs no capacity check; callers that pass less room take the careful path below.
    if remaining and (capacity - count >= <Py_ssize_t>remaining or mint > maxt):
        pos = c.pos
        end = c.end
        fast_end = 0
        if c.stream_size >= _FAST_TAIL_BYTES:
            fast_end = <uint64_t>(c.stream_size - _FAST_TAIL_BYTES + 1) * 8
        t = c.t
        t_delta = c.t_delta
        value_bits = c.value_bits
        leading = c.leading
        significant = 64 - leading - c.trailing
        # The bits of the value's XOR: `significant` bits after `leading` zeros.
        value_mask = (UINT64_MAX >> leading) & (UINT64_MAX << c.trailing)
        out_t_next = out_t + count
        out_v_next = out_v + count
        while True:
            while remaining and pos < fast_end:
                # A sample takes at most 145 bits, so the next `batch` samples all start before fast_end
                # and the inner loop need not check the position.
                batch = min(remaining, <unsigned int>((fast_end - pos - 1) // 145) + 1)
                remaining -= batch
                while batch:
                    window = peek57_unchecked(stream, pos)
                    if (window >> 62) == 0:
                        # Scraped on time with the value unchanged: two zero bits a sample ('up', constant
                        # gauges, idle counters). A run of them is read from this one window rather than one
                        # load per sample, each waiting for the previous sample's length. At most 28 (the
                        # window's 57 bits), never past the end (there the sample-by-sample path below
                        # tells a truncated chunk). The run may go beyond the batch: it reads nothing more,
                        # and the outer loop checks where the next sample starts.
                        run = <unsigned int>clz64(window | 0x7F) >> 1
                        if run > batch + remaining:
                            run = batch + remaining
                        if run > (end - pos) >> 1:
                            run = <unsigned int>((end - pos) >> 1)
                        if run:
                            taken = 0
                            while taken < run:
                                t = <int64_t>(<uint64_t>t + t_delta)
                                taken += 1
                                status = _keep(t, value_bits, mint, maxt, &out_t_next, &out_v_next, stop_past_maxt)
                                if status != XOR_SAMPLE:
                                    break
                            pos += 2 * taken
                            if taken > batch:
                                remaining -= taken - batch
                                batch = 0
                            else:
                                batch -= taken
                            if status != XOR_SAMPLE:
                                break
                            continue
                    # Delta of delta: '0' -> 0; '10' + 14 bits; '110' + 17; '1110' + 20; '1111' + 64. The
                    # n-bit buckets hold -(2**(n-1) - 1) .. 2**(n-1), stored as n-bit two's complement. The
                    # window holds the dod and the value's 13 control bits, except after a 64-bit dod.
                    if (window >> 63) == 0:
                        dod = 0
                        pos += 1
                        window <<= 1
                    elif likely((window >> 62) == 0b10):
                        raw = (window >> 48) & 0x3FFF
                        dod = <int64_t>raw - 0x4000 if raw > 0x2000 else <int64_t>raw
                        pos += 16
                        window <<= 16
                    elif (window >> 61) == 0b110:
                        raw = (window >> 44) & 0x1FFFF
                        dod = <int64_t>raw - 0x20000 if raw > 0x10000 else <int64_t>raw
                        pos += 20
                        window <<= 20
                    elif (window >> 60) == 0b1110:
                        raw = (window >> 40) & 0xFFFFF
                        dod = <int64_t>raw - 0x100000 if raw > 0x80000 else <int64_t>raw
                        pos += 24
                        window <<= 24
                    else:
                        dod = <int64_t>peek64_unchecked(stream, pos + 4)
                        pos += 68
                        window = peek57_unchecked(stream, pos)
                    # Go's int64/uint64 arithmetic wraps; unsigned C arithmetic does the same without
                    # undefined behaviour.
                    t_delta += <uint64_t>dod
                    t = <int64_t>(<uint64_t>t + t_delta)
                    # Value: '0' same value; '10' XOR within the previous leading/trailing zeros; '11' + 5
                    # bits leading + 6 bits significant (64 stored as 0), then the XOR's significant bits.
                    if (window >> 63) == 0:
                        pos += 1
                    else:
                        if (window >> 62) == 0b11:
                            if unlikely(((window >> 57) & 0x1F) + ((((window >> 51) - 1) & 0x3F) + 1) > 64):
                                status = XOR_CORRUPT
                                break
                            leading = (window >> 57) & 0x1F
                            significant = (((window >> 51) - 1) & 0x3F) + 1
                            value_mask = (UINT64_MAX >> leading) & (
                                UINT64_MAX << (64 - leading - significant))
                            pos += 13
                        else:
                            pos += 2
                        if likely(significant <= 56):
                            # The 8 bytes from the value's first byte hold all its bits; rotating them by
                            # the distance between where they start (pos % 8) and where they go (leading)
                            # lines them up under the mask, with one variable-count instruction instead of
                            # three shifts.
                            value_bits ^= rotr64(load_be64(stream + (pos >> 3)),
                                                 leading - <unsigned int>(pos & 7)) & value_mask
                        else:
                            value_bits ^= (peek64_unchecked(stream, pos) >> leading) & value_mask
                        pos += significant
                    # Only possible in the tail copy: the sample ran past the stream (truncated chunk).
                    if unlikely(pos > end):
                        status = XOR_CORRUPT
                        break
                    batch -= 1
                    status = _keep(t, value_bits, mint, maxt, &out_t_next, &out_v_next, stop_past_maxt)
                    if status != XOR_SAMPLE:
                        break
                if status != XOR_SAMPLE:
                    # The samples of the batch not read; a corrupt one does not count as read.
                    remaining += batch
                    break
            if status != XOR_SAMPLE or remaining == 0 or in_tail_copy:
                break
            # Go on in a zero-padded copy of the bytes from the one holding `pos` to the end.
            tail_start = <Py_ssize_t>(pos >> 3)
            if c.stream_size - tail_start > _TAIL_COPY_SIZE - _FAST_TAIL_BYTES:
                break
            memset(tail_copy, 0, _TAIL_COPY_SIZE)
            memcpy(tail_copy, c.stream + tail_start, c.stream_size - tail_start)
            base = <uint64_t>tail_start * 8
            stream = tail_copy
            pos -= base
            end -= base
            fast_end = (_TAIL_COPY_SIZE - _FAST_TAIL_BYTES + 1) * 8
            in_tail_copy = True
        count = out_t_next - out_t
        c.pos = base + pos
        c.t = t
        c.t_delta = t_delta
        c.value_bits = value_bits
        c.leading = leading
        c.trailing = 64 - leading - significant
        # A corrupt sample is not counted as read, as in _read_value.
        c.num_read = c.num_total - remaining
        if status == XOR_CORRUPT:
            return XOR_CORRUPT
        if status == XOR_END:
            past_maxt[0] = True
            return count

    while True:
        status = _checked_step(c, mint, maxt, out_t, out_v, capacity, &count, stop_past_maxt, past_maxt)
        if status != XOR_SAMPLE:
            return count if status == XOR_END else status


cdef Py_ssize_t xor_decode_range(XORCursor* cursor, int64_t mint, int64_t maxt,
                                 int64_t* out_t, double* out_v, Py_ssize_t capacity) noexcept nogil:
    """Decode the remaining samples, keeping those with mint <= t <= maxt.

    Returns how many were written to out_t/out_v, or XOR_CORRUPT / XOR_OUT_OF_SPACE. With mint > maxt
    it writes nothing and only checks the chunk and moves the cursor past its last sample.
    """
    cdef bint past_maxt = False
    return _decode_samples(cursor, mint, maxt, out_t, out_v, capacity, False, &past_maxt)


cdef Py_ssize_t xor_decode_until(XORCursor* cursor, int64_t mint, int64_t maxt, int64_t* out_t, double* out_v,
                                 Py_ssize_t capacity, bint* past_maxt) noexcept nogil:
    """As xor_decode_range, but stops after reading the first sample with t > maxt and sets *past_maxt.

    For chunks whose timestamps increase: nothing after that sample is read, or checked.
    """
    return _decode_samples(cursor, mint, maxt, out_t, out_v, capacity, True, past_maxt)


# Releasing and retaking the GIL costs about as much as decoding a hundred samples; below this many
# samples the decoders keep it.
cdef Py_ssize_t _GIL_RELEASE_MIN_SAMPLES = 2048


cdef Py_ssize_t _decode_range_with_gil(XORCursor* cursor, int64_t mint, int64_t maxt, int64_t* out_t,
                                       double* out_v, Py_ssize_t capacity) noexcept:
    # xor_decode_range for a caller holding the GIL: let it go only for chunks worth the switch.
    cdef Py_ssize_t count
    if cursor.num_total < _GIL_RELEASE_MIN_SAMPLES:
        return xor_decode_range(cursor, mint, maxt, out_t, out_v, capacity)
    with nogil:
        count = xor_decode_range(cursor, mint, maxt, out_t, out_v, capacity)
    return count


cdef int _init_cursor_or_raise(XORCursor* cursor, const uint8_t* chunk, Py_ssize_t size) except -1:
    if xor_cursor_init(cursor, chunk, size) == XOR_CORRUPT:
        raise ValueError(f"XOR chunk of {size} bytes is shorter than its 2-byte header")
    return 0


cdef int _check_output(Py_buffer* view, tuple formats, str name) except -1:
    # struct-module format codes; '@', '=' and '<' all mean native little-endian here.
    cdef bytes fmt = view.format.lstrip(b"@=<") if view.format != NULL else b"B"
    if view.ndim != 1 or view.itemsize != 8 or fmt not in formats:
        raise ValueError(f"{name} must be a 1-dimensional contiguous array of {formats[0].decode()} items")
    return 0


cdef inline bint _is_output_array(object array, int typenum) noexcept:
    # Checking a numpy array directly costs nanoseconds; the buffer protocol costs far more per call,
    # which shows when decoding many small chunks.
    return (cnp.PyArray_CheckExact(array)
            and cnp.PyArray_EquivTypenums(cnp.PyArray_TYPE(<cnp.ndarray>array), typenum)
            and cnp.PyArray_NDIM(<cnp.ndarray>array) == 1
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>array)
            and cnp.PyArray_ISWRITEABLE(<cnp.ndarray>array))


def num_samples(data):
    """The sample count in the header of the chunk bytes `data`."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len < 2:
            raise ValueError(f"XOR chunk of {view.len} bytes is shorter than its 2-byte header")
        return ((<uint8_t*>view.buf)[0] << 8) | (<uint8_t*>view.buf)[1]
    finally:
        PyBuffer_Release(&view)


def decode(data, int64_t mint=INT64_MIN, int64_t maxt=INT64_MAX):
    """Decode chunk bytes into (timestamps int64 array, values float64 array), keeping mint <= t <= maxt.

    `data` is any contiguous bytes-like object. Raises ValueError if the chunk is truncated or corrupt.
    """
    cdef Py_buffer view
    if type(data) is bytes:
        # Chunks from the head and the block readers are bytes: no buffer request for them.
        return _decode_arrays(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), mint, maxt)
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _decode_arrays(<const uint8_t*>view.buf, view.len, mint, maxt)
    finally:
        PyBuffer_Release(&view)


cdef tuple _decode_arrays(const uint8_t* chunk, Py_ssize_t size, int64_t mint, int64_t maxt):
    cdef XORCursor cursor
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray timestamps, values
    cdef Py_ssize_t count
    _init_cursor_or_raise(&cursor, chunk, size)
    dims[0] = cursor.num_total
    timestamps = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    values = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
    count = _decode_range_with_gil(&cursor, mint, maxt, <int64_t*>cnp.PyArray_DATA(timestamps),
                                   <double*>cnp.PyArray_DATA(values), dims[0])
    if count < 0:
        raise ValueError("corrupt or truncated XOR chunk")
    if count < dims[0]:
        return timestamps[:count], values[:count]
    return timestamps, values


def decode_into(data, out_t, out_v, Py_ssize_t offset=0,
                int64_t mint=INT64_MIN, int64_t maxt=INT64_MAX):
    """Decode chunk bytes into out_t[offset:] / out_v[offset:] (int64 / float64, contiguous, writable).

    Keeps only samples with mint <= t <= maxt and returns how many were written. For callers that
    concatenate many chunks: size the outputs by the sum of num_samples() and advance offset by the
    returned count. Raises ValueError if the chunk is corrupt or the outputs are too short.
    """
    cdef Py_buffer view, t_view, v_view
    cdef Py_ssize_t count
    if _is_output_array(out_t, cnp.NPY_INT64) and _is_output_array(out_v, cnp.NPY_FLOAT64):
        if type(data) is bytes:
            return _decode_into_pointers(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data),
                                         <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>out_t),
                                         <double*>cnp.PyArray_DATA(<cnp.ndarray>out_v),
                                         min(cnp.PyArray_DIM(<cnp.ndarray>out_t, 0),
                                             cnp.PyArray_DIM(<cnp.ndarray>out_v, 0)),
                                         offset, mint, maxt)
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            count = _decode_into_pointers(<const uint8_t*>view.buf, view.len,
                                          <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>out_t),
                                          <double*>cnp.PyArray_DATA(<cnp.ndarray>out_v),
                                          min(cnp.PyArray_DIM(<cnp.ndarray>out_t, 0),
                                              cnp.PyArray_DIM(<cnp.ndarray>out_v, 0)),
                                          offset, mint, maxt)
        finally:
            PyBuffer_Release(&view)
        return count
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(out_t, &t_view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS)
        try:
            PyObject_GetBuffer(out_v, &v_view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS)
            try:
                _check_output(&t_view, (b"q", b"l"), "out_t")
                _check_output(&v_view, (b"d",), "out_v")
                count = _decode_into_pointers(<const uint8_t*>view.buf, view.len, <int64_t*>t_view.buf,
                                              <double*>v_view.buf, min(t_view.shape[0], v_view.shape[0]),
                                              offset, mint, maxt)
            finally:
                PyBuffer_Release(&v_view)
        finally:
            PyBuffer_Release(&t_view)
    finally:
        PyBuffer_Release(&view)
    return count


cdef Py_ssize_t _decode_into_pointers(const uint8_t* chunk, Py_ssize_t size, int64_t* out_t, double* out_v,
                                      Py_ssize_t length, Py_ssize_t offset, int64_t mint,
                                      int64_t maxt) except -1:
    cdef XORCursor cursor
    cdef Py_ssize_t count
    if offset < 0 or offset > length:
        raise ValueError(f"offset {offset} is outside the output arrays")
    _init_cursor_or_raise(&cursor, chunk, size)
    count = _decode_range_with_gil(&cursor, mint, maxt, out_t + offset, out_v + offset, length - offset)
    if count == XOR_OUT_OF_SPACE:
        raise ValueError("output arrays are too short for the chunk's samples")
    if count < 0:
        raise ValueError("corrupt or truncated XOR chunk")
    return count


cdef Py_ssize_t _decode_chunk_list(const uint8_t** starts, const Py_ssize_t* sizes, Py_ssize_t n,
                                   int64_t mint, int64_t maxt, int64_t* out_t, double* out_v,
                                   Py_ssize_t capacity, Py_ssize_t* filled) noexcept nogil:
    # The samples of n chunks one after the other; returns the index of a corrupt chunk, or -1.
    cdef XORCursor cursor
    cdef Py_ssize_t i, count
    for i in range(n):
        xor_cursor_init(&cursor, starts[i], sizes[i])
        count = xor_decode_range(&cursor, mint, maxt, out_t + filled[0], out_v + filled[0],
                                 capacity - filled[0])
        if count < 0:
            return i
        filled[0] += count
    return -1


def decode_chunks(chunks, int64_t mint=INT64_MIN, int64_t maxt=INT64_MAX):
    """Decode a series' chunks (a sequence of chunk bytes, in time order) into one pair of arrays.

    Returns (timestamps int64, values float64) with the samples mint <= t <= maxt of all chunks, one
    after the other. One call (and one GIL release, when there is enough to decode) for all chunks: the
    way to read many small chunks.
    Raises ValueError naming the first corrupt chunk.
    """
    cdef list owned = list(chunks)
    cdef Py_ssize_t n = len(owned), i, total = 0, filled = 0, failed = -1
    cdef const uint8_t** starts = NULL
    cdef Py_ssize_t* sizes = NULL
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray timestamps, values
    cdef int64_t* out_t
    cdef double* out_v
    starts = <const uint8_t**>malloc(max(n, 1) * sizeof(uint8_t*))
    sizes = <Py_ssize_t*>malloc(max(n, 1) * sizeof(Py_ssize_t))
    try:
        if starts == NULL or sizes == NULL:
            raise MemoryError()
        for i in range(n):
            if type(owned[i]) is not bytes:
                owned[i] = bytes(owned[i])
            starts[i] = <const uint8_t*>PyBytes_AS_STRING(owned[i])
            sizes[i] = PyBytes_GET_SIZE(owned[i])
            if sizes[i] < 2:
                raise ValueError(f"chunk {i}: {sizes[i]} bytes is shorter than the 2-byte header")
            total += (<Py_ssize_t>starts[i][0] << 8) | starts[i][1]
        dims[0] = total
        timestamps = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        values = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        out_t = <int64_t*>cnp.PyArray_DATA(timestamps)
        out_v = <double*>cnp.PyArray_DATA(values)
        if total < _GIL_RELEASE_MIN_SAMPLES:
            failed = _decode_chunk_list(starts, sizes, n, mint, maxt, out_t, out_v, total, &filled)
        else:
            with nogil:
                failed = _decode_chunk_list(starts, sizes, n, mint, maxt, out_t, out_v, total, &filled)
    finally:
        free(starts)
        free(sizes)
    if failed >= 0:
        raise ValueError(f"chunk {failed}: corrupt or truncated XOR chunk")
    if filled < total:
        return timestamps[:filled], values[:filled]
    return timestamps, values


cdef class XORIterator:
    """Iterates over (t, v) of chunk bytes, as Prometheus's xorIterator.

    Samples before a corrupt spot are yielded; reaching it raises ValueError.
    """
    cdef bytes data
    cdef XORCursor cursor
    cdef bint finished

    def __cinit__(self, data):
        # Own an immutable copy so that the cursor's pointer stays valid whatever the caller does.
        self.data = data if type(data) is bytes else bytes(data)
        _init_cursor_or_raise(&self.cursor, <const uint8_t*><char*>self.data, len(self.data))
        self.finished = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.finished:
            raise StopIteration
        status = xor_cursor_next(&self.cursor)
        if status == XOR_SAMPLE:
            return self.cursor.t, _float_from_bits(self.cursor.value_bits)
        self.finished = True
        if status == XOR_END:
            raise StopIteration
        raise ValueError(f"corrupt or truncated XOR chunk at sample {self.cursor.num_read}")


# ---------------------------------------------------------------------------------------------------
# Encoding


@cython.final
cdef class XORChunk:
    """An XOR chunk being appended to; bytes() is the exact chunk at any moment, open or closed.

    Appending follows Prometheus's xorAppender. Timestamps need not increase (the codec stores any
    int64 sequence); keeping them ordered is the caller's job, as in Prometheus's head.
    """

    def __cinit__(self):
        self.buf = NULL
        self.capacity = 0
        self._reserve(128)
        self.pending = 0
        self.pending_start = 16
        self.pending_bits = 0
        self.last_write_whole_bytes = False
        self.num = 0
        self.first_t = 0
        self.t = 0
        self.value_bits = 0
        self.t_delta = 0
        # 0xff: no leading/trailing-zero window yet, so the first value XOR always writes its own.
        self.leading = 0xFF
        self.trailing = 0

    def __dealloc__(self):
        free(self.buf)

    @staticmethod
    def from_bytes(data):
        """Reopen chunk bytes for appending, as Prometheus's XORChunk.Appender(): replay every sample.

        The appender resumes with the decoder's state, including its leading/trailing-zero window
        (0/0 when no value so far wrote one, where a fresh appender would have none), so appending to
        a reloaded chunk gives the same bytes as Prometheus does. Raises ValueError on corrupt bytes or
        on bytes after the last sample.
        """
        cdef XORChunk chunk = XORChunk()
        cdef Py_buffer view
        cdef XORCursor cursor
        cdef int status
        cdef uint64_t free_bits
        cdef int64_t unused_t
        cdef double unused_v
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            chunk._reserve(view.len + _APPEND_HEADROOM)
            memcpy(chunk.buf, view.buf, view.len)
            _init_cursor_or_raise(&cursor, chunk.buf, view.len)
        finally:
            PyBuffer_Release(&view)
        if cursor.num_total == 0:
            if cursor.stream_size != 0:
                raise ValueError("empty XOR chunk with bytes after its header")
            return chunk
        status = xor_cursor_next(&cursor)
        chunk.first_t = cursor.t
        # An empty time range: read the rest only for the final decoder state, keeping no sample.
        if status == XOR_SAMPLE:
            if xor_decode_range(&cursor, INT64_MAX, INT64_MIN, &unused_t, &unused_v, 0) == XOR_CORRUPT:
                status = XOR_CORRUPT
        if status == XOR_CORRUPT:
            raise ValueError(f"corrupt or truncated XOR chunk at sample {cursor.num_read}")
        free_bits = cursor.end - cursor.pos
        # Prometheus's stream ends with at most one byte that has free bits (all 8 of them after a
        # whole byte was written on a byte boundary); anything more is not an appendable chunk.
        if free_bits > 8:
            raise ValueError("XOR chunk has bytes after its last sample")
        chunk.pending_start = 16 + (cursor.pos & ~<uint64_t>7)
        chunk.pending_bits = cursor.pos & 7
        if chunk.pending_bits:
            # Keep the last byte's written bits; its padding bits will be overwritten.
            chunk.pending = <uint64_t>(chunk.buf[chunk.pending_start >> 3] >> (8 - chunk.pending_bits)) << (
                64 - chunk.pending_bits)
        chunk.last_write_whole_bytes = free_bits == 8
        chunk.num = cursor.num_total
        chunk.t = cursor.t
        chunk.value_bits = cursor.value_bits
        chunk.t_delta = cursor.t_delta
        chunk.leading = cursor.leading
        chunk.trailing = cursor.trailing
        return chunk

    cdef int _reserve(self, Py_ssize_t nbytes) except -1:
        cdef Py_ssize_t new_capacity
        cdef uint8_t* grown
        if nbytes <= self.capacity:
            return 0
        new_capacity = max(nbytes, 2 * self.capacity)
        grown = <uint8_t*>realloc(self.buf, new_capacity)
        if grown == NULL:
            raise MemoryError()
        memset(grown + self.capacity, 0, new_capacity - self.capacity)
        self.buf = grown
        self.capacity = new_capacity
        return 0

    cdef inline void _write_bits(self, uint64_t value, int nbits) noexcept nogil:
        # Writes the low nbits (1 to 64) bits of value. Whole 8-byte stores, never read back, keep
        # the CPU from stalling on overlapping unaligned read-modify-writes.
        cdef int free_bits = 64 - self.pending_bits
        cdef int rest
        if nbits < 64:
            value &= (<uint64_t>1 << nbits) - 1
        if nbits < free_bits:
            self.pending |= value << (free_bits - nbits)
            self.pending_bits += nbits
        else:
            rest = nbits - free_bits
            self.pending |= value >> rest
            store_be64(self.buf + (self.pending_start >> 3), self.pending)
            self.pending_start += 64
            self.pending = value << (64 - rest) if rest else 0
            self.pending_bits = rest
        # Prometheus's bstream writes whole bytes with writeByte, which on a byte boundary leaves an
        # empty byte at the end of the stream; bytes() has to reproduce that length.
        self.last_write_whole_bytes = (nbits & 7) == 0

    cdef inline void _write_value(self, uint64_t value_bits) noexcept nogil:
        cdef uint64_t delta = value_bits ^ self.value_bits
        cdef uint8_t leading, trailing
        cdef int significant
        if delta == 0:
            self._write_bits(0, 1)
            return
        leading = clz64(delta)
        trailing = ctz64(delta)
        # The leading-zero count has 5 bits; Prometheus clamps it to 31 rather than overflow.
        if leading >= 32:
            leading = 31
        if self.leading != 0xFF and leading >= self.leading and trailing >= self.trailing:
            self._write_bits(0b10, 2)
            self._write_bits(delta >> self.trailing, 64 - self.leading - self.trailing)
            return
        self.leading = leading
        self.trailing = trailing
        significant = 64 - leading - trailing
        # 64 significant bits are written as 0 in the 6-bit field; 0 never occurs since delta != 0.
        self._write_bits((<uint64_t>0b11 << 11) | (<uint64_t>leading << 6) | (significant & 0x3F), 13)
        self._write_bits(delta >> trailing, significant)

    cdef int _append(self, int64_t t, uint64_t value_bits) except -1:
        cdef uint8_t varint[10]
        cdef Py_ssize_t varint_size, i
        cdef uint64_t t_delta = 0
        cdef int64_t dod
        if self.num >= _MAX_SAMPLES:
            raise OverflowError(f"an XOR chunk holds at most {_MAX_SAMPLES} samples")
        self._reserve(<Py_ssize_t>(self.pending_start >> 3) + _APPEND_HEADROOM)
        if self.num == 0:
            varint_size = put_uvarint(varint, zigzag_encode(t))
            for i in range(varint_size):
                self._write_bits(varint[i], 8)
            self._write_bits(value_bits, 64)
            self.first_t = t
        elif self.num == 1:
            t_delta = <uint64_t>t - <uint64_t>self.t
            varint_size = put_uvarint(varint, t_delta)
            for i in range(varint_size):
                self._write_bits(varint[i], 8)
            self._write_value(value_bits)
        else:
            t_delta = <uint64_t>t - <uint64_t>self.t
            dod = <int64_t>(t_delta - self.t_delta)
            if dod == 0:
                self._write_bits(0, 1)
            elif -0x1FFF <= dod <= 0x2000:
                self._write_bits((<uint64_t>0b10 << 14) | (<uint64_t>dod & 0x3FFF), 16)
            elif -0xFFFF <= dod <= 0x10000:
                self._write_bits((<uint64_t>0b110 << 17) | (<uint64_t>dod & 0x1FFFF), 20)
            elif -0x7FFFF <= dod <= 0x80000:
                self._write_bits((<uint64_t>0b1110 << 20) | (<uint64_t>dod & 0xFFFFF), 24)
            else:
                self._write_bits(0b1111, 4)
                self._write_bits(<uint64_t>dod, 64)
            self._write_value(value_bits)
        self.t = t
        self.value_bits = value_bits
        self.t_delta = t_delta
        self.num += 1
        self.buf[0] = <uint8_t>(self.num >> 8)
        self.buf[1] = <uint8_t>(self.num & 0xFF)
        return 0

    cpdef append(self, int64_t t, double v):
        """Append one sample. Raises OverflowError once the chunk holds 65535 samples."""
        self._append(t, _bits_from_float(v))

    def append_many(self, const int64_t[:] ts, const double[:] vals):
        """Append ts[i], vals[i] for every i; nothing is appended if they would not all fit."""
        cdef Py_ssize_t i, n = ts.shape[0]
        if vals.shape[0] != n:
            raise ValueError(f"{n} timestamps but {vals.shape[0]} values")
        if self.num + n > _MAX_SAMPLES:
            raise OverflowError(f"an XOR chunk holds at most {_MAX_SAMPLES} samples")
        for i in range(n):
            self._append(ts[i], _bits_from_float(vals[i]))

    cdef uint64_t _nbits(self) noexcept nogil:
        return self.pending_start + <uint64_t>self.pending_bits

    cdef Py_ssize_t _length(self) noexcept nogil:
        cdef uint64_t nbits = self._nbits()
        cdef Py_ssize_t length = <Py_ssize_t>((nbits + 7) >> 3)
        if (nbits & 7) == 0 and self.last_write_whole_bytes:
            length += 1
        return length

    def bytes(self):
        """The chunk bytes as Prometheus's Bytes() would return them now."""
        # The pending word holds every byte past pending_start that the length can reach.
        store_be64(self.buf + (self.pending_start >> 3), self.pending)
        return PyBytes_FromStringAndSize(<char*>self.buf, self._length())

    @property
    def nbytes(self):
        """len(self.bytes()), without copying."""
        return self._length()

    @property
    def num_samples(self):
        return self.num

    @property
    def first_timestamp(self):
        """Timestamp of the first sample, or None while the chunk is empty."""
        return self.first_t if self.num else None

    @property
    def last_timestamp(self):
        """Timestamp of the last sample, or None while the chunk is empty."""
        return self.t if self.num else None

    @property
    def last_value(self):
        """Value of the last sample (bit for bit), or None while the chunk is empty."""
        return _float_from_bits(self.value_bits) if self.num else None

    def __iter__(self):
        return XORIterator(self.bytes())

    def __repr__(self):
        return f"XORChunk(num_samples={self.num}, nbytes={self._length()})"


def encode(ts, vals):
    """The chunk bytes holding samples (ts[i], vals[i]): int64 and float64 sequences of equal length."""
    cdef XORChunk chunk = XORChunk()
    chunk.append_many(np.ascontiguousarray(ts, dtype=np.int64), np.ascontiguousarray(vals, dtype=np.float64))
    return chunk.bytes()
