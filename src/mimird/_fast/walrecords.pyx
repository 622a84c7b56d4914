"""WAL record codecs and page framing, in Prometheus's byte layout (docs/format/wal.md).

This module owns the bytes of the write-ahead log: the record encoders and decoders (series, samples,
exemplars, metadata as Prometheus's tsdb/record writes them), the framing of records into 32 KiB pages
of checksummed fragments (tsdb/wlog), and the reader that reassembles fragments and classifies what
stops it: a clean end, a torn tail, or corruption. Sample records go from numpy arrays to bytes and
back without a Python object per sample. The file handling around it is mimird.tsdb.wal.
"""
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

from mimird._fast.crc32c cimport crc32c_update
from mimird._fast.varint cimport get_uvarint, put_uvarint, zigzag_decode, zigzag_encode

import sys

import numpy as np

PAGE_SIZE = 32 * 1024
"""Segments are written in pages of this size; fragments never cross a page boundary."""
HEADER_SIZE = 7
"""Fragment header: type byte, 2-byte big-endian length, 4-byte big-endian CRC-32C of the data."""

RECORD_SERIES = 1
RECORD_SAMPLES = 2
RECORD_TOMBSTONES = 3
RECORD_EXEMPLARS = 4
RECORD_METADATA = 6

READ_OK = 0
"""read_record found a whole record."""
READ_END = 1
"""read_record reached the end of the data between records."""
READ_TORN = 2
"""The data ends inside a fragment or between the fragments of one record: a write cut short."""
READ_CORRUPT = 3
"""Bytes that no writer produces: a checksum mismatch, a bad type or length, garbage in padding."""

cdef enum:
    _PAGE = 32 * 1024
    _HEADER = 7
    _PAGE_TERM = 0
    _FULL = 1
    _FIRST = 2
    _MIDDLE = 3
    _LAST = 4
    # Prometheus's compression flags in the fragment type byte (snappy 1<<3, zstd 1<<4).
    _TYPE_MASK = 7
    _SAMPLES = 2
    _SNAPPY = 8

_intern = sys.intern


# ---------------------------------------------------------------------------------------------------
# A growable byte buffer for the encoders.

cdef struct Buffer:
    uint8_t* data
    Py_ssize_t size
    Py_ssize_t capacity


cdef int _reserve(Buffer* buf, Py_ssize_t extra) except -1:
    cdef Py_ssize_t needed = buf.size + extra
    cdef Py_ssize_t capacity = buf.capacity if buf.capacity else 256
    cdef uint8_t* grown
    if needed <= buf.capacity:
        return 0
    while capacity < needed:
        capacity *= 2
    grown = <uint8_t*>realloc(buf.data, capacity)
    if grown == NULL:
        raise MemoryError()
    buf.data = grown
    buf.capacity = capacity
    return 0


cdef inline void _put_be64(uint8_t* out, uint64_t value) noexcept nogil:
    cdef int i
    for i in range(8):
        out[i] = <uint8_t>(value >> (56 - 8 * i))


cdef inline uint64_t _get_be64(const uint8_t* data) noexcept nogil:
    cdef uint64_t value = 0
    cdef int i
    for i in range(8):
        value = (value << 8) | data[i]
    return value


cdef inline uint64_t _double_bits(double value) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits


cdef inline double _bits_double(uint64_t bits) noexcept nogil:
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef int _put_byte(Buffer* buf, uint8_t value) except -1:
    _reserve(buf, 1)
    buf.data[buf.size] = value
    buf.size += 1
    return 0


cdef int _put_uvarint(Buffer* buf, uint64_t value) except -1:
    _reserve(buf, 10)
    buf.size += put_uvarint(buf.data + buf.size, value)
    return 0


cdef int _put_varint(Buffer* buf, int64_t value) except -1:
    return _put_uvarint(buf, zigzag_encode(value))


cdef int _put_be64_buf(Buffer* buf, uint64_t value) except -1:
    _reserve(buf, 8)
    _put_be64(buf.data + buf.size, value)
    buf.size += 8
    return 0


cdef int _put_string(Buffer* buf, str text) except -1:
    cdef Py_ssize_t length
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(text, &length)
    _put_uvarint(buf, <uint64_t>length)
    _reserve(buf, length)
    memcpy(buf.data + buf.size, utf8, length)
    buf.size += length
    return 0


cdef int _put_labels(Buffer* buf, labels) except -1:
    _put_uvarint(buf, <uint64_t>len(labels))
    for name, value in labels:
        _put_string(buf, name)
        _put_string(buf, value)
    return 0


cdef bytes _finish(Buffer* buf):
    return PyBytes_FromStringAndSize(<char*>buf.data, buf.size)


# ---------------------------------------------------------------------------------------------------
# Decoding helpers: a cursor over a record that raises ValueError when the record ends early.

cdef struct Cursor:
    const uint8_t* data
    Py_ssize_t size
    Py_ssize_t pos


cdef uint64_t _get_uvarint(Cursor* cur) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t value
    cdef Py_ssize_t n = get_uvarint(cur.data + cur.pos, cur.size - cur.pos, &value)
    if n < 0:
        raise ValueError(f"bad or truncated varint at byte {cur.pos}")
    cur.pos += n
    return value


cdef uint64_t _get_be64_cur(Cursor* cur) except? 0xFFFFFFFFFFFFFFFF:
    if cur.size - cur.pos < 8:
        raise ValueError(f"truncated 8-byte field at byte {cur.pos}")
    cur.pos += 8
    return _get_be64(cur.data + cur.pos - 8)


cdef uint8_t _get_byte(Cursor* cur) except? 0xFF:
    if cur.pos >= cur.size:
        raise ValueError(f"truncated record at byte {cur.pos}")
    cur.pos += 1
    return cur.data[cur.pos - 1]


cdef str _get_string(Cursor* cur):
    cdef uint64_t length = _get_uvarint(cur)
    cdef str text
    if length > <uint64_t>(cur.size - cur.pos):
        raise ValueError(f"string of {length} bytes overruns the record at byte {cur.pos}")
    text = PyUnicode_DecodeUTF8(<char*>cur.data + cur.pos, <Py_ssize_t>length, "strict")
    cur.pos += <Py_ssize_t>length
    return text


cdef tuple _get_labels(Cursor* cur):
    cdef uint64_t count = _get_uvarint(cur)
    cdef uint64_t i
    # Each label takes at least two bytes, which bounds a corrupt count before allocating.
    if count > <uint64_t>(cur.size - cur.pos) // 2:
        raise ValueError(f"label count {count} overruns the record")
    labels = []
    for i in range(count):
        name = _intern(_get_string(cur))
        value = _intern(_get_string(cur))
        labels.append((name, value))
    return tuple(labels)


cdef int _start(Cursor* cur, const uint8_t[::1] record, uint8_t record_type) except -1:
    cur.size = record.shape[0]
    cur.pos = 1
    if cur.size == 0 or record[0] != record_type:
        raise ValueError(f"not a record of type {record_type}")
    cur.data = &record[0]
    return 0


# ---------------------------------------------------------------------------------------------------
# Records.

def encode_series(series):
    """Series record (type 1): per series a big-endian 8-byte ref and its labels."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    try:
        _put_byte(&buf, RECORD_SERIES)
        for ref, labels in series:
            _put_be64_buf(&buf, <uint64_t>ref)
            _put_labels(&buf, labels)
        return _finish(&buf)
    finally:
        free(buf.data)


def decode_series(const uint8_t[::1] record not None):
    """The (ref, labels) pairs of a series record; labels are tuples of interned (name, value)."""
    cdef Cursor cur
    _start(&cur, record, RECORD_SERIES)
    series = []
    while cur.pos < cur.size:
        ref = _get_be64_cur(&cur)
        series.append((ref, _get_labels(&cur)))
    return series


cdef Py_ssize_t _encode_samples(const uint64_t[::1] refs, const int64_t[::1] timestamps,
                                const double[::1] values, uint8_t* out) noexcept nogil:
    cdef Py_ssize_t n = refs.shape[0]
    cdef Py_ssize_t i, pos = 17
    cdef uint64_t base_ref = refs[0]
    cdef uint64_t base_time = <uint64_t>timestamps[0]
    out[0] = _SAMPLES
    _put_be64(out + 1, base_ref)
    _put_be64(out + 9, base_time)
    for i in range(n):
        # Deltas to the first sample, wrapping as Go's int64 arithmetic does.
        pos += put_uvarint(out + pos, zigzag_encode(<int64_t>(refs[i] - base_ref)))
        pos += put_uvarint(out + pos, zigzag_encode(<int64_t>(<uint64_t>timestamps[i] - base_time)))
        _put_be64(out + pos, _double_bits(values[i]))
        pos += 8
    return pos


def encode_samples(const uint64_t[::1] refs not None, const int64_t[::1] timestamps not None,
                   const double[::1] values not None):
    """Samples record (type 2): first ref and timestamp, then per sample zig-zag varint deltas to them
    and the value's 8 bytes, all big-endian as Prometheus writes them."""
    cdef Py_ssize_t n = refs.shape[0]
    cdef Buffer buf = Buffer(NULL, 0, 0)
    if timestamps.shape[0] != n or values.shape[0] != n:
        raise ValueError("refs, timestamps and values must have the same length")
    if n == 0:
        return bytes([RECORD_SAMPLES])
    try:
        _reserve(&buf, 17 + n * 28)
        with nogil:
            buf.size = _encode_samples(refs, timestamps, values, buf.data)
        return _finish(&buf)
    finally:
        free(buf.data)


cdef Py_ssize_t _decode_samples(const uint8_t* data, Py_ssize_t size, uint64_t[::1] refs,
                                int64_t[::1] timestamps, double[::1] values) noexcept nogil:
    """Decode the samples after the 17-byte head; the count, or -1 on a malformed record."""
    cdef uint64_t base_ref = _get_be64(data + 1)
    cdef uint64_t base_time = _get_be64(data + 9)
    cdef Py_ssize_t pos = 17, i = 0, n
    cdef uint64_t ref_delta, time_delta
    while pos < size:
        n = get_uvarint(data + pos, size - pos, &ref_delta)
        if n < 0:
            return -1
        pos += n
        n = get_uvarint(data + pos, size - pos, &time_delta)
        if n < 0 or size - pos - n < 8:
            return -1
        pos += n
        refs[i] = base_ref + <uint64_t>zigzag_decode(ref_delta)
        timestamps[i] = <int64_t>(base_time + <uint64_t>zigzag_decode(time_delta))
        values[i] = _bits_double(_get_be64(data + pos))
        pos += 8
        i += 1
    return i


def decode_samples(const uint8_t[::1] record not None):
    """(refs uint64, timestamps int64, values float64) arrays of a samples record."""
    cdef Py_ssize_t size = record.shape[0]
    cdef Py_ssize_t capacity, count
    if size == 0 or record[0] != RECORD_SAMPLES:
        raise ValueError(f"not a record of type {RECORD_SAMPLES}")
    if size == 1:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.float64)
    if size < 17:
        raise ValueError("truncated samples record head")
    # A sample takes at least 10 bytes (two 1-byte varints and the value).
    capacity = (size - 17) // 10
    refs = np.empty(capacity, np.uint64)
    timestamps = np.empty(capacity, np.int64)
    values = np.empty(capacity, np.float64)
    cdef uint64_t[::1] refs_view = refs
    cdef int64_t[::1] timestamps_view = timestamps
    cdef double[::1] values_view = values
    with nogil:
        count = _decode_samples(&record[0], size, refs_view, timestamps_view, values_view)
    if count < 0:
        raise ValueError("malformed samples record")
    if count == capacity:
        return refs, timestamps, values
    return refs[:count].copy(), timestamps[:count].copy(), values[:count].copy()


def encode_exemplars(exemplars):
    """Exemplars record (type 4): like samples (deltas to the first), each followed by its labels."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    cdef uint64_t base_ref, ref
    cdef int64_t base_time, timestamp
    try:
        _put_byte(&buf, RECORD_EXEMPLARS)
        if exemplars:
            base_ref = <uint64_t>exemplars[0][0]
            base_time = <int64_t>exemplars[0][1]
            _put_be64_buf(&buf, base_ref)
            _put_be64_buf(&buf, <uint64_t>base_time)
            for ref, timestamp, value, labels in exemplars:
                _put_varint(&buf, <int64_t>(ref - base_ref))
                _put_varint(&buf, <int64_t>(<uint64_t>timestamp - <uint64_t>base_time))
                _put_be64_buf(&buf, _double_bits(value))
                _put_labels(&buf, labels)
        return _finish(&buf)
    finally:
        free(buf.data)


def decode_exemplars(const uint8_t[::1] record not None):
    """The (ref, timestamp, value, labels) tuples of an exemplars record."""
    cdef Cursor cur
    cdef uint64_t base_ref, base_time
    _start(&cur, record, RECORD_EXEMPLARS)
    exemplars = []
    if cur.pos == cur.size:
        return exemplars
    base_ref = _get_be64_cur(&cur)
    base_time = _get_be64_cur(&cur)
    while cur.pos < cur.size:
        ref = base_ref + <uint64_t>zigzag_decode(_get_uvarint(&cur))
        timestamp = <int64_t>(base_time + <uint64_t>zigzag_decode(_get_uvarint(&cur)))
        value = _bits_double(_get_be64_cur(&cur))
        exemplars.append((ref, timestamp, value, _get_labels(&cur)))
    return exemplars


def encode_metadata(metadata):
    """Metadata record (type 6): per series uvarint ref, type byte and the fields UNIT and HELP."""
    cdef Buffer buf = Buffer(NULL, 0, 0)
    try:
        _put_byte(&buf, RECORD_METADATA)
        for ref, metric_type, unit, help_text in metadata:
            _put_uvarint(&buf, <uint64_t>ref)
            _put_byte(&buf, <uint8_t>metric_type)
            _put_uvarint(&buf, 2)
            _put_string(&buf, "UNIT")
            _put_string(&buf, unit)
            _put_string(&buf, "HELP")
            _put_string(&buf, help_text)
        return _finish(&buf)
    finally:
        free(buf.data)


def decode_metadata(const uint8_t[::1] record not None):
    """The (ref, type, unit, help) tuples of a metadata record; unknown fields are skipped."""
    cdef Cursor cur
    cdef uint64_t field_count, i
    _start(&cur, record, RECORD_METADATA)
    metadata = []
    while cur.pos < cur.size:
        ref = _get_uvarint(&cur)
        metric_type = _get_byte(&cur)
        field_count = _get_uvarint(&cur)
        unit = help_text = ""
        for i in range(field_count):
            name = _get_string(&cur)
            value = _get_string(&cur)
            if name == "UNIT":
                unit = value
            elif name == "HELP":
                help_text = value
        metadata.append((ref, metric_type, unit, help_text))
    return metadata


# ---------------------------------------------------------------------------------------------------
# Page framing.

cdef Py_ssize_t _framed_size(Py_ssize_t length, Py_ssize_t page_used, Py_ssize_t* page_after) noexcept nogil:
    """Bytes that framing a record of `length` adds when the page already holds `page_used` bytes."""
    cdef Py_ssize_t total = 0, part
    cdef bint first = True
    while first or length > 0:
        first = False
        if _PAGE - page_used < _HEADER:
            total += _PAGE - page_used
            page_used = 0
        part = _PAGE - page_used - _HEADER
        if part > length:
            part = length
        total += _HEADER + part
        page_used += _HEADER + part
        length -= part
    page_after[0] = page_used
    return total


cdef Py_ssize_t _frame(const uint8_t* record, Py_ssize_t length, Py_ssize_t page_used,
                       uint8_t* out, uint8_t flags) noexcept nogil:
    """Write the fragments of one record at `out`; return the page offset after them."""
    cdef Py_ssize_t pos = 0, part, i
    cdef bint first = True
    cdef uint8_t fragment_type
    cdef uint32_t crc
    while first or length > 0:
        if _PAGE - page_used < _HEADER:
            # Too little room for a header: zero the rest of the page (a reader skips zeros).
            for i in range(_PAGE - page_used):
                out[pos + i] = 0
            pos += _PAGE - page_used
            page_used = 0
        part = _PAGE - page_used - _HEADER
        if part > length:
            part = length
        if first and part == length:
            fragment_type = _FULL
        elif part == length:
            fragment_type = _LAST
        elif first:
            fragment_type = _FIRST
        else:
            fragment_type = _MIDDLE
        first = False
        crc = crc32c_update(0, record, part)
        out[pos] = fragment_type | flags
        out[pos + 1] = <uint8_t>(part >> 8)
        out[pos + 2] = <uint8_t>part
        out[pos + 3] = <uint8_t>(crc >> 24)
        out[pos + 4] = <uint8_t>(crc >> 16)
        out[pos + 5] = <uint8_t>(crc >> 8)
        out[pos + 6] = <uint8_t>crc
        memcpy(out + pos + _HEADER, record, part)
        pos += _HEADER + part
        page_used += _HEADER + part
        record += part
        length -= part
    return page_used


def frame_records(bytearray out not None, records, Py_ssize_t page_used, snappy_flags=None):
    """Append each record of `records` to `out` as page fragments, the first starting `page_used`
    bytes into a page; return the page offset after the last fragment (0 < offset <= PAGE_SIZE).

    `snappy_flags`, if given, says per record whether it is snappy-compressed (Prometheus's flag bit
    is then set in each of its fragments' type byte)."""
    cdef const uint8_t[::1] record
    cdef Py_ssize_t start, added, page_after, length, index = 0
    cdef uint8_t* target
    cdef uint8_t flags
    if page_used < 0 or page_used > _PAGE:
        raise ValueError(f"page offset {page_used} out of range")
    for item in records:
        flags = _SNAPPY if snappy_flags is not None and snappy_flags[index] else 0
        index += 1
        record = item
        length = record.shape[0]
        if length == 0:
            raise ValueError("a WAL record is never empty")
        added = _framed_size(length, page_used, &page_after)
        start = PyByteArray_GET_SIZE(out)
        PyByteArray_Resize(out, start + added)
        target = <uint8_t*>PyByteArray_AS_STRING(out) + start
        with nogil:
            page_used = _frame(&record[0], length, page_used, target, flags)
    return page_used


def framed_size(Py_ssize_t length, Py_ssize_t page_used):
    """(bytes added, page offset after) for framing one record of `length` bytes at `page_used`."""
    cdef Py_ssize_t page_after
    cdef Py_ssize_t added = _framed_size(length, page_used, &page_after)
    return added, page_after


# ---------------------------------------------------------------------------------------------------
# Reading.

cdef inline bint _zeros(const uint8_t* data, Py_ssize_t start, Py_ssize_t end) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(start, end):
        if data[i] != 0:
            return False
    return True


def read_record(const uint8_t[::1] data, Py_ssize_t pos):
    """Read the record whose first fragment is at or after `pos` in a segment's bytes.

    Returns (status, record_start, next_pos, record, message): status is READ_OK with the record's
    bytes (message "snappy" when Prometheus compressed them with snappy: the caller decompresses), READ_END
    at the end of the data, or READ_TORN / READ_CORRUPT with a message; record_start
    is where the record (or the problem's record) begins, the offset to truncate at. A short final
    page reads as if padded with zeros, as Prometheus's reader does.
    """
    cdef Py_ssize_t size = data.shape[0]
    cdef Py_ssize_t record_start = -1, page_end, length, fragment_count = 0
    cdef const uint8_t* base
    cdef uint8_t header, fragment_type
    cdef uint32_t expected_crc, actual_crc
    cdef Buffer joined = Buffer(NULL, 0, 0)
    cdef Py_ssize_t single_start = -1, single_length = 0
    cdef bint snappy = False
    if size == 0 or pos >= size:
        return READ_END, pos, pos, None, None
    base = &data[0]
    try:
        while True:
            if pos >= size:
                if record_start >= 0:
                    return READ_TORN, record_start, pos, None, "segment ends inside a record"
                return READ_END, pos, pos, None, None
            page_end = pos - pos % _PAGE + _PAGE
            if page_end - pos < _HEADER:
                if not _zeros(base, pos, min(page_end, size)):
                    return (READ_CORRUPT, record_start if record_start >= 0 else pos, pos, None,
                            "non-zero byte in page padding")
                pos = page_end
                continue
            header = base[pos]
            if header == _PAGE_TERM:
                if not _zeros(base, pos, min(page_end, size)):
                    return (READ_CORRUPT, record_start if record_start >= 0 else pos, pos, None,
                            "non-zero byte in page padding")
                pos = page_end
                continue
            if record_start < 0:
                record_start = pos
            if size - pos < _HEADER:
                return READ_TORN, record_start, pos, None, "segment ends inside a fragment header"
            fragment_type = header & _TYPE_MASK
            if header & ~(_TYPE_MASK | _SNAPPY):
                return READ_CORRUPT, record_start, pos, None, f"unsupported fragment flags 0x{header:02x}"
            if fragment_count == 0:
                snappy = (header & _SNAPPY) != 0
            if fragment_type > _LAST:
                return READ_CORRUPT, record_start, pos, None, f"invalid fragment type {fragment_type}"
            length = (<Py_ssize_t>base[pos + 1] << 8) | base[pos + 2]
            if pos + _HEADER + length > page_end:
                return READ_CORRUPT, record_start, pos, None, f"fragment of {length} bytes crosses a page"
            if size - pos - _HEADER < length:
                return READ_TORN, record_start, pos, None, "segment ends inside a fragment"
            expected_crc = ((<uint32_t>base[pos + 3] << 24) | (<uint32_t>base[pos + 4] << 16)
                            | (<uint32_t>base[pos + 5] << 8) | base[pos + 6])
            with nogil:
                actual_crc = crc32c_update(0, base + pos + _HEADER, length)
            if actual_crc != expected_crc:
                return (READ_CORRUPT, record_start, pos, None,
                        f"checksum mismatch: got {actual_crc:08x}, want {expected_crc:08x}")
            if fragment_count == 0 and fragment_type not in (_FULL, _FIRST):
                return READ_CORRUPT, record_start, pos, None, f"record starts with fragment type {fragment_type}"
            if fragment_count > 0 and fragment_type not in (_MIDDLE, _LAST):
                return READ_CORRUPT, record_start, pos, None, f"record continues with fragment type {fragment_type}"
            if fragment_type == _FULL:
                single_start, single_length = pos + _HEADER, length
            else:
                _reserve(&joined, length)
                memcpy(joined.data + joined.size, base + pos + _HEADER, length)
                joined.size += length
            fragment_count += 1
            pos += _HEADER + length
            if fragment_type == _FULL:
                if single_length == 0:
                    return READ_CORRUPT, record_start, pos, None, "empty record"
                return (READ_OK, record_start, pos,
                        PyBytes_FromStringAndSize(<char*>base + single_start, single_length),
                        "snappy" if snappy else None)
            if fragment_type == _LAST:
                if joined.size == 0:
                    return READ_CORRUPT, record_start, pos, None, "empty record"
                return READ_OK, record_start, pos, _finish(&joined), "snappy" if snappy else None
    finally:
        free(joined.data)
