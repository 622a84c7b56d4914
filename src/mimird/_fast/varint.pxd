# Inline varint helpers shared by the Cython modules that read or write Prometheus's on-disk formats
# (index, chunks, WAL records) and protobuf wire data; the byte layout is drawn in docs/format/varint.md.
from libc.stdint cimport int64_t, uint8_t, uint64_t


cdef inline Py_ssize_t put_uvarint(uint8_t* out, uint64_t value) noexcept nogil:
    """Write `value` as an unsigned LEB128 varint at `out`; return the byte count (at most 10)."""
    cdef Py_ssize_t n = 0
    while value >= 0x80:
        out[n] = <uint8_t>((value & 0x7F) | 0x80)
        value >>= 7
        n += 1
    out[n] = <uint8_t>value
    return n + 1


cdef inline Py_ssize_t get_uvarint(const uint8_t* buf, Py_ssize_t size, uint64_t* value) noexcept nogil:
    """Read an unsigned varint from `buf`; return the byte count, or -1 if truncated or over 64 bits."""
    cdef uint64_t result = 0
    cdef unsigned int shift = 0
    cdef Py_ssize_t i = 0
    cdef uint8_t b
    while i < size:
        b = buf[i]
        if i == 9 and b > 1:
            return -1
        result |= (<uint64_t>(b & 0x7F)) << shift
        i += 1
        if b < 0x80:
            value[0] = result
            return i
        shift += 7
    return -1


cdef inline Py_ssize_t read_uvarint_at(const uint8_t* data, Py_ssize_t pos, Py_ssize_t end,
                                       uint64_t* value) noexcept nogil:
    """Read the varint at data[pos:end]; return the position after it, or -1 if truncated or over 64 bits."""
    cdef Py_ssize_t n
    if pos >= end:
        return -1
    n = get_uvarint(data + pos, end - pos, value)
    if n < 0:
        return -1
    return pos + n


cdef inline uint64_t zigzag_encode(int64_t value) noexcept nogil:
    return (<uint64_t>value << 1) ^ <uint64_t>(value >> 63)


cdef inline int64_t zigzag_decode(uint64_t value) noexcept nogil:
    return <int64_t>(value >> 1) ^ -(<int64_t>(value & 1))
